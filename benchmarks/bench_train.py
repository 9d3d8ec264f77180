"""Training throughput (samples/s) of the `standard` preset, H=128, N=64, 4 layers,
sMNIST-shaped input (L=784, batch 64), on this CPU; one line per thing tried.

    python benchmarks/bench_train.py [--iters 5] [--record]
"""
from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F

import edgessm as es
from edgessm.ssm import kernel as K
from edgessm.ssm import layer as layer_mod

from common import append_results, emit


def _autograd_conv(u, k, pow2=False):
    L = u.shape[-1]
    n = 1 << (2 * L - 1).bit_length() if pow2 else K._fft_len(2 * L)
    return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :L]


def _manual_pow2(u, k):
    orig = K._fft_len
    K._fft_len = lambda m: 1 << (m - 1).bit_length()
    try:
        return K.fft_conv(u, k)
    finally:
        K._fft_len = orig


@contextlib.contextmanager
def conv_impl(fn):
    orig = layer_mod.fft_conv
    layer_mod.fft_conv = fn
    try:
        yield
    finally:
        layer_mod.fft_conv = orig


def measure(threads: int, iters: int, compiled: bool = False, batch: int = 64, L: int = 784) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = es.SequenceModel.from_preset("standard", d_input=1, d_output=10, d_model=128, d_state=64, n_layers=4)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    fwd = torch.compile(net) if compiled else net
    x = torch.randn(batch, L, 1)
    y = torch.randint(0, 10, (batch,))

    def it():
        loss = F.cross_entropy(fwd(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for _ in range(2):
        it()
    t0 = time.perf_counter()
    for _ in range(iters):
        it()
    return batch * iters / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    ap.add_argument("--compile", action="store_true", help="also try torch.compile (slow to compile)")
    a = ap.parse_args()
    variants = [
        ("autograd through rfft, FFT n = next power of 2 >= 2L", lambda: conv_impl(lambda u, k: _autograd_conv(u, k, True)), 2),
        ("autograd through rfft, FFT n = 2,3,5-smooth >= 2L", lambda: conv_impl(_autograd_conv), 2),
        ("hand-written real-FFT backward, n = power of 2", lambda: conv_impl(_manual_pow2), 2),
        ("hand-written real-FFT backward, n = 2,3,5-smooth (default)", contextlib.nullcontext, 2),
        ("default, 1 thread", contextlib.nullcontext, 1),
    ]
    rows = []
    for name, ctx, threads in variants:
        with ctx():
            sps = measure(threads, a.iters)
        rec = {"bench": "train_throughput", "variant": name, "threads": threads, "samples_per_s": sps}
        emit(rec)
        rows.append(rec)
    if a.compile:
        try:
            sps = measure(2, a.iters, compiled=True)
            rec = {"bench": "train_throughput", "variant": "default + torch.compile(model)", "threads": 2,
                   "samples_per_s": sps}
        except Exception as e:  # noqa: BLE001 - report, don't crash the benchmark
            rec = {"bench": "train_throughput", "variant": "default + torch.compile(model)", "threads": 2,
                   "samples_per_s": None, "error": f"{type(e).__name__}: {str(e)[:200]}"}
        emit(rec)
        rows.append(rec)
    if a.record:
        base = rows[0]["samples_per_s"]
        table = ["| variant | threads | samples/s | vs first |", "|---|---|---|---|"]
        for r in rows:
            s = r["samples_per_s"]
            table.append(f"| {r['variant']} | {r['threads']} | {s:.1f} | {s / base:.2f}x |" if s else
                         f"| {r['variant']} | {r['threads']} | failed: {r.get('error')} | |")
        append_results("Training throughput, standard preset H=128 N=64 4 layers, sMNIST shape, batch 64",
                       table, "One optimizer step = forward + backward + AdamW on a batch of 64 sequences of 784 tokens.")


if __name__ == "__main__":
    main()
