"""The S4D layer's causal FFT convolution alone, forward + backward, per implementation, in one
process, interleaved round by round so a drifting machine speed hits them alike:

    python benchmarks/bench_fftconv.py [--shapes 64x64x784,64x128x784] [--threads 1]
                                       [--rounds 5] [--iters 3] [--lengths 1568,1600]

Implementations: ``torch`` (kernel._FFTConv: torch.fft, torch products, F.pad), ``fused``
(fftconv.FusedFFTConv: C products, pooled buffers) with torch.fft and, when installed, with
ducc0.fft. A shape is batch x channels x length; the FFT length is the smallest n >= 2L - 1
of the torch path (2,3,5,7-smooth) and of each FFT library of the fused path
(``fftconv.fft_primes``), and those in --lengths (each timed for the fused paths). Prints the median
time per call (forward + backward with both gradients) and the ratio to the torch path.
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
    a = ap.parse_args(argv)

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

        def fused(lib, n):
            def run():
                fftconv.USE_DUCC = lib == "ducc0"
                y = fftconv.FusedFFTConv.apply(u, K, n)
                torch.autograd.grad(y, (u, K), g)
            return run

        cases = {"torch": run_torch}
        for lib in libs:
            fftconv.USE_DUCC = lib == "ducc0"
            for n in sorted({kernel._fft_len(2 * L - 1, fftconv.fft_primes()), *extra}):
                cases[f"fused+{lib} n={n}"] = fused(lib, n)
        times = {k: [] for k in cases}
        for f in cases.values():          # warm-up: plans, the pool, the library build
            f()
        for _ in range(a.rounds):
            for k, f in cases.items():
                t0 = time.perf_counter()
                for _ in range(a.iters):
                    f()
                times[k].append((time.perf_counter() - t0) / a.iters)
        fftconv.USE_DUCC = fftconv._DUCC is not None
        base = statistics.median(times["torch"])
        print(f"\nshape B={B} H={H} L={L} (torch path n={n0})")
        print(f"{'implementation':<26} {'ms/call':>8} {'vs torch':>9}")
        for k, ts in times.items():
            m = statistics.median(ts)
            print(f"{k:<26} {m * 1e3:8.1f} {base / m:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
