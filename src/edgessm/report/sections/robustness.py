"""Robustness of the crossbar deployment: accuracy vs write noise (on every array, and on the
encoder / mixing / decoder arrays only, where the weights' bit-width matters), stuck devices
and drift time, per model (its weight bit-width and whether it was trained hardware-aware or
post-training quantized), beside the published write-noise tolerance per bit-width."""
from __future__ import annotations

import numpy as np
import torch

from .. import page, plots, published, runs
from ..context import err, figure, log
from ..stats import ci_text, wilson

KEY, TITLE = "robustness", "Robustness of the crossbar deployment"


def _sweeps():
    from ...targets.crossbar.device import FIELDS
    noise = dict(xlabel="write-noise sigma (uS)", default=FIELDS["write_noise_sigma_us"][0], xscale="linear",
                 published=("imssa_noise_5bit", "imssa_noise_2bit"))
    return {
        "write_noise": dict(noise, title="write noise (constant sigma, all arrays)",
                            sets=lambda v: {"write_noise_sigma_us": v, "write_noise_slope": 0}),
        "write_noise_linear": dict(noise, title="write noise on encoder / mixing / decoder arrays only",
                                   sets=lambda v: {"write_noise_sigma_us": v, "write_noise_slope": 0,
                                                   "write_noise_arrays": "linear"}),
        "stuck": dict(title="stuck devices (half at G_max, half at G_min)",
                      xlabel="fraction of devices stuck (symlog)",
                      sets=lambda v: {"stuck_on_frac": v / 2, "stuck_off_frac": v / 2},
                      default=FIELDS["stuck_on_frac"][0] + FIELDS["stuck_off_frac"][0], xscale="symlog",
                      linthresh=1e-3),
        "drift": dict(title="conductance drift (global compensation on)", xlabel="time after programming (s)",
                      sets=lambda v: {"drift_time_s": v}, default=FIELDS["drift_time_s"][0], xscale="log"),
    }


def precision(model, sets: dict) -> dict:
    """Weight bit-width and how the model got it: hardware-aware training (a checkpoint with the
    crossbar metadata) or post-training quantization by the crossbar compile."""
    from ...targets.crossbar.device import FIELDS
    meta = (getattr(model, "checkpoint_meta", {}) or {}).get("hw") or {}
    bits = int(sets.get("weight_bits", meta.get("weight_bits", FIELDS["weight_bits"][0])))
    return {"weight_bits": bits, "training": "hardware-aware" if meta else "PTQ",
            "bits_text": "ternary (2-bit)" if bits == 2 else f"{bits}-bit"}


def study(path) -> dict:
    """The write-noise study's results file (benchmarks/bench_crossbar.py sweep --json) as panels
    of the robustness plot: one per (task, arrays with write noise), one curve per model.
    Returns {"source", "sweeps"}, or {"source", "note"} when there is no such file."""
    import json
    from pathlib import Path
    p = Path(path)
    if not p.is_file():
        return {"source": str(p), "note": f"no write-noise study results at {p} (made by "
                                          f"benchmarks/bench_crossbar.py sweep --json; see benchmarks/RESULTS.md)"}
    doc = json.loads(p.read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("points"), list):
        raise ValueError(f"{p} is not a bench_crossbar results file (no 'points' list)")
    groups: dict = {}
    for pt in doc["points"]:
        if pt.get("param") != "write_noise_sigma_us" or not isinstance(pt.get("accuracy"), dict):
            continue
        scope = (pt.get("fixed") or {}).get("write_noise_arrays", "all")
        groups.setdefault((pt["task"], scope), []).append(
            {"model": pt["model"], "value": float(pt["value"]), "accuracy": pt["accuracy"]["mean"],
             "accuracy_std": pt["accuracy"].get("std", 0.0), "n": pt.get("n"), "trials": len(pt.get("trials", [])),
             "source": pt.get("source", "")})
    sweeps = []
    for (task, scope), rows in sorted(groups.items()):
        rows.sort(key=lambda r: (r["model"], r["value"]))
        sweeps.append({"key": f"study_{task}_{scope}",
                       "title": f"{task}: write noise on {'every array' if scope == 'all' else scope + ' arrays'}",
                       "xlabel": "write-noise sigma (uS)", "xscale": "linear", "default": None,
                       "published": [published.get(k).to_dict() for k in ("imssa_noise_5bit", "imssa_noise_2bit")],
                       "rows": rows})
    return {"source": str(p), "updated": doc.get("updated_utc"), "sweeps": sweeps}


