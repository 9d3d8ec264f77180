"""Streaming engines side by side: the C kernel (cpu-fast), PyTorch `net.step` and
the FFT convolution, per token, at several batch sizes, for the shipped `smnist` and the
H=128/N=64/4-layer standard model, against the arithmetic bound.

    python benchmarks/bench_stream.py [--batch 1,16,256,1024] [--tokens 2000] [--record]

The bound: flops per token (`edgessm.bench.stream.flops_per_token`) / 80 GFLOP/s, the fp32
matrix-product rate of one core of this CPU class (the figure the issue states; measured below
with a 512x512 matmul so the table shows what this machine actually does).
"""
from __future__ import annotations

import argparse
import time

import torch

import edgessm as es
from edgessm.bench.stream import bench_stream

from common import append_results, emit


def matmul_gflops(n: int = 512, reps: int = 20) -> float:
    torch.set_num_threads(1)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", default="1,16,256,1024")
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--record", action="store_true")
    a = ap.parse_args()
    batches = tuple(int(b) for b in a.batch.split(","))
    torch.manual_seed(0)
    models = {"smnist": es.load("smnist"),
              "standard H=128 N=64 4 layers": es.SequenceModel.from_preset(
                  "standard", d_input=1, d_output=10, d_model=128, d_state=64, n_layers=4)}
    peak = matmul_gflops()
    emit({"bench": "matmul_fp32_1thread", "gflop_per_s": peak})
    rows = []
    for name, net in models.items():
        r = bench_stream(net, batches=batches, tokens=a.tokens)
        bound_us = r["flops_per_token"] / 80e9 * 1e6
        for key, e in r["engines"].items():
            row = {"bench": "stream", "model": name, "engine": key.split("@")[0], **e,
                   "flops_per_token": r["flops_per_token"], "bound_us_per_token_80gflops": bound_us,
                   "x_bound": e["us_per_token"] / bound_us}
            emit(row)
            rows.append(row)
    if a.record:
        table = ["| model | engine | batch | us per token | tokens/s | GFLOP/s | x bound (80 GFLOP/s) |",
                 "|---|---|---|---|---|---|---|"]
        table += [f"| {r['model']} | {r['engine']} | {r['batch']} | {r['us_per_token']:.2f} | "
                  f"{r['tokens_per_s']:.0f} | {r['gflop_per_s']:.2f} | {r['x_bound']:.1f} |" for r in rows]
        fl = {r["model"]: r["flops_per_token"] for r in rows}
        append_results("Streaming engines per token (cpu-fast C kernel, torch step, torch FFT conv)", table,
                       notes="Flops per token: " + ", ".join(f"{k} {v / 1e6:.2f} MFLOP" for k, v in fl.items())
                       + f". Measured fp32 matmul (512x512, 1 thread): {peak:.1f} GFLOP/s. torch-conv is the "
                       "offline batched forward over L=784 divided by L (not a streaming latency).")


if __name__ == "__main__":
    main()
