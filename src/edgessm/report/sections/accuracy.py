"""Accuracy per target and bit-width: the report's model (default the shipped ``smnist``) on
its first `limit` test samples on the cpu (float32), the integer engine with each PTQ spec and
the crossbar (a note when it does not fit the arrays); the crossbar model (default the shipped
``fsdd01-ternary``) in software and on the crossbar (mean +- std over device instances)."""
from __future__ import annotations

import time
import traceback

import torch

from .. import page, plots
from ..context import NotFit, acc_fields, err, figure, log, spec_info
from ..stats import ci_text, wilson

KEY, TITLE = "accuracy", "Accuracy per target and bit-width"


def measure(ctx) -> dict:
    from ...train.loop import evaluate
    rows = []

    def add(group, label, kind, target, model, task, fn, **extra):
        t0 = time.time()
        row = {"group": group, "label": label, "kind": kind, "target": target, "model": model, "task": task,
               **extra}
        try:
            row.update(fn())
            row["status"] = "ok"
        except NotFit as e:
            row.update(status="does not fit", error=f"does not fit: {e}", accuracy=None)
        except Exception as e:  # noqa: BLE001 - a failing target is a row of the report
            row.update(status="error", error=err(e), accuracy=None)
            log(traceback.format_exc(limit=3))
        row["seconds"] = time.time() - t0
        rows.append(row)
        shown = (f"{row['accuracy']:.4f}" if row.get("accuracy") is not None else row.get("error"))
        log(f"  accuracy {model} / {label.replace(chr(10), ' ')}: {shown} ({row['seconds']:.0f} s)")

    m, task = ctx.model_name, ctx.task
    ctx.need_model()
    g = f"{m} on {task} (first {len(ctx.test)} test samples)"
    add(g, "cpu\nfloat32", "cpu", "cpu", m, task, lambda: acc_fields(ctx.cpu_run()),
        precision="float32 (C engine, token by token)")
    for spec in ctx.specs:
        short, long = spec_info(spec)
        add(g, f"{ctx.int_target} int\n{short}", "integer", ctx.int_target, m, task,
            lambda spec=spec: acc_fields(ctx.int_run(spec)), spec=spec, precision=long)
    add(g, "crossbar\ndefault device", "crossbar", "crossbar", m, task, lambda: acc_fields(ctx.crossbar_main_run()),
        precision="crossbar default device (5-bit weights, 6-bit S4D blocks, 8-bit DAC/ADC)")

    if ctx.crossbar_model and ctx.crossbar_model != m:
        xm, xt = ctx.crossbar_model, ctx.crossbar_task
        if ctx.xmodel is None:
            rows.append({"group": xm, "label": "all", "kind": "software", "target": "-", "model": xm, "task": xt,
                         "status": "error", "accuracy": None,
                         "error": f"could not load {xm!r} / {xt!r}: {ctx.load_errors.get('xmodel')}"})
        else:
            gx = f"{xm} on {xt} ({len(ctx.xtest)} test samples)"
            prec = _hw_precision(ctx.xmodel)

            def software():
                with torch.no_grad():
                    r = evaluate(ctx.xmodel, ctx.xtest)
                return {"accuracy": r["accuracy"], "n": r["n"]}
            add(gx, "software\n(float eval)", "software", "cpu (torch)", xm, xt, software,
                precision=f"{prec}; the projected checkpoint in float arithmetic, no converters")
            add(gx, f"crossbar\ndefault device\n({ctx.trials} devices)", "crossbar", "crossbar", xm, xt,
                lambda: acc_fields(ctx.crossbar_run()),
                precision=f"{prec}; default device (HfO2 RRAM [Milo21], 8-bit DAC/ADC)")
    for r in rows:
        r["accuracy_ci95"] = wilson(r.get("accuracy"), r.get("n"))
    return {"rows": rows}


def _hw_precision(model) -> str:
    meta = (getattr(model, "checkpoint_meta", {}) or {}).get("hw") or {}
    return (f"weights {meta.get('weight_bits', '?')} b (2 = ternary), S4D blocks {meta.get('ssm_bits', '?')} b"
            if meta else "float")


def render(ctx, data: dict) -> dict:
    rows = data["rows"]
    m, task = ctx.model_name, ctx.task
    n_x = len(ctx.xtest) if ctx.xtest is not None else None
    caption = (
        f"Accuracy = prediction after the last token, computed (not modelled) by running every model on this "
        f"machine: {m} on the first {len(ctx.test)} {task} test samples; cpu float32 = the C streaming engine; "
        f"'{ctx.int_target} int' = the integer engine (bit-exact to the post-training-quantized model; PTQ "
        f"calibrated on {ctx.calibrate} training samples); crossbar = simulated memristor arrays with the "
        f"default device, mean \u00b1 std over {ctx.trials} device instances (seeds 0..{ctx.trials - 1}). "
        + (f"{ctx.crossbar_model}: the shipped hardware-aware ternary model on {ctx.crossbar_task} "
           f"({n_x if n_x is not None else '?'} test recordings, so one recording = "
           f"{100 / max(1, n_x or 1):.1f} points). " if ctx.crossbar_model else "")
        + "95% interval: the Wilson score interval of the accuracy on that many test samples (for crossbar "
          "rows, of the mean over device instances on the same samples). "
        + "Hatched empty bars: the target could not run the model (reason in the table).")
    html = page.table(rows, [
        ("model", "model", "l"), ("task", "task", "l"), ("target", "target", "l"),
        ("precision / spec", lambda r: r.get("precision") or r.get("spec") or "-", "l"),
        ("samples", lambda r: r.get("n"), "r"),
        ("accuracy", lambda r: page.pct(r.get("accuracy")) if r.get("accuracy") is not None else "-", "r"),
        ("95% interval", lambda r: ci_text(r.get("accuracy"), r.get("n")), "r"),
        ("\u00b1 std", lambda r: page.pct(r["accuracy_std"]) if r.get("accuracy_std") is not None else "", "r"),
        ("device instances", lambda r: ", ".join(f"{100 * a:.1f}%" for a in r.get("accuracy_trials", [])), "l"),
        ("time", lambda r: f"{r['seconds']:.1f} s", "r"),
        ("note", lambda r: r.get("error", ""), "l")])
    return {"figures": [figure(data["errors"], plots.accuracy, rows, ctx.out)], "caption": caption, "html": html}
