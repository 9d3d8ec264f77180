"""The token-by-token vs batched study on this CPU (measured), beside modelled targets.

Token-by-token: one token of B streams per call, the answer needed before the next token
arrives (latency per step: p50/p99 over many steps). Batched: whole sequences of length L,
B at a time, by FFT convolution (offline; latency = time for the batch, throughput = B*L /
time). Memory: the state a stream keeps (recurrent) vs the activations a batched forward
allocates (peak RSS growth).
"""
from __future__ import annotations

import gc
import resource
import statistics
import time

import numpy as np
import torch


def _percentiles(ts: list[float]) -> dict:
    ts = sorted(ts)
    return {"p50_s": statistics.median(ts), "p99_s": ts[min(len(ts) - 1, int(0.99 * len(ts)))]}


def token_by_token(model, batch: int, steps: int, engine: str = "fast") -> dict:
    """Per-step latency of `batch` streams advancing one token each."""
    from ..targets import get
    d = model.config.d_input
    if engine == "fast":
        prog = get("cpu").compile(model)
        state = prog.init_state(batch)
        x = np.random.default_rng(0).standard_normal((batch, d)).astype(np.float32)
        y = np.empty((batch, model.config.d_output), dtype=np.float32)
        fn = lambda: prog.step_numpy(x, state, y)  # noqa: E731
        state_bytes = prog.resources()["state_bytes_per_stream"] * batch
    else:
        st = [model.init_state(batch)]
        xt = torch.randn(batch, d)

        def fn():
            with torch.no_grad():
                _, st[0] = model.step(xt, st[0])
        state_bytes = sum(s.numel() * s.element_size() for s in st[0].layers)
    for _ in range(10):
        fn()
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    p = _percentiles(ts)
    return {"mode": "token", "engine": engine, "batch": batch, **p,
            "throughput_tokens_per_s": batch / statistics.fmean(ts), "state_bytes": state_bytes}


def batched(model, batch: int, seq_len: int, repeats: int = 3) -> dict:
    """Whole sequences by FFT convolution: latency of one batch and tokens/s."""
    X = torch.randn(batch, seq_len, model.config.d_input)
    gc.collect()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        model.forward_tokens(X)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.forward_tokens(X)
            ts.append(time.perf_counter() - t0)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    p = _percentiles(ts)
    return {"mode": "batched", "engine": "torch-conv", "batch": batch, "seq_len": seq_len, **p,
            "throughput_tokens_per_s": batch * seq_len / statistics.fmean(ts),
            "latency_per_token_s": statistics.fmean(ts) / seq_len,
            "peak_rss_growth_bytes": max(0, (rss1 - rss0) * 1024)}


def run_study(model, batches=(1, 8, 64, 256), seq_lens=(256, 1024, 4096), steps: int = 300,
              threads: int = 1) -> list[dict]:
    torch.set_num_threads(threads)
    model = model.eval()
    rows = []
    for b in batches:
        for eng in ("fast", "torch"):
            rows.append(token_by_token(model, b, steps if eng == "fast" else max(20, steps // 10), eng))
    for L in seq_lens:
        for b in batches:
            if b * L > 1 << 20:   # keep the batched runs within memory and minutes on a small CPU
                continue
            rows.append(batched(model, b, L))
    return rows
