"""Streaming speed of one model on this CPU, engine by engine:

* ``cpu-fast``   the C kernel, one token of every stream per call (targets/cpu)
* ``torch-step`` PyTorch ``SequenceModel.step`` per token
* ``torch-conv`` PyTorch FFT convolution over whole sequences (offline; per-token cost = time / L)
* ``pool-push``  the public streaming API over the same kernel: ``StreamPool.push(sid, x)`` for
  one stream, ``push_many`` for a batch (one token per stream per call); timed interleaved
  with ``FastProgram.step_numpy`` (``api_overhead_us``: its cost per call above the bare step)
* ``fixed-c``    the integer C step of the quantized model (the C export's step), one stream,
  timed in alternation with ``cpu-fast`` at batch 1 (``bench/fixed.py``); ``fixed_c_vs_cpu_fast``
  is the ratio of the two

Figures are wall-clock medians over repeats; `threads` torch threads (the C kernel is single-threaded).
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch


def _median_time(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _interleaved(fns, repeats: int) -> list[float]:
    """Median time of each fn, the fns run in turn each repeat (so load changes hit all alike)."""
    for f in fns:
        f()
    ts = [[] for _ in fns]
    for _ in range(repeats):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            ts[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in ts]


def api_vs_kernel(fast, b: int, n: int, repeats: int) -> tuple[float, float]:
    """(step_numpy, StreamPool push/push_many) seconds per call of one token for `b` streams."""
    from ..targets.cpu.pool import StreamPool
    d = fast.d_input
    x = np.random.default_rng(1).standard_normal((b, d)).astype(np.float32)
    state = fast.init_state(b)
    y = np.empty((b, fast.d_output), dtype=np.float32)
    pool = StreamPool(fast, capacity=b)
    ids = [pool.open() for _ in range(b)]

    def kernel():
        for _ in range(n):
            fast.step_numpy(x, state, y)
    if b == 1:
        sid, x1 = ids[0], x

        def api():
            for _ in range(n):
                pool.push(sid, x1)
    else:
        def api():
            for _ in range(n):
                pool.push_many({sid: x[j] for j, sid in enumerate(ids)})
    k, a = _interleaved([kernel, api], repeats)
    return k / n, a / n


def flops_per_token(config) -> float:
    """Multiply-adds x 2 of one token through the network (the arithmetic bound's numerator)."""
    H, N2, c = config.d_model, config.d_state // 2, config
    ssm = H * N2 * (8 + 4) + 3 * H            # complex state update + output, D u, activation
    mix = 2 * H * (2 * H if c.mixing == "glu" else H)
    norm = 6 * H if c.norm != "none" else 0
    return c.d_input * H * 2 + c.n_layers * (ssm + mix + norm) + 2 * H * c.d_output


def bench_stream(model, batches=(1,), tokens: int = 1000, seq_len: int = 784, threads: int = 1,
                 repeats: int = 5) -> dict:
    from ..targets import get
    torch.set_num_threads(threads)
    model = model.eval()
    fast = get("cpu").compile(model)
    d = model.config.d_input
    out = {"flops_per_token": flops_per_token(model.config), "threads": threads, "engines": {}}
    rng = np.random.default_rng(0)
    for b in batches:
        key = "" if len(batches) == 1 else f"@{b}"
        x = rng.standard_normal((b, d)).astype(np.float32)
        state = fast.init_state(b)
        y = np.empty((b, model.config.d_output), dtype=np.float32)
        n = max(20, tokens // b)

        def run_fast():
            for _ in range(n):
                fast.step_numpy(x, state, y)
        t_fast = _median_time(run_fast, repeats) / n
        xt = torch.from_numpy(x)
        st = [model.init_state(b)]
        m = max(5, min(n, 200 // max(1, b // 16)))

        def run_step():
            with torch.no_grad():
                s = st[0]
                for _ in range(m):
                    _, s = model.step(xt, s)
                st[0] = s
        t_step = _median_time(run_step, max(2, repeats // 2)) / m
        X = torch.randn(b, seq_len, d)

        def run_conv():
            with torch.no_grad():
                model.forward_tokens(X)
        t_conv = _median_time(run_conv, max(2, repeats // 2)) / seq_len
        t_kernel, t_api = api_vs_kernel(fast, b, n, repeats)
        out.setdefault("api_overhead_us", {})[str(b)] = 1e6 * (t_api - t_kernel)
        for name, t in (("cpu-fast", t_fast), ("torch-step", t_step), ("torch-conv", t_conv),
                        ("pool-push", t_api)):
            out["engines"][name + key] = {
                "batch": b, "us_per_step": 1e6 * t, "us_per_token": 1e6 * t / b,
                "tokens_per_s": b / t, "gflop_per_s": out["flops_per_token"] * b / t / 1e9}
    from .fixed import bench_fixed_c
    fx = bench_fixed_c(model, fast, tokens=max(200, tokens), repeats=repeats)
    if "error" in fx:
        out["fixed_c_error"] = fx["error"]
    else:
        t = fx["us_per_step"] / 1e6
        out["engines"]["fixed-c" + ("" if len(batches) == 1 else "@1")] = {
            "batch": 1, "us_per_step": 1e6 * t, "us_per_token": 1e6 * t, "tokens_per_s": 1 / t,
            "gflop_per_s": out["flops_per_token"] / t / 1e9, "quantization": fx["quantization"]}
        out["fixed_c_vs_cpu_fast"] = fx["ratio_to_cpu_fast"]
        out["fixed_c_float_us_per_step"] = fx["float_us_per_step"]
    e = out["engines"]
    k = "" if len(batches) == 1 else f"@{batches[0]}"
    out["speedup_fast_vs_step"] = e["torch-step" + k]["us_per_step"] / e["cpu-fast" + k]["us_per_step"]
    return out
