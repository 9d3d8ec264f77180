"""The token-by-token vs batched study on this CPU (measured), beside modelled targets.

Token-by-token: one token of B streams per call, the answer needed before the next token
arrives (latency = one step, p50/p99 over many steps; throughput = B / step time).
Batched: whole sequences of length L, B at a time, by FFT convolution (offline; latency =
time for the batch, i.e. from the last token of the batch to its predictions; throughput =
B*L / time). Memory: the state a stream keeps (recurrent) vs the activations a batched
forward allocates (peak RSS growth).

Every measured row has ``p50_s``, ``p99_s``, ``mean_s`` (seconds per call),
``latency_s`` (= p50), ``throughput_tokens_per_s`` (from the mean call time, what a
sustained run gets) and ``throughput_p50_tokens_per_s`` (from the median, robust to a
busy machine preempting a few calls). :func:`modelled_points` turns the cost of a
compiled program (or a ``deploy`` result) into rows of the same shape.
"""
from __future__ import annotations

import gc
import resource
import time

import numpy as np
import torch


def _percentiles(ts: list[float]) -> dict:
    a = np.asarray(ts, dtype=np.float64)
    return {"p50_s": float(np.median(a)), "p99_s": float(np.percentile(a, 99)),
            "mean_s": float(a.mean()), "calls": int(a.size)}


def token_by_token(model, batch: int, steps: int, engine: str = "fast", warmup: int = 10) -> dict:
    """Per-step latency of `batch` streams advancing one token each (engine "fast" or "torch")."""
    from ..targets import get
    d = model.config.d_input
    if engine == "fast":
        prog = get("cpu").compile(model)
        state = prog.init_state(batch)
        x = np.random.default_rng(0).standard_normal((batch, d)).astype(np.float32)
        y = np.empty((batch, model.config.d_output), dtype=np.float32)
        fn = lambda: prog.step_numpy(x, state, y)
        state_bytes = prog.resources()["state_bytes_per_stream"] * batch
    elif engine == "torch":
        st = [model.init_state(batch)]
        xt = torch.randn(batch, d)

        def fn():
            with torch.no_grad():
                _, st[0] = model.step(xt, st[0])
        state_bytes = sum(s.numel() * s.element_size() for s in st[0].layers)
    else:
        raise ValueError(f"unknown engine {engine!r}; expected 'fast' or 'torch'")
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    p = _percentiles(ts)
    return {"mode": "token", "engine": "cpu-fast" if engine == "fast" else "torch-step", "batch": batch,
            "seq_len": None, **p, "latency_s": p["p50_s"],
            "throughput_tokens_per_s": batch / p["mean_s"], "throughput_p50_tokens_per_s": batch / p["p50_s"],
            "state_bytes": state_bytes, "measured": True}


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
    tokens = batch * seq_len
    return {"mode": "batched", "engine": "torch-conv", "batch": batch, "seq_len": seq_len, **p,
            "latency_s": p["p50_s"],
            "throughput_tokens_per_s": tokens / p["mean_s"], "throughput_p50_tokens_per_s": tokens / p["p50_s"],
            "amortized_s_per_token": p["mean_s"] / tokens,
            "activation_bytes_estimate": activation_bytes(model, batch, seq_len),
            "peak_rss_growth_bytes": max(0, (rss1 - rss0) * 1024), "measured": True}


def activation_bytes(model, batch: int, seq_len: int) -> int:
    """Computed (not measured) size of one layer's working set in a batched forward: the
    activations (B, L, H) float32 plus the FFT buffers of input and kernel product, (B, H, 2L)
    complex64 twice. Peak RSS growth is often 0 because the process peaked earlier."""
    H = model.config.d_model
    return int(batch * seq_len * H * 4 + 2 * batch * H * (2 * seq_len) * 8)


def run_study(model, batches=(1, 8, 64, 256), seq_lens=(256, 1024, 4096), steps: int = 300,
              threads: int = 1, *, torch_steps: int | None = None, repeats: int = 3,
              max_tokens: int = 1 << 20, engines=("fast", "torch"), errors: str = "raise") -> list[dict]:
    """Measured rows: token mode for every engine and batch, batched convolution for every
    (batch, L) with batch * L <= max_tokens (memory and minutes on a small CPU).

    steps: calls timed for the fast engine; torch_steps (default max(20, steps // 10)) for
    torch. errors="record" turns a failing row into {"engine", "batch", "error"} instead of
    raising. Sets torch's thread count to `threads` (and leaves it)."""
    torch.set_num_threads(threads)
    model = model.eval()
    torch_steps = torch_steps if torch_steps is not None else max(20, steps // 10)
    rows = []

    def attempt(fn, **what):
        try:
            rows.append(fn())
        except Exception as e:
            if errors != "record":
                raise
            rows.append({**what, "error": f"{type(e).__name__}: {e}"})

    for b in batches:
        for eng in engines:
            attempt(lambda b=b, eng=eng: token_by_token(model, b, steps if eng == "fast" else torch_steps, eng),
                    mode="token", engine="cpu-fast" if eng == "fast" else "torch-step", batch=b)
    for L in seq_lens:
        for b in batches:
            if b * L > max_tokens:
                continue
            attempt(lambda b=b, L=L: batched(model, b, L, repeats), mode="batched", engine="torch-conv", batch=b,
                    seq_len=L)
    return rows


def modelled_points(source, label: str, tokens: int | None = None) -> list[dict]:
    """Rows for a modelled target, one per cost mode (token, and pipelined when the target has it).

    source: a compiled Program (``cost(tokens=..., mode=...)`` is called) or a dict returned by
    ``edgessm.deploy.deploy_dict`` (its ``cost`` and ``cost_pipelined``). Batch 1: these models run one
    stream; more streams need more cores/arrays or time-multiplexing, which they do not model."""
    costs = []
    if isinstance(source, dict):
        for key in ("cost", "cost_pipelined"):
            if key in source:
                costs.append(source[key])
    else:
        t = tokens or 1
        costs.append(source.cost(tokens=t).to_dict())
        try:
            costs.append(source.cost(tokens=t, mode="pipelined").to_dict())
        except TypeError:
            pass
    rows = []
    for c in costs:
        rows.append({"mode": c["mode"], "engine": label, "batch": 1, "seq_len": None,
                     "latency_s": c["latency_per_token_s"], "p50_s": c["latency_per_token_s"],
                     "p99_s": c["latency_per_token_s"], "throughput_tokens_per_s": c["throughput_tokens_per_s"],
                     "throughput_p50_tokens_per_s": c["throughput_tokens_per_s"],
                     "energy_per_token_j": c["energy_per_token_j"], "power_w": c["power_w"], "measured": False})
    return rows
