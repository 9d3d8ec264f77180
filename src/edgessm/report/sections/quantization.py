"""Float vs post-training quantization (PTQ) vs quantization-aware fine-tuning (QAFT) for the
shipped sMNIST, psMNIST and sCIFAR models, on the Loihi 2 spec (w8/s24/a24), beside the
published sCIFAR row of the Loihi 2 study."""
from __future__ import annotations

import time

import torch

from .. import page, plots, published
from ..context import figure
from ..stats import ci_text, wilson

KEY, TITLE = "quantization", "Float vs PTQ vs QAFT (sMNIST, psMNIST, sCIFAR)"
MODELS = (("smnist", "smnist", "smnist-loihi2"), ("psmnist", "psmnist", "psmnist-loihi2"),
          ("scifar", "scifar", "scifar-loihi2"))
#: the published float / PTQ / QAFT figures of each task (keys of report.published)
PUBLISHED = {"scifar": (("float", "m24_scifar_float"), ("PTQ", "m24_scifar_ptq"), ("QAFT", "m24_scifar_qaft"))}


def measure(ctx) -> dict:
    """Accuracy of each float model, of its PTQ (calibrated on `ctx.calibrate` training samples)
    and of its shipped QAFT model, all computed here on the report's test samples: the quantized
    models in eval mode run the integer arithmetic of the integer engine (bit-exact, as
    `deploy --check` verifies). Beside them, the full-test-set figures recorded in the shipped
    models when they were trained (cited from the checkpoints), and the published ones."""
    from ... import io
    from ...data import load_task
    from ...quant import quantize
    from ...train import evaluate
    ctx.need_model()      # as every section: a report whose model does not load shows errors only
    rows = []
    for task, fname, qname in (m for m in MODELS if m[0] in ctx.quant_tasks):
        try:
            test = load_task(task, "test", limit=None if ctx.limit is None else min(ctx.limit, ctx.quant_limit))
        except Exception as e:  # noqa: BLE001 - e.g. CIFAR-10 missing from the data root
            rows.append({"group": task, "label": "all", "kind": "software", "task": task, "model": fname,
                         "what": "-", "status": "error", "accuracy": None, "error": f"{type(e).__name__}: {e}"})
            continue
        g = f"{task} ({len(test)} test samples)"
        fmodel = None
        for what, label, kind, fn in (
                ("float", "float32", "software", lambda: fmodel),
                ("PTQ", "PTQ\nw8/s24/a24", "integer",
                 lambda: quantize(fmodel, "loihi2", calibration=load_task(task, "train", limit=ctx.calibrate).x)),
                ("QAFT", "QAFT\nw8/s24/a24", "integer", lambda: io.load(qname))):
            row = {"group": g, "label": label, "kind": kind, "task": task, "what": what,
                   "model": qname if what == "QAFT" else fname}
            t0 = time.time()
            try:
                if fmodel is None:
                    fmodel = io.load(fname).eval()
                m = fn().eval()
                with torch.no_grad():
                    r = evaluate(m, test, ctx.batch_size)
                meta = (getattr(m, "checkpoint_meta", {}) or {}).get("metrics", {}) if what != "PTQ" else {}
                row.update(accuracy=r["accuracy"], n=r["n"], status="ok",
                           recorded=meta.get("test_accuracy"), recorded_n=meta.get("test_n"))
            except Exception as e:  # noqa: BLE001 - a failing row is a row of the report
                row.update(status="error", accuracy=None, error=f"{type(e).__name__}: {e}")
            row["seconds"] = time.time() - t0
            row["accuracy_ci95"] = wilson(row.get("accuracy"), row.get("n"))
            rows.append(row)
    pub = []              # shown whether or not edgessm computed that task here
    for task, *_ in MODELS:
        for what, key in PUBLISHED.get(task, ()):
            f = published.get(key)
            pub.append({"group": f"{task}, published [{f.source.strip('[]')}]", "label": f"{what}\n(published)",
                        "kind": "published", "task": task, "what": what, "accuracy": f.value / 100,
                        "status": "published", "published": f.key, "source": f.source, "citation": f.citation})
    return {"rows": rows, "published": pub}


def render(ctx, data: dict) -> dict:
    rows, pub = data["rows"], data["published"]
    fig = figure(data["errors"], plots.accuracy, rows + pub, ctx.out, name="quantization",
                 title="float vs PTQ vs QAFT (Loihi 2 spec, integer arithmetic)")
    caption = (
        "Accuracy after the last token, computed on this machine on "
        + ("all test samples of each task (report --full): " if ctx.limit is None else
           f"the first {min(ctx.limit, ctx.quant_limit)} test samples of each task (at most quant_limit, "
           f"to keep the report short): ")
        + "float32 = the shipped float model; PTQ = post-training quantization of it to the loihi2 spec "
        f"(8-bit weights, 24-bit states and graded spikes), calibrated on {ctx.calibrate} training samples; "
        "QAFT = the shipped model after one epoch of quantization-aware fine-tuning. The quantized models run "
        "their integer arithmetic (bit-exact to the Loihi 2 integer engine). 95% interval: Wilson score "
        "interval on that many samples. 'Full test set (recorded)': the figure stored in the checkpoint when "
        "it was trained (10,000 test samples; PTQ full-set figures are in benchmarks/RESULTS.md). "
        "`edgessm report --full` computes every row on the full test sets. "
        + ("PUBLISHED (grey, hatched; not computed here): the float / PTQ / QAFT accuracies of the Loihi 2 "
           "study's own, larger sCIFAR model, on its full test set." if pub else ""))
    html = page.table(rows, [
        ("task", "task", "l"), ("model", "model", "l"), ("", "what", "l"),
        ("samples", lambda r: r.get("n"), "r"),
        ("accuracy", lambda r: page.pct(r.get("accuracy")) if r.get("accuracy") is not None else "-", "r"),
        ("95% interval", lambda r: ci_text(r.get("accuracy"), r.get("n")), "r"),
        ("full test set (recorded)", lambda r: (f"{100 * r['recorded']:.2f}% ({r['recorded_n']})"
                                                if r.get("recorded") is not None else ""), "r"),
        ("time", lambda r: f"{r['seconds']:.1f} s" if "seconds" in r else "", "r"),
        ("note", lambda r: r.get("error", ""), "l")])
    if pub:
        html += page.published_table([published.get(r["published"]) for r in pub])
    return {"figures": [fig], "caption": caption, "html": html}
