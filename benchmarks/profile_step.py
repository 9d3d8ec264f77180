"""torch.profiler over one training step of a preset (the operators by self CPU time).

    python benchmarks/profile_step.py [--preset standard] [--threads 2] [--batch 64] [--top 10]
                                      [--unfused] [--config configs/X.toml] [--fft torch]
                                      [--steps 0] [--norm torch]

The model and step of bench_train.py (d_model 128 standard / 64 neuromorphic, d_state 64,
4 layers, L = 784, AdamW); --config takes the model of a training config instead (its task's
input width, classes and length, its dropout); --unfused runs the block tail as torch ops
(EDGESSM_FUSED=0); --fft torch makes the fused FFT convolution use torch.fft even when ducc0
is installed; --norm torch runs a training-mode ``mix_norm`` as torch's BatchNorm1d before the
fused tail (the step before ``fused.norm_mix_tail``). --steps N times N unprofiled steps (median);
--top 0 skips the profile.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from common import run_main, torch_mix_norm_tail

import edgessm as es
from edgessm.data.tasks import TASKS
from edgessm.ssm import fftconv, fused
from edgessm.train.config import load_config


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="standard", choices=["standard", "neuromorphic"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--unfused", action="store_true")
    ap.add_argument("--config", help="a training config whose model is profiled instead of --preset's")
    ap.add_argument("--fft", default="auto", choices=["auto", "torch"])
    ap.add_argument("--steps", type=int, default=1, help="unprofiled steps timed (median)")
    ap.add_argument("--norm", default="fused", choices=["fused", "torch"])
    a = ap.parse_args(argv)
    if a.norm == "torch":
        fused.norm_mix_tail = torch_mix_norm_tail
    torch.set_num_threads(a.threads)
    fused.set_enabled(not a.unfused)
    if a.fft == "torch":
        fftconv.FFT = "torch"
    torch.manual_seed(0)
    if a.config:
        cfg = load_config(a.config)
        info = TASKS[cfg.data.task]
        model = es.SequenceModel(cfg.model_config(info.d_input, info.d_output))
        label, L, d_in, d_out = a.config, info.seq_len, info.d_input, info.d_output
    else:
        std = a.preset == "standard"
        model = es.SequenceModel.from_preset(a.preset, d_input=1, d_output=10, dropout=0.1 if std else 0.0,
                                             d_model=128 if std else 64, d_state=64, n_layers=4)
        label, L, d_in, d_out = a.preset, 784, 1, 10
    model.train()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = torch.rand(a.batch, L, d_in), torch.randint(0, d_out, (a.batch,))

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    times = []
    for _ in range(max(1, a.steps)):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(f"{label}, {'torch ops' if a.unfused else 'fused'} block tail, {a.norm} mix_norm, "
          f"FFTs by {fftconv.describe()}, "
          f"{a.threads} thread(s): {statistics.median(times):.3f} s/step (unprofiled, median of {len(times)})")
    if a.top <= 0:
        return 0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.top))
    return 0


if __name__ == "__main__":
    run_main(main)