def measure(ctx) -> dict:
    from ...train.loop import evaluate
    ctx.need_xmodel()
    errors = []
    models = [(ctx.crossbar_model, ctx.xmodel, {})]
    for label, name, sets in ctx.robust_models or ():
        try:
            from ... import io
            models.append((label, io.load(name), dict(sets or {})))
        except Exception as e:  # noqa: BLE001
            errors.append({"where": label, "error": err(e)})
    defs = _sweeps()
    test = ctx.xtest
    sweeps, rows, model_info = [], [], []
    calib = None
    for label, model, msets in models:
        p = precision(model, msets)
        model_info.append({"model": label, **p, "sets": msets})
        if p["training"] == "PTQ" and calib is None:    # DAC/ADC ranges of a float model, from training inputs
            from ...data import load_task
            calib = load_task(ctx.crossbar_task, "train", limit=ctx.calibrate).x
    for key, values in ctx.robust_sweeps.items():
        d = defs.get(key)
        if d is None:
            errors.append({"where": key, "error": f"unknown sweep {key!r}; known: {', '.join(defs)}"})
            continue
        srows = []
        for (label, model, msets), info in zip(models, model_info):
            for v in values:
                sets = {**msets, **d["sets"](v)}
                row = {"sweep": key, "model": label, "value": v, "sets": sets, "n": len(test),
                       "weight_bits": info["weight_bits"], "training": info["training"]}
                try:
                    accs = []
                    for k in range(ctx.robust_devices):
                        extra = {"calibration": calib} if info["training"] == "PTQ" else {}
                        prog = runs.compile(model, "crossbar", **sets, seed=k, **extra)
                        accs.append(runs.evaluate(prog, test, batch_size=ctx.batch_size)["accuracy"])
                    row.update(accuracy=float(np.mean(accs)),
                               accuracy_std=float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
                               accuracy_trials=accs, accuracy_ci95=wilson(float(np.mean(accs)), len(test)))
                except Exception as e:  # noqa: BLE001
                    row.update(accuracy=None, error=err(e))
                    errors.append({"where": f"{key}={v} ({label})", "error": row["error"]})
                srows.append(row)
            log(f"  robustness {key}: " + ", ".join(
                f"{r['value']:g}->{r['accuracy']:.2f}" if r.get("accuracy") is not None else f"{r['value']:g}->err"
                for r in srows if r["model"] == label))
        sweeps.append({"key": key, "title": d["title"], "xlabel": d["xlabel"], "xscale": d["xscale"],
                       "linthresh": d.get("linthresh"), "default": d["default"],
                       "published": [published.get(k).to_dict() for k in d.get("published", ())],
                       "rows": srows})
        rows += srows
    with torch.no_grad():
        sw_acc = evaluate(ctx.xmodel, test)["accuracy"]
    ref = {"software": sw_acc, "chance": 1.0 / ctx.xmodel.config.d_output}
    out = {"rows": rows, "errors": errors, "models": model_info, "reference": ref,
           "sweeps": [{k: v for k, v in s.items() if k != "rows"} for s in sweeps]}
    if ctx.write_noise_study:
        try:
            out["study"] = study(ctx.write_noise_study)
        except Exception as e:  # noqa: BLE001
            errors.append({"where": f"write-noise study {ctx.write_noise_study}", "error": err(e)})
    return out


