"""`edgessm demo` (`make demo`): the shipped sMNIST model evaluated on the MNIST test set
in float, streamed token by token, and deployed on every target that can run it."""
from __future__ import annotations

import json
import sys
import time

import torch


def _log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def run_demo(args) -> dict:
    from . import io
    from .cli import stream_trace
    from .data import load_task
    from .train import evaluate
    name = "smnist"
    model = io.load(name)
    limit = getattr(args, "limit", None)
    test = load_task("smnist", "test", limit=limit)
    rows = []
    _log(f"evaluating shipped model {name!r} on {len(test)} MNIST test digits (float, FFT convolution)...")
    t0 = time.time()
    with torch.no_grad():
        r = evaluate(model, test, 500, progress=sys.stderr.isatty())
    rows.append({"engine": "cpu float (conv)", "accuracy": r["accuracy"], "n": r["n"],
                 "seconds": time.time() - t0})

    x, y = test[0]
    tr = stream_trace(model, x, int(y))
    pred = tr["pred"].tolist()
    conf = tr["probs"].max(-1).values.tolist()
    us = 1e6 * sorted(tr["step_s"])[len(tr["step_s"]) // 2]
    stream = {"label": int(y), "prediction": pred[-1], "confidence": conf[-1], "us_per_token": us,
              "trace": {t: (pred[t - 1], conf[t - 1]) for t in (98, 196, 392, 588, 784)}}

    deployed = _deploy_rows(model, test, limit)
    rows += deployed

    result = {"model": name, "rows": rows, "stream": stream}
    if getattr(args, "json", False):
        print(json.dumps(result))
        return result
    print(f"\nedgessm demo: shipped model {name!r} "
          f"({model.config.preset} preset, H={model.config.d_model}, N={model.config.d_state}, "
          f"{model.config.n_layers} layers, {sum(p.numel() for p in model.parameters())} parameters)\n")
    print(f"{'engine':<24} {'accuracy':>9} {'samples':>8} {'seconds':>8}  notes")
    for row in rows:
        print(f"{row['engine']:<24} {100 * row['accuracy']:>8.2f}% {row['n']:>8} "
              f"{row['seconds']:>8.1f}  {row.get('notes', '')}")
    print(f"\nstreaming test digit 0 (label {stream['label']}) token by token, "
          f"{us:.0f} us/token on this CPU:")
    print(f"{'token':>6} {'pred':>5} {'confidence':>10}")
    for t, (p, c) in stream["trace"].items():
        print(f"{t:>6} {p:>5} {c:>10.3f}  {'#' * int(round(30 * c))}")
    return result


def _deploy_rows(model, test, limit) -> list[dict]:
    """One row per target that can run the model (targets that are not installed are skipped)."""
    from . import targets
    rows = []
    hook = None
    try:
        from .cli_deploy import demo_rows as hook  # added by the quantization/deployment work
    except ImportError:
        return rows
    for row in hook(model, test, limit):
        rows.append(row)
    return rows
