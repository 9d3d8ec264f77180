"""Evaluating a quantized model's integer network: the model's own forward (torch int64 ops,
token by token) against the integer engine's C backend that ``train.evaluate`` uses for large
evaluations (``loop.ENGINE_MIN_TOKENS``). The same accuracy and loss are asserted.

    python benchmarks/bench_int_eval.py MODEL [--task psmnist] [--n 64] [--threads 1] [--spec loihi2]
                                        [--fresh-cache]

MODEL: a float checkpoint (quantized here, PTQ calibrated on 256 training samples) or a
quantized one. Prints seconds per evaluation of `n` test samples, each way, and the ratio, and
the engine's first evaluation (of 2 samples: the network's C code compiled, or found in the build
cache; with --fresh-cache the cache is an empty folder, so it is compiled).
"""
from __future__ import annotations

import argparse
import time

import torch

from common import emit, machine, run_main

from edgessm import io
from edgessm.data import load_task
from edgessm.quant import QuantSequenceModel, quantize
from edgessm.train import loop


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--task", default="psmnist")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--spec", default="loihi2")
    ap.add_argument("--fresh-cache", action="store_true", help="compile into an empty build cache")
    a = ap.parse_args(argv)
    if a.fresh_cache:
        import os
        import tempfile
        os.environ["EDGESSM_CACHE"] = tempfile.mkdtemp(prefix="edgessm-cache-")
    torch.set_num_threads(a.threads)
    m = io.load(a.model).eval()
    if not isinstance(m, QuantSequenceModel):
        m = quantize(m, a.spec, calibration=load_task(a.task, "train", limit=256).x).eval()
    test, first = load_task(a.task, "test", limit=a.n), load_task(a.task, "test", limit=2)
    times, res = {}, {}
    for way, min_tokens in (("torch int64 forward", 10 ** 18), ("integer engine, C", 1)):
        loop.ENGINE_MIN_TOKENS = min_tokens
        t0 = time.perf_counter()
        loop.evaluate(m, first)                     # warm-up: the engine's compile
        times[f"{way}, first 2 samples"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        res[way] = loop.evaluate(m, test)
        times[way] = time.perf_counter() - t0
    assert res["torch int64 forward"] == res["integer engine, C"], res
    emit({"bench": "int_eval", "model": a.model, "task": a.task, "n": a.n, "threads": a.threads,
          "seconds": times, "ratio": times["torch int64 forward"] / times["integer engine, C"],
          "accuracy": res["integer engine, C"]["accuracy"], "cpu": machine()["cpu"]})
    return 0


if __name__ == "__main__":
    run_main(main)
