"""The ``fixed-c`` row of ``edgessm bench stream``: the integer C step (the C export's
``<name>_step``, compiled as the integer engine's C backend: the same generator, -O2
-march=native) of the model, one stream, one C call per token, timed side by side with the
float C kernel's ``FastProgram.step_numpy`` (``cpu-fast``) at batch 1.

A float model is quantized first (PTQ, loihi2 spec) on the first 64 training sequences of its
checkpoint's task (random normal tokens when the checkpoint records no task); a quantized
model runs as calibrated. Inputs are encoded once (the host boundary), so the row times the
integer step alone.
"""
from __future__ import annotations

import statistics
import time

import numpy as np


def integer_net(model) -> tuple[object, str]:
    """(IntNet, how it was obtained) for a float or quantized model."""
    from ..quant.model import QuantSequenceModel
    from ..quant.ptq import quantize
    if isinstance(model, QuantSequenceModel):
        net = model.integer_network()
        return net, f"as quantized (spec {net.spec_name})"
    from ..io import trained_task
    task = trained_task(model)
    import torch
    if task:
        from ..data import load_task
        cal = load_task(task, "train", limit=64).x
        how = f"PTQ loihi2 on 64 {task} training sequences"
    else:
        g = torch.Generator().manual_seed(0)
        cal = torch.randn(16, 256, model.config.d_input, generator=g)
        how = "PTQ loihi2 on random normal tokens (no task recorded)"
    return quantize(model, "loihi2", calibration=cal, n=cal.shape[0]).integer_network(), how


def bench_fixed_c(model, fast, tokens: int = 1000, repeats: int = 5) -> dict:
    """Per-token time of the integer C step and of the float C step (batch 1), measured in
    alternation (A/B per repeat); None entries with the reason when there is no C compiler."""
    from ..errors import EdgessmError
    from ..quant.fixedpoint import quantize_input_np
    from ..targets.fixed.engine import Engine
    try:
        net, how = integer_net(model)
        cs = Engine(net, backend="c").c_stream()
    except EdgessmError as e:
        return {"error": str(e)}
    rng = np.random.default_rng(0)
    xf = rng.standard_normal((tokens, net.d_input)).astype(np.float32)
    xm = quantize_input_np(xf, net.in_exp, net.in_bits)[0].astype(np.int32)
    y = np.empty(net.d_output, np.int32)
    x1 = xf[:1].copy()
    state = fast.init_state(1)
    yf = np.empty((1, model.config.d_output), np.float32)

    def run_int():
        for t in range(tokens):
            cs.step(xm[t], y)

    def run_float():
        for t in range(tokens):
            fast.step_numpy(x1, state, yf)
    run_int()
    run_float()
    ti, tf = [], []
    for _ in range(max(repeats, 9)):          # A/B pairs; process CPU time (a shared machine)
        t0 = time.process_time()
        run_int()
        ti.append(time.process_time() - t0)
        t0 = time.process_time()
        run_float()
        tf.append(time.process_time() - t0)
    a, b = statistics.median(ti) / tokens, statistics.median(tf) / tokens
    ratio = statistics.median(x / y for x, y in zip(ti, tf) if y > 0)
    return {"us_per_step": 1e6 * a, "float_us_per_step": 1e6 * b, "ratio_to_cpu_fast": ratio,
            "quantization": how, "spec": net.spec_name, "timing": "process CPU time, median of "
            f"{len(ti)} alternating runs of {tokens} tokens each; ratio = median of the paired ratios"}
