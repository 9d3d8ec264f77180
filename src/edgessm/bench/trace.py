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


def stream_summary(model, x, label: int, fractions=(0.1, 0.25, 0.5, 0.75, 0.9, 1.0)) -> dict:
    """One sequence streamed through `model`: the final prediction and confidence, the first
    token from which the prediction stays right, the median time per token, and the prediction
    and confidence at the given fractions of the sequence."""
    import statistics
    tr = stream_trace(model, x, int(label))
    L = x.shape[0]
    marks = sorted({max(0, round(L * f) - 1) for f in fractions})
    pred = tr["pred"].tolist()
    conf = tr["probs"].max(-1).values.tolist()
    correct_from = None
    for t in range(L - 1, -1, -1):
        if pred[t] != int(label):
            break
        correct_from = t
    return {"label": int(label), "prediction": pred[-1], "confidence": conf[-1], "tokens": L,
            "correct_from_token": correct_from,
            "us_per_token_median": 1e6 * statistics.median(tr["step_s"]),
            "trace": [{"token": t + 1, "prediction": pred[t], "confidence": conf[t]} for t in marks]}


def stream_test_sample(checkpoint, task: str | None = None, index: int = 0, download: bool = False) -> dict:
    """Test sample `index` of `task` (default: the checkpoint's) streamed through the checkpoint's
    model (:func:`stream_summary`), with the task and index; an index outside the test set is a
    ConfigError."""
    from ..data import load_task
    from ..deploy import Checkpoint
    from ..errors import ConfigError
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(checkpoint)
    task = ckpt.task_for(task)
    ds = load_task(task, "test", limit=max(index, 0) + 1, download=download)
    if index < 0 or index >= len(ds):
        raise ConfigError(f"--index {index} is out of range: {task} test has {len(ds)} samples")
    x, y = ds[index]
    return {"model": ckpt.name, "task": task, "index": index, **stream_summary(ckpt.model, x, int(y))}
