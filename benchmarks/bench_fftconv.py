"""The S4D layer's causal FFT convolution alone, forward + backward, per implementation, in one
process, interleaved round by round so a drifting machine speed hits them alike:

    python benchmarks/bench_fftconv.py [--shapes 64x64x784,64x128x784] [--threads 1]
                                       [--rounds 5] [--iters 3] [--lengths 1568,1600] [--parts]
                                       [--chunks 128,512,2048,0]
    python benchmarks/bench_fftconv.py --step neuromorphic,standard [--threads 2]

Implementations: ``torch`` (kernel._FFTConv: torch.fft, torch products, F.pad), ``fused``
(fftconv.FusedFFTConv: C products, pooled buffers) with torch.fft and, when installed, with
ducc0.fft. A shape is batch x channels x length; the FFT length is the smallest n >= 2L - 1
of the torch path (2,3,5,7-smooth) and of each FFT library of the fused path
(``fftconv.fft_primes``), and those in --lengths (each timed for the fused paths). Prints the median
time per call (forward + backward with both gradients) and the ratio to the torch path. With
--chunks, the fused paths at their default length also per number of rows per chunk
(``fftconv.CHUNK_ROWS``; 0: the whole tensor in one chunk).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="64x64x784,64x128x784")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--lengths", default="", help="FFT lengths to time besides the default one")
    ap.add_argument("--parts", action="store_true",
                    help="also time the pieces: padding, r2c / c2r per FFT library (torch.fft, "
                         "scipy.fft with workers, ducc0.fft), the products (torch vs C)")
    ap.add_argument("--chunks", default="", help="rows per chunk to time the fused paths with (0: whole tensor)")
    ap.add_argument("--step", default="", help="instead: whole training steps of these presets "
                    "(neuromorphic H=64 / standard H=128, N=64, 4 layers, batch 64, L=784) with the "
                    "torch path and each fused variant, interleaved in one process")
    a = ap.parse_args(argv)
    if a.step:
        return steps(a)

    import torch
    from edgessm.ssm import fftconv, kernel

    torch.set_num_threads(a.threads)
    ok, why = fftconv.available()
    if not ok:
        print(f"native library unavailable: {why}", file=sys.stderr)
        return 2
    libs = ["torch"] + (["ducc0"] if fftconv._DUCC is not None else [])
    print(f"threads={a.threads} fft libraries for the fused path: {', '.join(libs)}")

    for spec in a.shapes.split(","):
        B, H, L = (int(v) for v in spec.lower().split("x"))
        torch.manual_seed(0)
        u = torch.randn(B, H, L, requires_grad=True)
        K = torch.randn(H, L, requires_grad=True)
        g = torch.randn(B, H, L)
        n0 = kernel._fft_len(2 * L - 1)
        extra = [int(v) for v in a.lengths.split(",") if v]
        if any(n < 2 * L - 1 for n in extra):
            print(f"every FFT length must be >= 2L - 1 = {2 * L - 1}", file=sys.stderr)
            return 2

        def run_torch():
            y = kernel._FFTConv.apply(u, K)
            torch.autograd.grad(y, (u, K), g)

        default_rows = fftconv.CHUNK_ROWS

        def fused(lib, n, rows=default_rows):
            def run():
                fftconv.FFT, fftconv.CHUNK_ROWS = lib, rows
                y = fftconv.FusedFFTConv.apply(u, K, n, lib)
                torch.autograd.grad(y, (u, K), g)
            return run

        cases = {"torch": run_torch}
        for lib in libs:
            fftconv.FFT = lib
            n_lib = kernel._fft_len(2 * L - 1, fftconv.fft_primes(lib))
            for n in sorted({n_lib, *extra}):
                cases[f"fused+{lib} n={n}"] = fused(lib, n)
            for rows in (int(v) for v in a.chunks.split(",") if v):
                cases[f"fused+{lib} n={n_lib} rows={rows or 'all'}"] = fused(lib, n_lib, rows or 10 ** 9)
        times = {k: [] for k in cases}
        for f in cases.values():          # warm-up: plans, the pool, the library build
            f()
        for _ in range(a.rounds):
            for k, f in cases.items():
                t0 = time.perf_counter()
                for _ in range(a.iters):
                    f()
                times[k].append((time.perf_counter() - t0) / a.iters)
        fftconv.FFT, fftconv.CHUNK_ROWS = "auto", default_rows
        if a.parts:
            times.update(parts(B, H, L, sorted({n0, *extra, kernel._fft_len(2 * L - 1, (2, 3, 5))}),
                               a.threads, a.rounds, a.iters))
        base = statistics.median(times["torch"])
        print(f"\nshape B={B} H={H} L={L} (torch path n={n0})")
        print(f"{'implementation (pieces: indented)':<34} {'ms/call':>8} {'vs torch':>9}")
        for k, ts in times.items():
            m = statistics.median(ts)
            print(f"{k:<34} {m * 1e3:8.1f} {base / m:8.2f}x" if not k.startswith("  ")
                  else f"{k:<34} {m * 1e3:8.1f}")
    return 0


def steps(a) -> int:
    """Training steps (forward, backward, AdamW) with the convolution's torch path and the fused
    path per FFT library, switched in one process, interleaved round by round; also the fused
    path (FFT library by ``fftconv.fft_library``) over the whole tensor at once, as before it
    ran in chunks of rows ("whole tensors"), and with the block's activation and dropout as a
    pass of their own after the convolution instead of its epilogue ("activation apart")."""
    import torch
    import torch.nn.functional as F
    import edgessm as es
    from edgessm.ssm import fftconv

    torch.set_num_threads(a.threads)
    variants = {"torch path": dict(ENABLED=False), "fused+torch.fft": dict(ENABLED=True, FFT="torch")}
    if fftconv._DUCC is not None:
        variants["fused+ducc0"] = dict(ENABLED=True, FFT="ducc0")
    chunk, conv = fftconv.CHUNK_ROWS, fftconv.conv
    apart = epilogue_apart(conv)
    variants["whole, act. apart"] = dict(ENABLED=True, FFT="auto", CHUNK_ROWS=10 ** 9, conv=apart)
    variants["chunks, act. apart"] = dict(ENABLED=True, FFT="auto", CHUNK_ROWS=chunk, conv=apart)
    variants["fused (default)"] = dict(ENABLED=True, FFT="auto", CHUNK_ROWS=chunk, conv=conv)
    for v in variants.values():
        v.setdefault("CHUNK_ROWS", chunk)
        v.setdefault("conv", conv)
    for preset in a.step.split(","):
        torch.manual_seed(0)
        H = {"neuromorphic": 64, "standard": 128}[preset]
        model = es.SequenceModel.from_preset(preset, d_input=1, d_output=10, d_model=H, d_state=64,
                                             n_layers=4, dropout=0.0 if preset == "neuromorphic" else 0.1)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        x, y = torch.rand(64, 784, 1), torch.randint(0, 10, (64,))

        def step():
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        times = {k: [] for k in variants}
        for r in range(a.rounds + 1):                   # round 0: warm-up
            for k, v in variants.items():
                for attr, val in v.items():
                    setattr(fftconv, attr, val)
                for _ in range(a.iters):
                    t0 = time.perf_counter()
                    step()
                    if r:
                        times[k].append(time.perf_counter() - t0)
        fftconv.ENABLED, fftconv.FFT, fftconv.CHUNK_ROWS, fftconv.conv = True, "auto", chunk, conv
        base = statistics.median(times["torch path"])
        print(f"\ntraining step, {preset} H={H}, threads={a.threads}")
        print(f"{'convolution':<22} {'s/step':>7} {'vs torch path':>14}")
        for k, ts in times.items():
            m = statistics.median(ts)
            print(f"{k:<22} {m:7.3f} {base / m:13.2f}x")
    return 0


def epilogue_apart(conv):
    """``fftconv.conv`` with its epilogue (the block's activation and dropout) applied after
    the convolution, as a pass of its own: the step before the epilogue was fused."""
    def run(u, K, n, lib, epilogue=None):
        y = conv(u, K, n, lib)
        return y if epilogue is None else epilogue(y)
    return run


def parts(B, H, L, lengths, threads, rounds, iters) -> dict:
    """Median-able times of the pieces, interleaved round by round (keys start with two spaces)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from edgessm.ssm import fftconv
    try:
        import scipy.fft as sfft
    except ImportError:
        sfft = None
    u = torch.randn(B, H, L)
    cases = {}
    for n in lengths:
        Fn = n // 2 + 1
        pad = torch.zeros(B, H, n)
        spec = torch.fft.rfft(F.pad(u, (0, n - L)))
        full = torch.empty(B, H, n)
        out = spec.clone()                          # the C backward's G^, updated in place:
        K = torch.polar(torch.ones(H, Fn), torch.rand(H, Fn) * 6.28)   # |K^| = 1 keeps it finite
        cases[f"  pad F.pad n={n}"] = lambda n=n: F.pad(u, (0, n - L))
        cases[f"  pad into pooled n={n}"] = lambda pad=pad: pad[..., :L].copy_(u)
        cases[f"  torch rfft(F.pad) n={n}"] = lambda n=n: torch.fft.rfft(F.pad(u, (0, n - L)))
        cases[f"  torch rfft(n=) n={n}"] = lambda n=n: torch.fft.rfft(u, n=n)
        cases[f"  torch rfft padded n={n}"] = lambda pad=pad: torch.fft.rfft(pad)
        cases[f"  torch irfft n={n}"] = lambda spec=spec, n=n: torch.fft.irfft(spec, n=n)
        if sfft is not None:
            cases[f"  scipy rfft padded n={n}"] = lambda pad=pad: sfft.rfft(pad.numpy(), workers=threads)
            cases[f"  scipy irfft n={n}"] = lambda spec=spec, n=n: sfft.irfft(spec.numpy(), n=n, workers=threads)
        if fftconv._DUCC is not None:
            d = fftconv._DUCC
            cases[f"  ducc0 r2c padded n={n}"] = lambda pad=pad, out=out: d.r2c(
                pad.numpy(), axes=(2,), out=out.numpy(), nthreads=threads)
            cases[f"  ducc0 c2r n={n}"] = lambda spec=spec, full=full, n=n: d.c2r(
                spec.numpy(), axes=(2,), lastsize=n, forward=False, inorm=2, out=full.numpy(),
                nthreads=threads)
            m = fftconv._row_len(n, torch.float32, "ducc0")
            if m != n:                              # rows 4 KiB apart: the fast path pads them
                wide = torch.empty(B, H, m)
                cases[f"  ducc0 c2r rows padded to {m} n={n}"] = lambda spec=spec, wide=wide, n=n: d.c2r(
                    spec.numpy(), axes=(2,), lastsize=n, forward=False, inorm=2,
                    out=wide[..., :n].numpy(), nthreads=threads)
        cases[f"  products torch fwd+bwd n={n}"] = lambda spec=spec, K=K: (
            spec * K, (spec * spec.conj()).sum(0), spec * K.conj())
        cases[f"  products C fwd+bwd n={n}"] = lambda spec=spec, K=K, out=out: _c_products(spec, K, out)
    times = {k: [] for k in cases}
    for f in cases.values():
        f()
    for _ in range(rounds):
        for k, f in cases.items():
            t0 = time.perf_counter()
            for _ in range(iters):
                f()
            times[k].append((time.perf_counter() - t0) / iters)
    return times


def _c_products(spec, K, out):
    import torch
    from edgessm.ssm import fftconv
    f, T = fftconv._f, torch.float32
    lib = fftconv._LIB.require()
    Y = torch.empty_like(spec)
    lib.fc_mul_fwd_f32(*spec.shape, f(spec, T), f(K, T), f(Y, T), torch.get_num_threads())
    dK = torch.empty_like(K)
    lib.fc_mul_bwd_f32(*spec.shape, f(out, T), f(spec, T), f(K, T), f(dK, T), 1, 1, torch.get_num_threads())


if __name__ == "__main__":
    sys.exit(main())
