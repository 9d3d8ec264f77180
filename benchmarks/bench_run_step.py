"""The training step of a run's model, with the CPU step's options switched in one process.

    python benchmarks/bench_run_step.py --config configs/psmnist_h128_res.toml --threads 1,2
                                        [--rounds 5] [--iters 2] [--batch 64] [--chunks | --ffts]

The model of a training config (its task's input width, classes and length; its dropout), one
AdamW step on a random batch. Variants, interleaved round by round in the same process so that
the machine's drift falls on all of them alike:

- FFTs by torch.fft or by ducc0 (the ``[fft]`` extra; skipped when it is not installed);
- a training-mode ``mix_norm`` as torch's BatchNorm1d before the fused tail, or fused into it
  (``fused.norm_mix_tail``; only for a config with ``mix_norm``).

With --chunks the variants are instead the default step with the FFT convolution over the
whole (B, H, n) tensors at once (as before it ran in chunks of rows), then the default. With
--ffts they are the FFT libraries with the fused ``mix_norm``: torch.fft, ducc0 (its inverse
transform's rows padded where they would be a multiple of 4 KiB apart, ``fftconv._row_len``) and
ducc0 with unpadded rows (as before the padding).

Per round, each variant's time is the median of `iters` steps; its ratio to the first variant
(torch.fft, torch's batch norm: the step without either change) is taken per round, and the
table gives the medians over rounds.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import emit, machine, run_main, torch_mix_norm_tail

import edgessm as es
from edgessm.data.tasks import TASKS
from edgessm.ssm import fftconv, fused
from edgessm.train.config import load_config


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--chunks", action="store_true",
                    help="instead: the convolution over whole tensors vs in chunks of rows (default)")
    ap.add_argument("--ffts", action="store_true",
                    help="instead: torch.fft vs ducc0 vs ducc0 with unpadded inverse-transform rows")
    a = ap.parse_args(argv)
    cfg = load_config(a.config)
    info = TASKS[cfg.data.task]
    torch.manual_seed(0)
    model = es.SequenceModel(cfg.model_config(info.d_input, info.d_output))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    x = torch.rand(a.batch, info.seq_len, info.d_input)
    y = torch.randint(0, info.d_output, (a.batch,))

    ffts = ["torch"] + (["ducc0"] if fftconv._DUCC is not None else [])
    norms = ["torch", "fused"] if model.config.mix_norm else ["fused"]
    variants = [(f, n, "chunks") for f in ffts for n in norms]
    if a.chunks:
        variants = [("auto", "fused", "whole"), ("auto", "fused", "chunks")]
    elif a.ffts:
        if fftconv._DUCC is None:
            raise SystemExit("--ffts needs ducc0 (pip install 'edgessm[fft]')")
        variants = [("torch", "fused", "chunks"), ("ducc0", "fused", "chunks"), ("ducc0-unpadded", "fused", "chunks")]
    fused_norm = fused.norm_mix_tail
    chunk, pad = fftconv.CHUNK_ROWS, fftconv.ROW_PAD_BYTES

    def setup(fft, norm, rows="chunks"):
        fftconv.FFT = fft.split("-")[0]
        fftconv.ROW_PAD_BYTES = 0 if fft.endswith("-unpadded") else pad
        fused.norm_mix_tail = fused_norm if norm == "fused" else torch_mix_norm_tail
        fftconv.CHUNK_ROWS = chunk if rows == "chunks" else 10 ** 9

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    print(f"{a.config}: {model.config.preset} H={model.config.d_model} N={model.config.d_state} "
          f"layers={model.config.n_layers}, batch {a.batch}, L={info.seq_len}; {machine()['cpu']}")
    rows = []
    try:
        for threads in [int(t) for t in a.threads.split(",")]:
            torch.set_num_threads(threads)
            for v in variants:                     # warm-up: pools, libraries, plans
                setup(*v)
                step()
            times = {v: [] for v in variants}
            for _ in range(a.rounds):
                for v in variants:
                    setup(*v)
                    ts = []
                    for _ in range(a.iters):
                        t0 = time.perf_counter()
                        step()
                        ts.append(time.perf_counter() - t0)
                    times[v].append(statistics.median(ts))
            base = variants[0]
            for v in variants:
                ratio = statistics.median(b / t for b, t in zip(times[base], times[v]))
                rec = {"config": a.config, "threads": threads, "fft": v[0], "mix_norm": v[1], "rows": v[2],
                       "s_per_step": statistics.median(times[v]), "speedup": ratio,
                       "rounds": [round(t, 4) for t in times[v]]}
                emit(rec)
                rows.append(rec)
    finally:
        setup("auto", "fused")
    print("\n| threads | FFTs | mix_norm in training | convolution rows | s/step | speed-up vs the first row of its thread count |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['threads']} | {r['fft']} | {r['mix_norm']} | {r['rows']} | {r['s_per_step']:.3f} | {r['speedup']:.2f}x |")
    return 0


if __name__ == "__main__":
    run_main(main)
