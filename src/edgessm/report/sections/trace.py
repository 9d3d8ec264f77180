"""Per-token prediction trace of one test sample (PyTorch net.step, with the C engine's
predictions beside it)."""
from __future__ import annotations

from .. import page, plots
from ..context import figure
from .latency import stream_sample

KEY, TITLE = "trace", "Per-token prediction trace"


def measure(ctx) -> dict:
    s = stream_sample(ctx)
    P = s["probs"]
    L = P.shape[0]
    marks = sorted({max(1, L * k // 8) for k in (1, 2, 4, 6, 8)})
    rows = [{"token": t, "prediction": int(P[t - 1].argmax()), "confidence": float(P[t - 1].max()),
             "p_true_label": float(P[t - 1, s["label"]]),
             "cpu_fast_prediction": s["fast_pred"][t - 1] if "fast_pred" in s else None} for t in marks]
    pred = P.argmax(1)
    first = None
    for t in range(L - 1, -1, -1):      # the first token from which the prediction stays the label
        if pred[t] != s["label"]:
            break
        first = t + 1
    agree = (None if "fast_pred" not in s else sum(int(a == b) for a, b in zip(s["fast_pred"], pred)))
    return {"rows": rows, "label": s["label"], "index": s["index"], "final_prediction": int(P[-1].argmax()),
            "first_token_correct_from": first, "tokens": L, "c_engine_agrees_on_tokens": agree,
            "probs_every_8th_token": P[::8].round(4).tolist()}


def render(ctx, data: dict) -> dict:
    s = stream_sample(ctx)
    i, label, final, first = data["index"], data["label"], data["final_prediction"], data["first_token_correct_from"]
    fig = figure(data["errors"], plots.trace, s["probs"], label,
                 f"{ctx.model_name}: prediction after every token, {ctx.task} test sample {i} (label {label})",
                 ctx.out)
    agree = ("" if data["c_engine_agrees_on_tokens"] is None else
             f" The C engine's prediction agrees with torch on {data['c_engine_agrees_on_tokens']} of "
             f"{data['tokens']} tokens.")
    caption = (
        f"Softmax of the streaming readout after every token of test sample {i} (label {label}), "
        f"PyTorch net.step in float32 (computed, batch 1). Final prediction {final}; the "
        f"prediction is the true label from token {first} on." + agree if first else
        f"Softmax of the streaming readout after every token of test sample {i} (label {label}); "
        f"final prediction {final}." + agree)
    html = page.table(data["rows"], [("after token", "token", "r"), ("prediction (torch)", "prediction", "r"),
                                     ("confidence", lambda r: f"{r['confidence']:.3f}", "r"),
                                     ("p(true label)", lambda r: f"{r['p_true_label']:.3f}", "r"),
                                     ("prediction (C engine)", "cpu_fast_prediction", "r")])
    return {"figures": [fig], "caption": caption, "html": html}
