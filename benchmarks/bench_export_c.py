"""C export for microcontrollers: the shipped `smnist` model, PTQ (loihi2, 512 calibration
samples), exported as C99, compiled with the system cc (-std=c99 -Wall -Wextra -pedantic
-Werror -O2) and checked bit for bit against the integer engine on the first --verify test
sequences; sizes (const data, state per stream, host .text) and the C step time per token on
this CPU, next to the numpy integer engine at batch 1. Prints JSON lines.

    PYTHONPATH=src python benchmarks/bench_export_c.py [--model smnist] [--specs loihi2,w4,ternary]
        [--verify 20] [--calibrate 512] [--out /tmp/bench_export_c] [--record]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import append_results, emit

import edgessm as es
from edgessm.data import load_task
from edgessm.export import export_c
from edgessm.quant import quantize
from edgessm.quant.fixedpoint import quantize_input_np
from edgessm.targets.fixed.engine import Engine


def engine_us_per_token(net, X, tokens: int) -> float:
    """The numpy integer engine, one stream (batch 1), per token."""
    eng = Engine(net)
    xm, _ = quantize_input_np(X[:1].numpy(), net.in_exp, net.in_bits)
    st = eng.init_state(1)
    L = min(tokens, xm.shape[1])
    t0 = time.perf_counter()
    for t in range(L):
        _, st = eng.step_int(np.ascontiguousarray(xm[:, t]), st)
    return 1e6 * (time.perf_counter() - t0) / L


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smnist")
    ap.add_argument("--task", default="smnist")
    ap.add_argument("--specs", default="loihi2", help="comma-separated PTQ specs")
    ap.add_argument("--verify", type=int, default=20, help="test sequences compared bit for bit")
    ap.add_argument("--calibrate", type=int, default=512)
    ap.add_argument("--engine-tokens", type=int, default=200, help="tokens timed on the numpy engine")
    ap.add_argument("--out", help="export directory (default: a temporary one)")
    ap.add_argument("--record", action="store_true", help="append a table to benchmarks/RESULTS.md")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = es.load(a.model)
    cal = load_task(a.task, "train", limit=a.calibrate).x
    te = load_task(a.task, "test", limit=a.verify)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_export_c-") as tmp:
        for spec in [s for s in a.specs.split(",") if s]:
            q = quantize(model, spec, calibration=cal, n=a.calibrate)
            out = Path(a.out or tmp) / spec
            t0 = time.time()
            r = export_c(q, out, name=f"{a.model}_{spec}", verify=te.x, source=a.model)
            rec = {"bench": "export_c", "model": a.model, "task": a.task, "spec": spec,
                   "calibrate": a.calibrate, "n": r["n"], "length": r["length"],
                   "verified": r["verified"], "mismatches": r["mismatches"], "compared": r["compared"],
                   "overflows": r["overflows"], "data_bytes": r["data_bytes"], "state_bytes": r["state_bytes"],
                   "scratch_bytes": r["scratch_bytes"], "code_bytes": r["code_bytes"],
                   "host_text_bytes": r["host_text_bytes"], "c_us_per_token": r["c_us_per_token"],
                   "c_wall_us_per_token": r["c_wall_us_per_token"],
                   "engine_us_per_token": engine_us_per_token(q.integer_network(), te.x, a.engine_tokens),
                   "compiler": r["compiler"], "cflags": r["cflags"], "wall_s": time.time() - t0}
            emit(rec)
            rows.append(rec)
    if a.record:
        table = ["| model | spec | verified (mismatches / compared) | const data | state / stream | "
                 "host .text | C us/token | numpy engine us/token (batch 1) |",
                 "|---|---|---|---|---|---|---|---|"]
        table += [f"| {r['model']} | {r['spec']} | {r['verified']} ({r['mismatches']} / {r['compared']}) | "
                  f"{r['data_bytes']} B | {r['state_bytes']} B | {r['host_text_bytes']} B | "
                  f"{r['c_us_per_token']:.1f} | {r['engine_us_per_token']:.0f} |" for r in rows]
        append_results("C export (edgessm export-c), bit-exact check and step time", table,
                       notes=f"{rows[0]['n'] if rows else 0} test sequences of {a.task}; "
                             f"compiled with {rows[0]['compiler'] if rows else '?'} "
                             f"{rows[0]['cflags'] if rows else ''}; C time = process CPU time per token.")


if __name__ == "__main__":
    main()
