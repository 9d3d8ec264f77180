"""torch.profiler over one training step of a preset (the operators by self CPU time).

    python benchmarks/profile_step.py [--preset standard] [--threads 2] [--batch 64] [--top 10]
                                      [--unfused]

The model and step of bench_train.py (d_model 128 standard / 64 neuromorphic, d_state 64,
4 layers, L = 784, AdamW); --unfused runs the block tail as torch ops (EDGESSM_FUSED=0).
"""
from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from common import run_main

import edgessm as es
from edgessm.ssm import fused


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="standard", choices=["standard", "neuromorphic"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--unfused", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    fused.set_enabled(not a.unfused)
    torch.manual_seed(0)
    std = a.preset == "standard"
    model = es.SequenceModel.from_preset(a.preset, d_input=1, d_output=10, dropout=0.1 if std else 0.0,
                                         d_model=128 if std else 64, d_state=64, n_layers=4)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = torch.rand(a.batch, 784, 1), torch.randint(0, 10, (a.batch,))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    step()
    print(f"{a.preset}, {'torch ops' if a.unfused else 'fused'} block tail: {time.perf_counter() - t0:.3f} s/step "
          f"(unprofiled)")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.top))
    return 0


if __name__ == "__main__":
    run_main(main)
