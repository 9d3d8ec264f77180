"""CPU time of the crossbar simulator's native stages, one thread: an S4D stage (per token and
sample) and a mixing stage (per token row) of a model, with sim.c now and as of git revision
--baseline, alternately on the same device instance and inputs.

    python benchmarks/bench_crossbar_stages.py --config configs/smnist_crossbar_arrays.toml --task smnist \
        --samples 16 --baseline 600a301
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--baseline", required=True, metavar="REF")
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    import edgessm as es
    from edgessm.data import load_task
    from edgessm.targets.crossbar import simlib
    from edgessm.train.config import load_config
    from bench_crossbar_sim import _baseline_lib
    test = load_task(a.task, "test", limit=a.samples)
    calib = load_task(a.task, "train", limit=64).x
    cfg = load_config(a.config)
    torch.manual_seed(0)
    model = es.SequenceModel(cfg.model_config(test.x.shape[-1], int(load_task(a.task, "train").y.max()) + 1))
    prog = es.targets.get("crossbar").compile(model, calibration=calib, seed=0)
    prog._compact()
    H, K = model.config.d_model, model.config.d_state + 1
    n, L = a.samples, test.x.shape[1]
    st, lin = prog.stages["s4d1"], prog.stages["mixing1"]
    g = torch.Generator().manual_seed(0)
    vu = prog._dac(torch.randn(n, L, H, generator=g) * 0.5, 1.0)
    xl = prog._dac(torch.relu(torch.randn(n * L, lin.n_in, generator=g)), 1.0)
    libs = {"now": simlib._LIB, a.baseline: _baseline_lib(a.baseline, simlib)}
    res = {k: {"s4d_us_per_token_sample": [], "mixing_us_per_row": []} for k in libs}
    try:
        for _ in range(a.repeats):
            for k, lib in libs.items():
                simlib._LIB = lib
                t = time.thread_time()
                simlib.run_s4d(st, prog.config, vu, prog.scales["s4d1"], K, 1, 0)
                res[k]["s4d_us_per_token_sample"].append((time.thread_time() - t) / (n * L) * 1e6)
                t = time.thread_time()
                simlib.run_stage(lin, prog.config, xl, 1, 0)
                res[k]["mixing_us_per_row"].append((time.thread_time() - t) / (n * L) * 1e6)
    finally:
        simlib._LIB = libs["now"]
    out = {k: {m: round(min(v), 2) for m, v in r.items()} for k, r in res.items()}
    print(json.dumps({"bench": "crossbar_stages", "config": a.config, "samples": n, "length": L,
                      "s4d_arrays": list(st.c_q.shape), "mixing_arrays": list(lin.c_q.shape),
                      "cpu_us": out,
                      "command": "python benchmarks/bench_crossbar_stages.py " + " ".join(
                          argv if argv is not None else sys.argv[1:])}))


if __name__ == "__main__":
    sys.exit(main())
