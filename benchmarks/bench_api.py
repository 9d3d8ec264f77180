"""Cost of the public streaming API above the bare kernel step, per call of one token.

    python benchmarks/bench_api.py [smnist|standard] [--repeats 15]

Interleaved in one process: ``FastProgram.step_numpy`` (the bare step, into a preallocated
output), ``StreamPool.push(sid, x)`` with one token, ``push_many({sid: x})`` with one stream,
``push`` of 100 tokens (per token) and, at 16 streams, ``step_numpy`` against ``push_many``.
Times are per-thread CPU time (``time.thread_time``), medians over repeats, which a busy
machine inflates less than wall time. Runs against any source tree (public API only), so it
also measures earlier versions: ``PYTHONPATH=OTHER/src python benchmarks/bench_api.py``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

import edgessm as es
from edgessm.targets.cpu.engine import FastProgram


def per_call(fns: dict, n: dict, repeats: int) -> dict:
    res = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.thread_time()
            for _ in range(n[k]):
                f()
            res[k].append((time.thread_time() - t0) / n[k] * 1e6)
    return {k: statistics.median(v) for k, v in res.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default="smnist")
    ap.add_argument("--repeats", type=int, default=15)
    a = ap.parse_args()
    net = es.load(a.model) if a.model != "standard" else es.SequenceModel.from_preset(
        "standard", d_input=1, d_output=10, d_model=128, d_state=64, n_layers=4)
    p = FastProgram(net)
    pool = es.StreamPool(p, capacity=1)
    sid = pool.open()
    st = p.init_state(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, p.d_input)).astype(np.float32)
    x0, x100 = x[0], np.repeat(x, 100, 0)
    o = np.empty((1, p.d_output), np.float32)
    B = 16
    poolB = es.StreamPool(p, capacity=B)
    ids = [poolB.open() for _ in range(B)]
    stB = p.init_state(B)
    xB = rng.standard_normal((B, p.d_input)).astype(np.float32)
    oB = np.empty((B, p.d_output), np.float32)
    tokB = {sid_: xB[j] for j, sid_ in enumerate(ids)}
    fns = {"step_numpy": lambda: p.step_numpy(x, st, o), "push": lambda: pool.push(sid, x),
           "push_many": lambda: pool.push_many({sid: x0}), "push_100": lambda: pool.push(sid, x100),
           "step_numpy_16": lambda: p.step_numpy(xB, stB, oB), "push_many_16": lambda: poolB.push_many(tokB)}
    n = {"step_numpy": 2000, "push": 2000, "push_many": 2000, "push_100": 20, "step_numpy_16": 300,
         "push_many_16": 300}
    m = per_call(fns, n, a.repeats)
    print(json.dumps({"model": a.model, "us_per_call": {k: round(v, 3) for k, v in m.items()},
                      "push_over_step_us": round(m["push"] - m["step_numpy"], 3),
                      "push_many_over_step_us": round(m["push_many"] - m["step_numpy"], 3),
                      "push_100_us_per_token": round(m["push_100"] / 100, 3),
                      "push_many_16_over_step_16_us": round(m["push_many_16"] - m["step_numpy_16"], 3)}))


if __name__ == "__main__":
    main()