def render(ctx, data: dict) -> dict:
    sweeps = [{**s, "rows": [r for r in data["rows"] if r["sweep"] == s["key"]]} for s in data["sweeps"]]
    labels = {m["model"]: f"{m['model']} ({m['bits_text']}, {m['training']})" for m in data["models"]}
    fig = figure(data["errors"], plots.robustness, sweeps, data["reference"], ctx.out, labels=labels) \
        if sweeps else None
    only = len(data["models"]) == 1
    caption = (
        f"Simulated crossbar accuracy (computed by running the simulator, not modelled) on {ctx.crossbar_task} "
        f"({len(ctx.xtest)} test recordings), mean \u00b1 std over {ctx.robust_devices} device "
        f"instance(s) per point (seeds 0..{ctx.robust_devices - 1}); every other device parameter at the default "
        f"(vertical green line: the default device's value; its write noise is state dependent, 4.33 uS at G_min, "
        f"whereas the sweeps use a constant sigma). Dashed: software (float eval of {ctx.crossbar_model}); dotted: "
        f"chance. 95% interval: Wilson score interval of the mean accuracy on that many recordings. Grey dash-dotted lines on the write-noise panels: PUBLISHED [IMSSA] tolerances (5-bit weights "
        f"about 5 uS, 2-bit above ~15 uS; their chip and task, not computed here). Models: "
        + "; ".join(f"{labels[m['model']]}" for m in data["models"]) + ". "
        + ("Only the shipped hardware-aware ternary model is swept: no 5-bit or post-training-quantized crossbar "
           "model is shipped and nothing is trained for this report; pass robust_models=[(label, checkpoint, "
           "{'weight_bits': 5})] to sweep one beside it (benchmarks/RESULTS.md has 5-bit and ternary PTQ sweeps, "
           "with the commands)." if only else ""))
    parts = []
    for s in sweeps:
        parts.append(f"<h3>{page.esc(s['title'])}</h3>" + page.table(s["rows"], [
            ("model", lambda r: labels.get(r["model"], r["model"]), "l"),
            (s["xlabel"], lambda r: f"{r['value']:g}", "r"),
            ("settings", lambda r: ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in r["sets"].items()), "l"),
            ("samples", "n", "r"),
            ("accuracy", lambda r: page.pct(r["accuracy"]) if r.get("accuracy") is not None else "-", "r"),
            ("95% interval", lambda r: ci_text(r.get("accuracy"), r.get("n")), "r"),
            ("\u00b1 std", lambda r: page.pct(r.get("accuracy_std")) if r.get("accuracy") is not None else "", "r"),
            ("device instances", lambda r: ", ".join(f"{100 * a:.1f}%" for a in r.get("accuracy_trials", [])), "l"),
            ("note", lambda r: r.get("error", ""), "l")]))
    figs = [fig]
    st = data.get("study") or {}
    if st.get("sweeps"):
        figs.append(figure(data["errors"], plots.robustness, st["sweeps"], {}, ctx.out, name="robustness_study"))
        caption += (f" Second figure: the write-noise study (hardware-aware models trained at 2 and 5 bits the "
                    f"same way, and post-training-quantized ones), read from {st['source']} (updated "
                    f"{st.get('updated') or '?'}; the commands that made it are in benchmarks/RESULTS.md, "
                    f"'Write-noise study'), mean ± std over device instances.")
        for sw in st["sweeps"]:
            values = sorted({r["value"] for r in sw["rows"]})
            by = {}
            for r in sw["rows"]:
                by.setdefault(r["model"], {})[r["value"]] = r
            table = [{"model": m, **{v: d.get(v) for v in values}} for m, d in by.items()]
            parts.append(f"<h3>Study: {page.esc(sw['title'])}</h3>" + page.table(table, [
                ("model", "model", "l"),
                *[(f"{v:g} uS", (lambda r, v=v: f"{page.pct(r[v]['accuracy'])} ± {page.pct(r[v]['accuracy_std'])}"
                                 if r.get(v) else "-"), "r") for v in values]]))
    elif st.get("note"):
        parts.append(f"<p class='note'>{page.esc(st['note'])}</p>")
    parts.append(page.published_table(published.figures(KEY)))
    return {"figures": figs, "caption": caption, "html": "".join(parts)}
