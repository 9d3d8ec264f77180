"""The S4D block tail per op: the torch ops the training path ran before against the fused native
kernels (ssm/fused.c), forward and forward + backward, side by side in one run.

    python benchmarks/bench_fused_block.py [--threads 2] [--batch 64] [--length 784] [--rounds 5]

Shapes are the training step's: (batch, H, L) activations, H = 128 (standard preset: GELU,
dropout 0.1, GLU mixing, residual, LayerNorm over the channels) and H = 64 (neuromorphic:
ReLU, no dropout, linear mixing with ReLU, no residual). Every op runs in turn, round after
round (so a drifting machine speed hits them alike); the figure is the median over rounds of
the mean over `--iters` calls. The fused ops draw their dropout seed as the model does.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from common import append_results, run_main

from edgessm.ssm import fused


def torch_ln(z, w, b, eps=1e-5):
    """The written-out LayerNorm over axis 1 the block ran before (Block._norm, dim=1)."""
    mu = z.mean(1, keepdim=True)
    zc = z - mu
    var = zc.square().mean(1, keepdim=True)
    return zc * torch.rsqrt(var + eps) * w.unsqueeze(-1) + b.unsqueeze(-1)


def cases(B: int, L: int):
    """(name, torch fn, fused fn, inputs) per op; inputs are leaves that require grad."""
    out = []
    for H, preset in ((128, "standard"), (64, "neuromorphic")):
        std = preset == "standard"
        p = 0.1 if std else 0.0
        act = "gelu" if std else "relu"
        actf = F.gelu if std else F.relu
        drop = nn.Dropout(p) if p else nn.Identity()
        x = torch.randn(B, H, L, requires_grad=True)
        m = torch.randn(B, 2 * H if std else H, L, requires_grad=True)
        bias = torch.randn(m.shape[1], requires_grad=True)
        res = torch.randn(B, H, L, requires_grad=True)
        w, b = torch.randn(H, requires_grad=True), torch.randn(H, requires_grad=True)
        if std:
            out.append((f"{preset} H={H}: dropout p=0.1 alone", lambda x=x, d=drop: d(x),
                        lambda x=x: fused.act_dropout(x, "none", 0.1), (x,)))
        out.append((f"{preset} H={H}: {act}" + (" + dropout" if p else ""),
                    lambda x=x, d=drop, f=actf: d(f(x)),
                    lambda x=x, a=act, p=p: fused.act_dropout(x, a, p), (x,)))
        if std:
            out.append((f"{preset} H={H}: bias + GLU + dropout + residual",
                        lambda m=m, bias=bias, res=res, d=drop: d(F.glu(m + bias.unsqueeze(-1), dim=1)) + res,
                        lambda m=m, bias=bias, res=res: fused.mix_tail(m, bias, res, glu=True, p=0.1),
                        (m, bias, res)))
            out.append((f"{preset} H={H}: LayerNorm over channels",
                        lambda x=x, w=w, b=b: torch_ln(x, w, b),
                        lambda x=x, w=w, b=b: fused.layer_norm_ch(x, w, b), (x, w, b)))
        else:
            out.append((f"{preset} H={H}: bias + ReLU",
                        lambda m=m, bias=bias: F.relu(m + bias.unsqueeze(-1)),
                        lambda m=m, bias=bias: fused.mix_tail(m, bias, None, glu=False, act="relu"),
                        (m, bias)))
    return out


def timed(fn, inputs, g, iters: int) -> float:
    """Mean seconds of fn() (g None) or of fn() and its backward for the output gradient g."""
    t0 = time.perf_counter()
    for _ in range(iters):
        y = fn()
        if g is not None:
            torch.autograd.grad(y, inputs, g)
    return (time.perf_counter() - t0) / iters


def mask_note(B: int, L: int, rounds: int) -> str:
    """What recomputing the dropout mask in backward costs against storing it as bytes: the
    backward kernel (no activation) with dropout minus without (the hash per element), beside
    the write + read back of a uint8 mask of the same size (what a stored mask adds)."""
    import ctypes
    from edgessm.toolchain import ptr
    lib, T = fused._LIB.require(), ctypes.c_float
    x = torch.randn(B, 128, L)
    g, gx = torch.randn_like(x), torch.empty_like(x)
    mask, back = torch.zeros(x.shape, dtype=torch.uint8), torch.empty(x.shape, dtype=torch.uint8)
    nt, R = torch.get_num_threads(), B * 128

    def bwd(thr):
        lib.fb_act_drop_bwd_f32(R, L, ptr(x, T), L, ptr(g, T), L, ptr(gx, T), L, 0, 1, thr, 1.0, 0, nt)

    def store():
        back.copy_(mask)                                  # one write and one read of the bytes

    t = {k: [] for k in ("plain", "hash", "bytes")}
    for _ in range(rounds):
        for k, f in (("plain", lambda: bwd(0)), ("hash", lambda: bwd(1 << 20)), ("bytes", store)):
            f()
            t0 = time.perf_counter()
            for _ in range(5):
                f()
            t[k].append((time.perf_counter() - t0) / 5 * 1e3)
    m = {k: statistics.median(v) for k, v in t.items()}
    return (f"Dropout mask, ({B}, 128, {L}): recomputing it in backward adds "
            f"{m['hash'] - m['plain']:.1f} ms to the {m['plain']:.1f} ms pass; a stored uint8 mask "
            f"would add a {x.numel() / 1e6:.1f} MB write and read back ({m['bytes']:.1f} ms as a copy) "
            f"and keep the bytes alive until backward.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--length", type=int, default=784)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    a = ap.parse_args(argv)
    ok, why = fused.available()
    if not ok:
        print(f"fused kernels unavailable: {why}", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cs = cases(a.batch, a.length)
    times = {(c[0], impl, bw): [] for c in cs for impl in ("torch", "fused") for bw in (False, True)}
    grads = {c[0]: torch.randn_like(c[1]()) for c in cs}   # the output gradients, drawn once
    for c in cs:                                            # warm up (page the buffers in)
        for fn in c[1:3]:
            timed(fn, c[3], grads[c[0]], 1)
    for _ in range(a.rounds):
        for name, tf, ff, inputs in cs:
            for impl, fn in (("torch", tf), ("fused", ff)):
                for bw in (False, True):
                    times[(name, impl, bw)].append(timed(fn, inputs, grads[name] if bw else None, a.iters))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    rows = [f"| op, ({a.batch}, H, {a.length}) fp32 | torch fwd ms | fused fwd ms | fwd ratio | "
            "torch fwd+bwd ms | fused fwd+bwd ms | fwd+bwd ratio |", "|---|---|---|---|---|---|---|"]
    for name, *_ in cs:
        tf, ff = med[(name, "torch", False)], med[(name, "fused", False)]
        tb, fb = med[(name, "torch", True)], med[(name, "fused", True)]
        rows.append(f"| {name} | {tf:.1f} | {ff:.1f} | {tf / ff:.2f}x | {tb:.1f} | {fb:.1f} | {tb / fb:.2f}x |")
    print("\n".join(rows))
    note = mask_note(a.batch, a.length, a.rounds)
    print(note)
    if a.record:
        append_results(f"Fused block kernels per op, {a.threads} threads", rows,
                       f"Median over {a.rounds} rounds of {a.iters} calls; torch = the ops the "
                       "channel-major training path ran before (nn.Dropout, F.gelu/F.relu, F.glu, "
                       "the written-out LayerNorm over axis 1). " + note)
    return 0


if __name__ == "__main__":
    run_main(main)
