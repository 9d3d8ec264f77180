"""Streaming step latency per token at batch 1 (PyTorch `net.step`), for the shipped
`smnist` model and the H=128/N=64/4-layer standard model.

    python benchmarks/bench_step.py [--tokens 2000] [--record]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import edgessm as es

from common import append_results, emit


def step_latency(net, tokens: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    net.eval()
    x = torch.randn(tokens, 1, net.config.d_input)
    state = net.init_state(1)
    times = []
    with torch.no_grad():
        for t in range(50):
            _, state = net.step(x[t], state)
        for t in range(tokens):
            t0 = time.perf_counter()
            _, state = net.step(x[t], state)
            times.append(time.perf_counter() - t0)
    times.sort()
    return {"us_p50": 1e6 * statistics.median(times), "us_p99": 1e6 * times[int(0.99 * len(times))],
            "us_mean": 1e6 * statistics.fmean(times)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--record", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    models = {"smnist (shipped, neuromorphic H=64 N=64 4 layers)": es.load("smnist"),
              "standard H=128 N=64 4 layers": es.SequenceModel.from_preset(
                  "standard", d_input=1, d_output=10, d_model=128, d_state=64, n_layers=4)}
    rows = []
    for name, net in models.items():
        for threads in (1, 2):
            r = {"bench": "step_latency", "model": name, "batch": 1, "threads": threads,
                 **step_latency(net, a.tokens, threads)}
            emit(r)
            rows.append(r)
    if a.record:
        table = ["| model | threads | p50 us/token | p99 us/token | mean |", "|---|---|---|---|---|"]
        table += [f"| {r['model']} | {r['threads']} | {r['us_p50']:.0f} | {r['us_p99']:.0f} | {r['us_mean']:.0f} |"
                  for r in rows]
        append_results("Streaming step latency, PyTorch net.step, batch 1", table)


if __name__ == "__main__":
    main()
