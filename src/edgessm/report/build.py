"""Build the report: OUT/index.html, its PNGs and OUT/report.json with every plotted number.
Every figure is measured (or modelled by a target's cost model) when the report is made, and
the page says which, on how many samples; published figures (``published.py``) are labelled
as such, with their citation.

The sections (``sections/``, one module each, in page order): accuracy per target and
bit-width; float vs PTQ vs QAFT; energy, latency and throughput per target; Loihi 2 static vs
dynamic energy and per-layer synaptic ops and sparsity; the crossbar's tiling, conductances,
programming error and energy split; crossbar robustness (write noise per bit-width, stuck
devices, drift); token by token vs batched; streaming latency; per-token trace.

A target or section that fails is written into the report as an error; the report itself
only fails when it cannot write its files (or on an unknown option).
"""
from __future__ import annotations

import datetime
import os
import resource
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..fields import json_text
from . import page, plots
from .context import Ctx, Options, err, log
from .sections import KEYS, SECTIONS


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (tuple, set)):
        return list(o)
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)


def _command(out, model_name, task, limit, opts: Options) -> str:
    data = os.environ.get("EDGESSM_DATA")
    cmd = (f"EDGESSM_DATA={data} " if data else "") + f"edgessm report --out {out} --model {model_name} "
    cmd += "--full" if limit is None else f"--limit {limit}"
    if task:
        cmd += f" --task {task}"
    changed = opts.changed()
    if changed:
        cmd += "   # and in Python: build_report(..., " + ", ".join(f"{k}={v!r}" for k, v in changed.items()) + ")"
    return cmd


def _section(ctx: Ctx, mod) -> dict:
    """Measure, then render, one section; its failures become error entries."""
    sec = {"key": mod.KEY, "title": mod.TITLE, "errors": [], "notes": [], "png": None, "figures": []}
    t0 = time.time()
    log(f"section {mod.KEY}...")
    try:
        data = mod.measure(ctx)
        errors, notes = data.pop("errors", []), data.pop("notes", [])
        data["errors"] = sec["errors"] = errors
        sec["notes"] = notes
        frag = mod.render(ctx, data)
        data.pop("errors")
        sec.update(data)
        sec["figures"] = [f for f in frag.get("figures", []) if f]
        sec["png"] = sec["figures"][0] if sec["figures"] else None
        sec["caption"], sec["html"] = frag.get("caption", ""), frag.get("html", "")
    except Exception as e:  # noqa: BLE001 - a failing section is an error in the report
        sec["errors"].append({"where": "section", "error": err(e)})
        log(traceback.format_exc(limit=4))
    sec["seconds"] = time.time() - t0
    log(f"section {mod.KEY}: {sec['seconds']:.1f} s" + (f", {len(sec['errors'])} error(s)" if sec["errors"] else ""))
    return sec


def build_report(out, model_name: str = "smnist", task: str | None = None, limit: int | None = 200,
                 **options) -> Path:
    """Measure and write OUT/index.html, its PNGs and OUT/report.json; returns the HTML path.

    model_name / task / limit: the report's model on its first `limit` test samples (None: all
    of them, report --full). options: the keywords of :class:`~.context.Options` (their
    defaults and meaning are there); an unknown one is a ConfigError, raised before anything
    is written."""
    opts = Options.from_keywords(options)
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive integer or None (every test sample), got {limit!r}")
    if opts.sections is not None:
        bad = [k for k in opts.sections if k not in KEYS]
        if bad:
            raise ConfigError(f"unknown report section(s) {', '.join(map(str, bad))}; known: {', '.join(KEYS)}")
    plots.plt()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start, c_start = time.time(), _cpu_s()
    resolved = opts.resolved()
    meta = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": page.machine(), "versions": page.versions(),
            "command": _command(out, model_name, task, limit, opts),
            "data_root": os.environ.get("EDGESSM_DATA") or "~/.cache/edgessm",
            "model": model_name, "limit": limit, "options": resolved}
    old_threads = torch.get_num_threads()
    torch.set_num_threads(opts.threads)
    try:
        ctx = Ctx(out, model_name, limit, opts)
        ctx.load(task)
        from ..data import sample
        meta["embedded_sample"] = {t: sample.describe(t) for t in sample.used()}
        meta["task"] = ctx.task
        meta["models"] = _model_info(ctx)
        log(f"report: {model_name} on {len(ctx.test) if ctx.test is not None else '?'} {ctx.task} test samples, "
            f"{opts.crossbar_model} on {opts.crossbar_task} -> {out}")
        from ..progress import bar
        todo = [m for m in SECTIONS if opts.sections is None or m.KEY in opts.sections]
        built = [_section(ctx, m) for m in bar(todo, desc="report", unit="section")]
    finally:
        torch.set_num_threads(old_threads)
    meta["wall_s"] = time.time() - t_start
    meta["cpu_s"] = _cpu_s() - c_start
    try:
        meta["load_average_at_end"] = list(os.getloadavg())
    except OSError:
        pass
    doc = {"meta": meta, "sections": {s["key"]: {k: v for k, v in s.items() if k not in ("html", "key")}
                                      for s in built}}
    (out / "report.json").write_text(json_text(doc, indent=1, default=_jsonable))
    path = out / "index.html"
    title = f"edgessm report: {model_name} on {ctx.task}"
    path.write_text(page.render(title, _header(meta), built))
    log(f"report: done in {meta['wall_s']:.0f} s wall, {meta['cpu_s']:.0f} s CPU")
    return path


