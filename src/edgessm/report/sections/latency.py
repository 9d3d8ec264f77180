"""Streaming latency distribution on this CPU: every token of one test sample through the C
engine and PyTorch net.step (measured)."""
from __future__ import annotations

import time

import numpy as np
import torch

from .. import page, plots, runs
from ..context import err, figure

KEY, TITLE = "latency", "Streaming latency distribution (measured, this CPU)"
ENGINES = ("cpu-fast (C engine)", "torch net.step")


def stream_sample(ctx) -> dict:
    """Time every token of test sample `trace_index` on the C engine and torch step; keep torch's
    probabilities (made once, shared with the trace section)."""
    ctx.need_model()

    def run():
        i = ctx.trace_index
        x = ctx.test.x[i]
        label = int(ctx.test.y[i])
        out = {"index": i, "label": label, "tokens": int(x.shape[0]), "errors": []}
        try:
            y, tf = runs.compile(ctx.model, "cpu").stream_timed(x)
            out[ENGINES[0]] = tf
            out["fast_pred"] = [int(k) for k in y.argmax(1)]
        except Exception as e:  # noqa: BLE001
            out["errors"].append({"where": "cpu-fast", "error": err(e)})
        st = ctx.model.init_state(1)
        tt, probs = [], []
        with torch.no_grad():
            for t in range(x.shape[0]):
                t0 = time.perf_counter()
                logits, st = ctx.model.step(x[t:t + 1], st)
                tt.append(time.perf_counter() - t0)
                probs.append(torch.softmax(logits[0].float(), -1).numpy())
        out[ENGINES[1]] = tt
        out["probs"] = np.stack(probs)
        return out
    return ctx.memo("stream", run)


def measure(ctx) -> dict:
    s = stream_sample(ctx)
    series = {k: s[k] for k in ENGINES if k in s}
    rows = []
    for k, ts in series.items():
        a = np.asarray(ts)
        rows.append({"engine": k, "tokens": int(a.size), "p50_s": float(np.median(a)),
                     "p90_s": float(np.percentile(a, 90)), "p99_s": float(np.percentile(a, 99)),
                     "max_s": float(a.max()), "mean_s": float(a.mean())})
    return {"rows": rows, "errors": list(s["errors"]), "index": s["index"], "tokens": s["tokens"],
            "threads": torch.get_num_threads(),
            "samples_s": {k: [float(v) for v in ts] for k, ts in series.items()}}


def render(ctx, data: dict) -> dict:
    fig = figure(data["errors"], plots.latency_hist, data["samples_s"], ctx.out)
    caption = (
        f"MEASURED on this CPU: wall-clock time of every token of test sample {data['index']} "
        f"({data['tokens']} tokens, batch 1, {data['threads']} thread) through the C streaming engine and "
        f"PyTorch net.step, one call per token, every token timed including the first (log-scale counts). The "
        f"tail (p99, max) includes preemption by other processes: see the load average in the header.")
    html = page.table(data["rows"], [("engine", "engine", "l"), ("tokens", "tokens", "r")] + [
        (k.replace("_s", ""), (lambda r, k=k: page.seconds(r[k])), "r")
        for k in ("p50_s", "p90_s", "p99_s", "max_s", "mean_s")])
    return {"figures": [fig], "caption": caption, "html": html}
