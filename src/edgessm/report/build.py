"""Build the report: every figure in it is measured (or modelled by a target's cost model)
when the report is made, on `limit` test samples, and the page says which.

Sections: accuracy per target and bit-width; energy, latency and throughput per target
and mode; crossbar robustness to write noise; the CPU streaming latency distribution;
the per-token prediction trace of one sample.
"""
from __future__ import annotations

import base64
import datetime
import html
import io as _io
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch


def _log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def _plt():
    try:
        import matplotlib
    except ImportError:
        from ..errors import EdgessmError
        raise EdgessmError("the report needs matplotlib: pip install 'edgessm[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out: Path, name: str) -> str:
    path = out / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path.name


def _accuracy_rows(model, test, limit: int, calib) -> tuple[list[dict], dict]:
    """Accuracy on each target; the programs are returned for the cost section."""
    from ..targets import available, evaluate_program, get
    rows, programs = [], {}
    plan = [("cpu", "float32", {}), ("loihi2", "loihi2 (w8/s24/a24)", {"calibration": calib}),
            ("crossbar", "crossbar (default device)", {"calibration": calib})]
    for target, label, opts in plan:
        if target not in available():
            continue
        t0 = time.time()
        try:
            prog = get(target).compile(model, **opts) if target == "cpu" else \
                get(target).compile(model, None, **opts)
            r = evaluate_program(prog, test, batch_size=100, limit=limit)
            programs[target] = prog
            rows.append({"target": target, "label": label, "accuracy": r["accuracy"], "n": r["n"],
                         "seconds": time.time() - t0})
        except Exception as e:  # noqa: BLE001 - a target that cannot run this model is reported
            rows.append({"target": target, "label": label, "error": f"{type(e).__name__}: {e}"})
        _log(f"  accuracy on {target}: {rows[-1].get('accuracy', rows[-1].get('error'))}")
    return rows, programs


def _cost_rows(programs: dict, tokens: int) -> list[dict]:
    rows = []
    for target, prog in programs.items():
        for mode in ("token", "pipelined"):
            try:
                c = prog.cost(tokens=tokens, mode=mode) if mode != "token" else prog.cost(tokens=tokens)
            except TypeError:
                continue
            rows.append({"target": target, "mode": c.mode, "measured": c.measured,
                         "energy_per_token_j": c.energy_per_token_j,
                         "latency_per_token_s": c.latency_per_token_s,
                         "throughput_tokens_per_s": c.throughput_tokens_per_s, "power_w": c.power_w})
    return rows


def _robustness(model, test, limit: int, calib, sigmas=(0.0, 5.0, 15.0, 30.0, 60.0)) -> list[dict]:
    from ..targets import available, evaluate_program, get
    if "crossbar" not in available():
        return []
    rows = []
    for s in sigmas:
        try:
            prog = get("crossbar").compile(model, None, calibration=calib, write_noise_sigma_us=str(s), seed="0")
            r = evaluate_program(prog, test, batch_size=100, limit=limit)
            rows.append({"write_noise_sigma_us": s, "accuracy": r["accuracy"], "n": r["n"]})
        except Exception as e:  # noqa: BLE001
            rows.append({"write_noise_sigma_us": s, "error": f"{type(e).__name__}: {e}"})
            break
    return rows


def build_report(out, model_name: str = "smnist", task: str | None = None, limit: int = 200) -> Path:
    """Measure and write OUT/index.html with its PNGs; returns the HTML path."""
    from .. import io
    from ..data import load_task
    from ..targets.cpu import FastProgram
    plt = _plt()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = io.load(model_name)
    task = task or (getattr(model, "checkpoint_meta", {}).get("run", {}).get("data", {}).get("task") or "smnist")
    test = load_task(task, "test", limit=limit)
    calib = load_task(task, "train", limit=256).x
    sections, data = [], {"model": model_name, "task": task, "limit": limit}
    _log(f"report: {model_name} on {len(test)} {task} test samples -> {out}")

    # 1. accuracy per target
    acc, programs = _accuracy_rows(model, test, limit, calib)
    data["accuracy"] = acc
    ok = [r for r in acc if "accuracy" in r]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar([r["label"] for r in ok], [100 * r["accuracy"] for r in ok], color=["#4c72b0", "#dd8452", "#55a868"][:len(ok)])
    for i, r in enumerate(ok):
        ax.text(i, 100 * r["accuracy"], f"{100 * r['accuracy']:.1f}%", ha="center", va="bottom")
    lo = min([100 * r["accuracy"] for r in ok] + [90])
    ax.set_ylim(max(0, lo - 10), 100)
    ax.set_ylabel(f"accuracy on {len(test)} test samples (%)")
    ax.set_title(f"{model_name} on {task}: accuracy per target")
    sections.append(("Accuracy per target and bit-width", _save(fig, out, "accuracy"), acc))

    # 2. cost per target and mode
    costs = _cost_rows(programs, test.x.shape[1])
    data["cost"] = costs
    if costs:
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
        labels = [f"{r['target']}\n{r['mode']}{' (meas.)' if r['measured'] else ''}" for r in costs]
        for ax, key, unit, f in zip(axes, ("energy_per_token_j", "latency_per_token_s", "throughput_tokens_per_s"),
                                    ("J / token", "s / token", "tokens / s"), (1, 1, 1)):
            ax.bar(labels, [r[key] for r in costs], color="#4c72b0")
            ax.set_yscale("log")
            ax.set_title(unit)
            ax.tick_params(axis="x", labelsize=7)
        fig.suptitle("cost per token: CPU measured (assumed power for energy), others modelled")
        sections.append(("Energy, latency and throughput per target and mode", _save(fig, out, "cost"), costs))

    # 3. robustness (crossbar)
    rob = _robustness(model, test, min(limit, 100), calib)
    data["robustness"] = rob
    okr = [r for r in rob if "accuracy" in r]
    if okr:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot([r["write_noise_sigma_us"] for r in okr], [100 * r["accuracy"] for r in okr], "o-")
        ax.set_xlabel("write noise sigma (uS)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"crossbar: accuracy vs write noise ({okr[0]['n']} samples, 1 device)")
        ax.grid(alpha=0.3)
        sections.append(("Robustness of the crossbar deployment", _save(fig, out, "robustness"), rob))

    # 4. streaming latency distribution (CPU, measured)
    fast = FastProgram(model)
    state = fast.init_state(1)
    x = test.x[0].numpy()
    times_fast, times_torch = [], []
    y = np.empty((1, model.config.d_output), dtype=np.float32)
    for t in range(x.shape[0]):
        t0 = time.perf_counter()
        fast.step_numpy(x[t:t + 1], state, y)
        times_fast.append(time.perf_counter() - t0)
    st = model.init_state(1)
    probs = []
    with torch.no_grad():
        for t in range(x.shape[0]):
            t0 = time.perf_counter()
            logits, st = model.step(test.x[0, t:t + 1], st)
            times_torch.append(time.perf_counter() - t0)
            probs.append(torch.softmax(logits[0], -1).numpy())
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = np.logspace(np.log10(min(times_fast) * 1e6 * 0.8), np.log10(max(times_torch) * 1e6 * 1.2), 60)
    ax.hist(np.array(times_fast) * 1e6, bins=bins, alpha=0.7, label="cpu-fast (C kernel)")
    ax.hist(np.array(times_torch) * 1e6, bins=bins, alpha=0.7, label="torch net.step")
    ax.set_xscale("log")
    ax.set_xlabel("latency per token (us), batch 1")
    ax.set_ylabel("tokens")
    ax.legend()
    lat = {"cpu_fast_p50_us": 1e6 * float(np.median(times_fast)), "cpu_fast_p99_us": 1e6 * float(np.percentile(times_fast, 99)),
           "torch_p50_us": 1e6 * float(np.median(times_torch)), "torch_p99_us": 1e6 * float(np.percentile(times_torch, 99))}
    data["latency"] = lat
    sections.append(("Streaming latency distribution (measured, this CPU)", _save(fig, out, "latency"), lat))

    # 5. per-token trace
    P = np.stack(probs)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    label = int(test.y[0])
    for k in range(P.shape[1]):
        ax.plot(P[:, k], lw=2.2 if k == label else 0.8, label=f"class {k}" if k == label else None)
    ax.set_xlabel("token")
    ax.set_ylabel("probability")
    ax.set_title(f"prediction after every token, test sample 0 (label {label})")
    ax.legend(loc="upper left")
    sections.append(("Per-token prediction trace", _save(fig, out, "trace"),
                     {"label": label, "final_prediction": int(P[-1].argmax())}))

    (out / "report.json").write_text(json.dumps(data, indent=2, default=float))
    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>edgessm report: {html.escape(model_name)}</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
            "img{max-width:100%;border:1px solid #ddd}pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:12px}</style>",
            "</head><body>", f"<h1>edgessm report: {html.escape(model_name)} on {html.escape(task)}</h1>",
            f"<p>{datetime.datetime.now().isoformat(timespec='seconds')}, Python {platform.python_version()}, "
            f"torch {torch.__version__}. Accuracies on the first {len(test)} test samples. CPU figures are "
            f"measured on this machine; Loihi 2 and crossbar figures come from the targets' cost models, "
            f"whose constants and sources are listed in their modules.</p>"]
    for title, png, table in sections:
        page += [f"<h2>{html.escape(title)}</h2>", f"<img src='{png}' alt='{html.escape(title)}'>",
                 f"<pre>{html.escape(json.dumps(table, indent=1, default=float))}</pre>"]
    page.append("</body></html>")
    path = out / "index.html"
    path.write_text("\n".join(page))
    return path