def _model_info(ctx: Ctx) -> dict:
    info = {}
    for name, m in ((ctx.model_name, ctx.model), (ctx.crossbar_model, ctx.xmodel)):
        if not name:
            continue
        if m is None:
            info[name] = {"error": ctx.load_errors.get("model" if name == ctx.model_name else "xmodel")}
            continue
        c = m.config
        cm = getattr(m, "checkpoint_meta", {}) or {}
        info[name] = {"preset": c.preset, "d_model": c.d_model, "d_state": c.d_state, "n_layers": c.n_layers,
                      "d_input": c.d_input, "d_output": c.d_output,
                      "parameters": int(sum(p.numel() for p in m.parameters())),
                      "metrics": {k: v for k, v in (cm.get("metrics") or {}).items() if isinstance(v, (int, float))}}
    return info


def _header(meta: dict) -> str:
    m, v = meta["machine"], meta["versions"]
    la = m.get("load_average_1_5_15min")
    facts = {
        "date": meta["date"],
        "machine": f"{m['cpu_model']}, {m['cores']} cores ({m['usable_cores']} usable)"
                   + (f", {m['memory_bytes'] / 2**30:.1f} GiB RAM" if m.get("memory_bytes") else ""),
        "load average (1/5/15 min) at start / end": (
            f"{' / '.join(f'{x:.2f}' for x in la)}  /  {' / '.join(f'{x:.2f}' for x in meta.get('load_average_at_end', []))}"
            if la else "-"),
        "process nice value": m.get("nice"),
        "versions": ", ".join(f"{k} {x}" for k, x in v.items()),
        "data root": meta["data_root"] + ("" if not meta.get("embedded_sample") else
                                          "; not found there, so from the package's embedded sample: " +
                                          "; ".join(f"{k}: {d}" for k, d in meta["embedded_sample"].items())),
        "models": "; ".join(
            (f"{k}: {i['preset']} preset, H={i['d_model']}, N={i['d_state']}, {i['n_layers']} layers, "
             f"{i['parameters']} parameters") if "error" not in i else f"{k}: {i['error']}"
            for k, i in meta.get("models", {}).items()),
        "report built in": f"{meta['wall_s']:.0f} s wall, {meta['cpu_s']:.0f} s CPU (this process)",
    }
    busy = la and m.get("usable_cores") and la[0] > 0.5 * m["usable_cores"]
    return (page.kv_table(facts)
            + f"<p>Regenerate with: <code>{page.esc(meta['command'])}</code></p>"
            + "<p><b>Measured</b> (blue in the plots and tables): wall-clock on this machine's CPU, and every "
              "accuracy (computed by running the model or the target's simulator). <b>Modelled</b> (orange, "
              "hatched): energy, latency and throughput of Loihi 2 and of the memristor crossbar, from the "
              "targets' cost models whose constants and sources are listed in targets/loihi2/constants.py and "
              "targets/crossbar/README.md; CPU energy is measured time times an assumed power, not a measurement. "
              "<b>Published</b> (grey, hatched): figures from the papers (report/published.py), each with its "
              "citation, shown beside edgessm's; never computed here.</p>"
            + ("<p class='err'>The machine was busy while this report was made (load average above half the "
               "cores): measured CPU times are pessimistic, their tails most of all.</p>" if busy else ""))
