"""One sequence streamed token by token through a model's ``step``: the prediction after every
token and each step's wall time (the command line's ``stream``, the demo's trace)."""
from __future__ import annotations

import time

import torch


def stream_trace(model, x, label=None):
    """Feed one sequence (L, d) token by token; returns per-token predictions and timings."""
    state = model.init_state(1)
    probs, times = [], []
    with torch.no_grad():
        for t in range(x.shape[0]):
            t0 = time.perf_counter()
            logits, state = model.step(x[t:t + 1], state)
            times.append(time.perf_counter() - t0)
            probs.append(torch.softmax(logits[0].double(), -1))
    P = torch.stack(probs)
    pred = P.argmax(-1)
    return {"probs": P, "pred": pred, "step_s": times, "label": label}
