"""Build the report: OUT/index.html, one PNG per section and OUT/report.json with
every plotted number. Every figure is measured (or modelled by a target's cost model) when
the report is made, and the page says which, on how many samples.

Sections
  1. accuracy per target and bit-width: MODEL (default the shipped ``smnist``) on the first
     `limit` test samples: cpu float32, the integer engine with PTQ specs (loihi2 w8/s24/a24,
     w4, ternary), the crossbar (a note if the model does not fit its arrays); the shipped
     ``fsdd01-ternary`` on fsdd-01: software and crossbar (mean +- std over device instances)
  2. energy, latency and throughput per target and mode (CPU measured, others modelled)
  3. crossbar robustness: accuracy vs write noise, stuck devices, drift time
  4. token-by-token vs batched (``bench/study.py``), with the modelled targets' points
  5. streaming latency distribution on this CPU
  6. per-token prediction trace of one test sample

A target or section that fails is written into the report as an error; the report itself
only fails when it cannot write its files.
"""
from __future__ import annotations

import datetime
import logging
import os
import resource
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from ..fields import json_text
from . import page, plots
from .stats import ci_text, wilson

# ---- defaults (every one a keyword of build_report) -----------------------------------------
SPECS = ("loihi2", "w4", "ternary")
ROBUST_SWEEPS = {
    "write_noise": (0.0, 5.0, 10.0, 20.0, 40.0, 60.0),     # write_noise_sigma_us, constant (slope 0)
    "stuck": (0.0, 0.002, 0.01, 0.03, 0.1),                  # stuck_on_frac + stuck_off_frac, split evenly
    "drift": (1.0, 1e2, 1e4, 1e6, 1e8),                      # drift_time_s
}
STUDY = {"batches": (1, 8, 64, 256), "seq_lens": (256, 784), "steps": 100, "torch_steps": 20, "repeats": 2,
         "max_tokens": 1 << 16}


def _log(msg: str):
    logging.getLogger("edgessm.report").info(msg)


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


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


class _Ctx:
    """What the sections share: models, data, and the deploy results (for the cost sections)."""

    def __init__(self, out: Path, **kw):
        self.out = out
        self.__dict__.update(kw)
        self.deployed: dict = {}
        self.model = self.test = self.calib = None
        self.xmodel = self.xtest = None
        self.load_errors: dict = {}


def _spec_info(name: str) -> tuple[str, str]:
    """(short bar label, long description) of a quantization spec."""
    from ..quant.spec import QuantSpec
    try:
        s = QuantSpec.load(name)
    except Exception:  # noqa: BLE001 - a spec we cannot describe is still run (and fails there)
        return name, name
    m = s["mixing"]
    w = "ternary" if m.method == "ternary" else f"w{m.bits}"
    short = f"{w}/s{s['state'].bits}/a{s['activations'].bits}"
    long = (f"weights: encoder {s['encoder'].bits} b, mixing {m.bits} b ({m.method}), decoder "
            f"{s['decoder'].bits} b; S4D dA {s['dA'].bits} b, dB/dC {s['dB'].bits} b; state {s['state'].bits} b; "
            f"activations {s['activations'].bits} b")
    return short, long


def _acc(res: dict) -> dict:
    """accuracy fields of a deploy result (analog targets: mean, std over device instances)."""
    a = res["accuracy"]
    if isinstance(a, dict):
        return {"accuracy": a["mean"], "accuracy_std": a["std"], "trials": len(a["trials"]),
                "accuracy_trials": a["trials"], "n": res["n"]}
    return {"accuracy": a, "n": res["n"]}


# ---- 1. accuracy ----------------------------------------------------------------------------


def _section_accuracy(ctx: _Ctx, sec: dict):
    from ..deploy import deploy_dict as deploy
    from ..targets import get
    from ..train.loop import evaluate
    rows = []

    def add(group, label, kind, target, model, task, fn, **extra):
        t0 = time.time()
        row = {"group": group, "label": label, "kind": kind, "target": target, "model": model, "task": task,
               **extra}
        try:
            row.update(fn())
            row["status"] = "ok"
        except _NotFit as e:
            row.update(status="does not fit", error=f"does not fit: {e}", accuracy=None)
        except Exception as e:  # noqa: BLE001 - a failing target is a row of the report
            row.update(status="error", error=_err(e), accuracy=None)
            _log(traceback.format_exc(limit=3))
        row["seconds"] = time.time() - t0
        rows.append(row)
        shown = (f"{row['accuracy']:.4f}" if row.get("accuracy") is not None else row.get("error"))
        _log(f"  accuracy {model} / {label.replace(chr(10), ' ')}: {shown} ({row['seconds']:.0f} s)")

    m, task, lim = ctx.model_name, ctx.task, ctx.limit
    if ctx.model is None:
        raise RuntimeError(f"model {m!r} could not be loaded: {ctx.load_errors.get('model')}")
    g = f"{m} on {task} (first {len(ctx.test)} test samples)"

    def cpu():
        r = deploy(ctx.model, "cpu", task, lim, batch_size=ctx.batch_size, name=m)
        ctx.deployed["cpu"] = r
        return _acc(r)
    add(g, "cpu\nfloat32", "cpu", "cpu", m, task, cpu, precision="float32 (C engine, token by token)")

    for spec in ctx.specs:
        short, long = _spec_info(spec)

        def integer(spec=spec):
            r = deploy(ctx.model, ctx.int_target, task, lim, spec=spec, calibrate=ctx.calibrate,
                       batch_size=ctx.batch_size, name=m)
            ctx.deployed[("int", spec)] = r
            return _acc(r)
        add(g, f"{ctx.int_target} int\n{short}", "integer", ctx.int_target, m, task, integer, spec=spec,
            precision=long)

    def crossbar_main():
        try:   # does it map at all? (a 2-sample calibration is enough to find out, in a fraction of a second)
            get("crossbar").compile(ctx.model, calibration=ctx.calib[:2])
        except Exception as e:
            from ..errors import EdgessmError
            if isinstance(e, EdgessmError):
                raise _NotFit(str(e)) from None
            raise
        r = deploy(ctx.model, "crossbar", task, lim, trials=ctx.trials, calibrate=ctx.calibrate,
                   batch_size=ctx.batch_size, name=m)
        ctx.deployed["crossbar_main"] = r
        return _acc(r)
    add(g, "crossbar\ndefault device", "crossbar", "crossbar", m, task, crossbar_main,
        precision="crossbar default device (5-bit weights, 6-bit S4D blocks, 8-bit DAC/ADC)")

    if ctx.crossbar_model and ctx.crossbar_model != m:
        xm, xt = ctx.crossbar_model, ctx.crossbar_task
        if ctx.xmodel is None:
            rows.append({"group": xm, "label": "all", "kind": "software", "target": "-", "model": xm, "task": xt,
                         "status": "error", "accuracy": None,
                         "error": f"could not load {xm!r} / {xt!r}: {ctx.load_errors.get('xmodel')}"})
        else:
            gx = f"{xm} on {xt} ({len(ctx.xtest)} test samples)"
            meta = (getattr(ctx.xmodel, "checkpoint_meta", {}) or {}).get("hw") or {}
            prec = (f"weights {meta.get('weight_bits', '?')} b (2 = ternary), S4D blocks {meta.get('ssm_bits', '?')} b"
                    if meta else "float")

            def software():
                with torch.no_grad():
                    r = evaluate(ctx.xmodel, ctx.xtest)
                return {"accuracy": r["accuracy"], "n": r["n"]}
            add(gx, "software\n(float eval)", "software", "cpu (torch)", xm, xt, software,
                precision=f"{prec}; the projected checkpoint in float arithmetic, no converters")

            def crossbar():
                r = deploy(ctx.xmodel, "crossbar", xt, ctx.crossbar_limit, trials=ctx.trials,
                           batch_size=ctx.batch_size, name=xm)
                ctx.deployed["crossbar"] = r
                return _acc(r)
            add(gx, f"crossbar\ndefault device\n({ctx.trials} devices)", "crossbar", "crossbar", xm, xt, crossbar,
                precision=f"{prec}; default device (HfO2 RRAM [Milo21], 8-bit DAC/ADC)")

    for r in rows:
        r["accuracy_ci95"] = wilson(r.get("accuracy"), r.get("n"))
    sec["rows"] = rows
    sec["png"] = _plot(sec, plots.accuracy, rows, ctx.out)
    n_int = len(ctx.test)
    sec["caption"] = (
        f"Accuracy = prediction after the last token, computed (not modelled) by running every model on this "
        f"machine: {m} on the first {n_int} {task} test samples; cpu float32 = the C streaming engine; "
        f"'{ctx.int_target} int' = the integer engine (bit-exact to the post-training-quantized model; PTQ "
        f"calibrated on {ctx.calibrate} training samples); crossbar = simulated memristor arrays with the "
        f"default device, mean \u00b1 std over {ctx.trials} device instances (seeds 0..{ctx.trials - 1}). "
        + (f"{ctx.crossbar_model}: the shipped hardware-aware ternary model on {ctx.crossbar_task} "
           f"({len(ctx.xtest) if ctx.xtest is not None else '?'} test recordings, so one recording = "
           f"{100 / max(1, len(ctx.xtest) if ctx.xtest is not None else 1):.1f} points). "
           if ctx.crossbar_model else "")
        + "95% interval: the Wilson score interval of the accuracy on that many test samples (for crossbar "
          "rows, of the mean over device instances on the same samples). "
        + "Hatched empty bars: the target could not run the model (reason in the table).")
    sec["html"] = page.table(rows, [
        ("model", "model", "l"), ("task", "task", "l"), ("target", "target", "l"),
        ("precision / spec", lambda r: r.get("precision") or r.get("spec") or "-", "l"),
        ("samples", lambda r: r.get("n"), "r"),
        ("accuracy", lambda r: page.pct(r.get("accuracy")) if r.get("accuracy") is not None else "-", "r"),
        ("95% interval", lambda r: ci_text(r.get("accuracy"), r.get("n")), "r"),
        ("\u00b1 std", lambda r: page.pct(r["accuracy_std"]) if r.get("accuracy_std") is not None else "", "r"),
        ("device instances", lambda r: ", ".join(f"{100 * a:.1f}%" for a in r.get("accuracy_trials", [])), "l"),
        ("time", lambda r: f"{r['seconds']:.1f} s", "r"),
        ("note", lambda r: r.get("error", ""), "l")])


class _NotFit(Exception):
    pass


# ---- 2. cost --------------------------------------------------------------------------------


def _section_cost(ctx: _Ctx, sec: dict):
    from ..bench.study import batched, token_by_token
    from ..targets.cpu import CPU_POWER
    W = CPU_POWER["watts_per_core"]
    threads = torch.get_num_threads()
    rows = []
    if ctx.model is None and ctx.xmodel is None:
        raise RuntimeError(f"no model to measure: {ctx.load_errors}")
    if ctx.model is None:
        sec["errors"].append({"where": ctx.model_name, "error": f"not loaded: {ctx.load_errors.get('model')}"})
    m, L = ctx.model_name, (ctx.test.x.shape[1] if ctx.test is not None else None)

    def measured(label, model_name, engine, mode, batch, fn, note, plot=True):
        try:
            r = fn()
            tokens = batch * (r["seq_len"] or 1)
            p50 = r["p50_s"]
            watts = W * (1 if engine == "cpu-fast" else threads)
            rows.append({"label": label, "model": model_name, "target": "cpu", "engine": engine, "mode": mode,
                         "batch": batch, "seq_len": r["seq_len"], "measured": True,
                         "energy_per_token_j": watts * p50 / tokens, "latency_per_token_s": p50,
                         "throughput_tokens_per_s": tokens / p50, "power_w": watts, "p99_s": r["p99_s"],
                         "calls": r["calls"], "note": note, "plot": plot})
        except Exception as e:  # noqa: BLE001
            rows.append({"label": label, "model": model_name, "target": "cpu", "engine": engine, "mode": mode,
                         "measured": True, "error": _err(e), "plot": False})

    def modelled(label, model_name, target, key, note, plot=True):
        res = ctx.deployed.get(key)
        if res is None:
            rows.append({"label": label, "model": model_name, "target": target, "mode": "token", "measured": False,
                         "error": "no deploy result (see the accuracy section)", "plot": False})
            return
        for ck in ("cost", "cost_pipelined"):
            if ck not in res:
                continue
            c = res[ck]
            rows.append({"label": f"{label} {c['mode']}", "model": model_name, "target": target,
                         "engine": f"{target} model" + (f" ({res['spec']})" if res.get("spec") else ""),
                         "mode": c["mode"], "batch": 1, "seq_len": None,
                         "measured": False, "energy_per_token_j": c["energy_per_token_j"],
                         "latency_per_token_s": c["latency_per_token_s"],
                         "throughput_tokens_per_s": c["throughput_tokens_per_s"], "power_w": c["power_w"],
                         "breakdown": c.get("breakdown"), "note": note, "plot": plot,
                         "resources": {k: v for k, v in (res.get("resources") or {}).items()
                                       if isinstance(v, (int, float, str))}})

    if ctx.model is not None:
        measured(f"cpu-fast token B=1 ({m})", m, "cpu-fast", "token", 1,
                 lambda: token_by_token(ctx.model, 1, ctx.cost_steps, "fast"),
                 f"C engine, one token per call, p50 of {ctx.cost_steps} calls")
        measured(f"torch step B=1 ({m})", m, "torch-step", "token", 1,
                 lambda: token_by_token(ctx.model, 1, max(20, ctx.cost_steps // 10), "torch"),
                 f"PyTorch net.step, p50 of {max(20, ctx.cost_steps // 10)} calls")
        measured(f"torch conv B={ctx.cost_batch} L={L} ({m})", m, "torch-conv", "batched", ctx.cost_batch,
                 lambda: batched(ctx.model, ctx.cost_batch, L, ctx.study.get("repeats", 2)),
                 f"FFT convolution over {ctx.cost_batch} whole sequences; latency = the whole batch "
                 f"(the answer for the last token), energy and throughput per token of the batch")
        for i, spec in enumerate(ctx.specs):
            short, _ = _spec_info(spec)
            modelled(f"{ctx.int_target} {short} ({m})", m, ctx.int_target, ("int", spec),
                     f"cost model of targets/{ctx.int_target} (constants and sources in its README/constants.py)",
                     plot=(i == 0))
    if ctx.xmodel is not None:
        xm = ctx.crossbar_model
        modelled(f"crossbar ({xm})", xm, "crossbar", "crossbar",
                 "cost model of targets/crossbar (arrays, DAC/ADC, digital periphery; no buffers, control "
                 "or static power: a lower bound)")
        measured(f"cpu-fast token B=1 ({xm})", xm, "cpu-fast", "token", 1,
                 lambda: token_by_token(ctx.xmodel, 1, ctx.cost_steps, "fast"),
                 f"the same model as the crossbar rows, on this CPU; p50 of {ctx.cost_steps} calls")
    sec["rows"] = rows
    plotted = [r for r in rows if r.get("plot") and "error" not in r]
    sec["png"] = _plot(sec, plots.cost, plotted, ctx.out) if plotted else None
    for r in rows:
        if "error" in r:
            sec["errors"].append({"where": r["label"], "error": r["error"]})
    others = [s for s in ctx.specs[1:]]
    sec["caption"] = (
        f"Per token, batch 1 unless stated. MEASURED (blue): wall-clock on this CPU, {threads} thread, median "
        f"over the calls counted in the table; energy = measured time x an ASSUMED {W:.0f} W per busy core "
        f"(targets/cpu CPU_POWER: {CPU_POWER['source']}), no energy counter is read. MODELLED (orange, hatched): "
        f"the targets' cost models from the deploy runs of section 1 (loihi2: {ctx.int_target} with spec "
        f"{ctx.specs[0] if ctx.specs else '-'}; crossbar: {ctx.crossbar_model}, the only shipped model that "
        f"fits 64x64 arrays, so its rows are a different, smaller network than {m}). 'token' = one token passes "
        f"the whole network before the next enters; 'pipelined' = a new token every stage time. "
        + (f"The table also lists loihi2 with specs {', '.join(others)} (not plotted). " if others else ""))
    sec["html"] = page.table(rows, [
        ("target / engine", lambda r: r.get("engine") or r.get("target"), "l"), ("model", "model", "l"),
        ("mode", "mode", "l"), ("batch", "batch", "r"),
        ("kind", lambda r: "measured" if r["measured"] else "modelled", "l"),
        ("energy / token", lambda r: page.energy(r.get("energy_per_token_j")), "r"),
        ("latency / token", lambda r: page.seconds(r.get("latency_per_token_s")), "r"),
        ("p99", lambda r: page.seconds(r.get("p99_s")) if r.get("p99_s") else "", "r"),
        ("throughput", lambda r: page.rate(r.get("throughput_tokens_per_s")), "r"),
        ("power", lambda r: page.watts(r.get("power_w")), "r"),
        ("energy breakdown", lambda r: ", ".join(f"{k} {page.energy(v)}" for k, v in (r.get("breakdown") or {}).items()), "l"),
        ("note", lambda r: r.get("error") and f"error: {r['error']}" or r.get("note", ""), "l")],
        row_class=lambda r: "meas" if r["measured"] else "mod")


# ---- 3. robustness --------------------------------------------------------------------------


def _section_robustness(ctx: _Ctx, sec: dict):
    from ..targets import evaluate_program, get
    from ..targets.crossbar.device import FIELDS
    from ..train.loop import evaluate
    if not ctx.crossbar_model:
        raise RuntimeError("no crossbar model given (crossbar_model=None)")
    if ctx.xmodel is None:
        raise RuntimeError(f"{ctx.crossbar_model!r} could not be loaded: {ctx.load_errors.get('xmodel')}")
    T = get("crossbar")
    models = [(f"{ctx.crossbar_model}", ctx.xmodel, {})]
    for label, name, sets in ctx.robust_models or ():
        try:
            from .. import io
            models.append((label, io.load(name), dict(sets or {})))
        except Exception as e:  # noqa: BLE001
            sec["errors"].append({"where": label, "error": _err(e)})
    sweeps_def = {
        "write_noise": dict(title="write noise (constant sigma, all arrays)", xlabel="write-noise sigma (uS)",
                            sets=lambda v: {"write_noise_sigma_us": v, "write_noise_slope": 0},
                            default=FIELDS["write_noise_sigma_us"][0], xscale="linear"),
        "stuck": dict(title="stuck devices (half at G_max, half at G_min)",
                      xlabel="fraction of devices stuck (symlog)",
                      sets=lambda v: {"stuck_on_frac": v / 2, "stuck_off_frac": v / 2},
                      default=FIELDS["stuck_on_frac"][0] + FIELDS["stuck_off_frac"][0], xscale="symlog",
                      linthresh=1e-3),
        "drift": dict(title="conductance drift (global compensation on)", xlabel="time after programming (s)",
                      sets=lambda v: {"drift_time_s": v}, default=FIELDS["drift_time_s"][0], xscale="log"),
    }
    test = ctx.xtest
    sweeps, rows = [], []
    for key, values in ctx.robust_sweeps.items():
        d = sweeps_def.get(key)
        if d is None:
            sec["errors"].append({"where": key, "error": f"unknown sweep {key!r}; known: {', '.join(sweeps_def)}"})
            continue
        srows = []
        for label, model, msets in models:
            for v in values:
                sets = {**msets, **d["sets"](v)}
                row = {"sweep": key, "model": label, "value": v, "sets": sets, "n": len(test)}
                try:
                    accs = []
                    for k in range(ctx.robust_devices):
                        prog = T.compile(model, **{k2: str(v2) for k2, v2 in sets.items()}, seed=str(k))
                        accs.append(evaluate_program(prog, test, batch_size=ctx.batch_size)["accuracy"])
                    row.update(accuracy=float(np.mean(accs)),
                               accuracy_std=float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
                               accuracy_trials=accs)
                except Exception as e:  # noqa: BLE001
                    row.update(accuracy=None, error=_err(e))
                    sec["errors"].append({"where": f"{key}={v} ({label})", "error": row["error"]})
                srows.append(row)
            _log(f"  robustness {key}: " + ", ".join(
                f"{r['value']:g}->{r['accuracy']:.2f}" if r.get("accuracy") is not None else f"{r['value']:g}->err"
                for r in srows if r["model"] == label))
        sweeps.append({"key": key, "title": d["title"], "xlabel": d["xlabel"], "xscale": d["xscale"],
                       "linthresh": d.get("linthresh"), "default": d["default"], "rows": srows})
        rows += srows
    with torch.no_grad():
        sw_acc = evaluate(ctx.xmodel, test)["accuracy"]
    ref = {"software": sw_acc, "chance": 1.0 / ctx.xmodel.config.d_output}
    sec["sweeps"] = [{k: v for k, v in s.items() if k != "rows"} for s in sweeps]
    sec["reference"] = ref
    sec["rows"] = rows
    sec["png"] = _plot(sec, plots.robustness, sweeps, ref, ctx.out) if sweeps else None
    only = len(models) == 1
    sec["caption"] = (
        f"Simulated crossbar accuracy (computed by running the simulator, not modelled) of {ctx.crossbar_model} "
        f"on {ctx.crossbar_task} ({len(test)} test recordings), mean \u00b1 std over {ctx.robust_devices} device "
        f"instance(s) per point (seeds 0..{ctx.robust_devices - 1}); every other device parameter at the default "
        f"(vertical green line: the default device's value; its write noise is state dependent, 4.33 uS at G_min, "
        f"whereas the sweep uses a constant sigma). Dashed: software (float eval of the same checkpoint); dotted: "
        f"chance. "
        + ("Only the ternary hardware-aware model is plotted: no 5-bit hardware-aware model is shipped and "
           "nothing is trained for this report (benchmarks/RESULTS.md has 5-bit PTQ sweeps)." if only else ""))
    sec["html"] = "".join(
        f"<h3>{page.esc(s['title'])}</h3>" + page.table(s["rows"], [
            ("model", "model", "l"), (s["xlabel"], lambda r: f"{r['value']:g}", "r"),
            ("settings", lambda r: ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                             for k, v in r["sets"].items()), "l"),
            ("samples", "n", "r"),
            ("accuracy", lambda r: page.pct(r["accuracy"]) if r.get("accuracy") is not None else "-", "r"),
            ("\u00b1 std", lambda r: page.pct(r.get("accuracy_std")) if r.get("accuracy") is not None else "", "r"),
            ("device instances", lambda r: ", ".join(f"{100 * a:.1f}%" for a in r.get("accuracy_trials", [])), "l"),
            ("note", lambda r: r.get("error", ""), "l")])
        for s in sweeps)


# ---- 4. token-by-token vs batched -----------------------------------------------------------


def _section_study(ctx: _Ctx, sec: dict):
    from ..bench.study import modelled_points, run_study
    if ctx.model is None:
        raise RuntimeError(f"model {ctx.model_name!r} could not be loaded")
    st = ctx.study
    threads = torch.get_num_threads()
    rows = run_study(ctx.model, st["batches"], st["seq_lens"], st["steps"], threads,
                     torch_steps=st["torch_steps"], repeats=st["repeats"], max_tokens=st["max_tokens"],
                     errors="record")
    torch.set_num_threads(threads)
    for r in rows:
        r["model"] = ctx.model_name
    spec0 = ctx.specs[0] if ctx.specs else None
    if ("int", spec0) in ctx.deployed:
        for r in modelled_points(ctx.deployed[("int", spec0)], f"{ctx.int_target} ({ctx.model_name}, {spec0})"):
            rows.append({**r, "model": ctx.model_name})
    else:
        sec["notes"].append(f"no modelled {ctx.int_target} point: its deploy in section 1 failed or was not run")
    if "crossbar" in ctx.deployed:
        for r in modelled_points(ctx.deployed["crossbar"], f"crossbar ({ctx.crossbar_model})"):
            rows.append({**r, "model": ctx.crossbar_model})
    else:
        sec["notes"].append("no modelled crossbar point: its deploy in section 1 failed or was not run")
    for r in rows:
        if "error" in r:
            sec["errors"].append({"where": f"{r.get('engine')} batch {r.get('batch')}", "error": r["error"]})
    sec["rows"] = rows
    sec["png"] = _plot(sec, plots.study, rows, ctx.out)
    sec["findings"] = _study_findings(rows)
    sec["caption"] = (
        f"MEASURED on this CPU ({threads} thread), model {ctx.model_name}, random inputs. Token by token: one token "
        f"of B streams per call, latency = one call (p50 solid, p99 dotted), over {st['steps']} calls (cpu-fast) "
        f"or {st['torch_steps']} (torch-step) after 10 warm-up calls. Batched: B whole sequences of length L by FFT "
        f"convolution, latency = one forward over the batch (the earliest a prediction for the last token exists), "
        f"{st['repeats']} timed forwards after one warm-up; batches with B*L > {st['max_tokens']} skipped. "
        f"Throughput = tokens per median call (robust to other jobs preempting a few calls; the table also "
        f"gives it from the mean). MODELLED (big markers at B=1): the Loihi 2 and crossbar cost models from "
        f"section 1 (one stream; the crossbar point is {ctx.crossbar_model}, a smaller network). "
        + " ".join(sec["findings"]))
    sec["html"] = page.table(rows, [
        ("engine", "engine", "l"), ("mode", "mode", "l"), ("kind", lambda r: "measured" if r.get("measured") else "modelled", "l"),
        ("batch", "batch", "r"), ("L", lambda r: r.get("seq_len") or "-", "r"),
        ("latency p50", lambda r: page.seconds(r.get("p50_s")), "r"),
        ("latency p99", lambda r: page.seconds(r.get("p99_s")), "r"),
        ("throughput (median)", lambda r: page.rate(r.get("throughput_p50_tokens_per_s")), "r"),
        ("throughput (mean)", lambda r: page.rate(r.get("throughput_tokens_per_s")), "r"),
        ("memory / energy", _study_memory, "l"),
        ("calls", lambda r: r.get("calls", "-"), "r"),
        ("note", lambda r: r.get("error", ""), "l")],
        row_class=lambda r: "meas" if r.get("measured") else "mod")


def _study_memory(r: dict) -> str:
    if "state_bytes" in r:
        return f"state {r['state_bytes'] / 1024:.0f} KiB (all {r['batch']} streams)"
    if "activation_bytes_estimate" in r:
        rss = r.get("peak_rss_growth_bytes") or 0
        return (f"~{r['activation_bytes_estimate'] / 2**20:.1f} MiB working set per layer (computed)"
                + (f", peak RSS +{rss / 2**20:.1f} MiB" if rss else ""))
    if r.get("energy_per_token_j"):
        return f"{page.energy(r['energy_per_token_j'])}/token (modelled)"
    return "-"


def _study_findings(rows: list[dict]) -> list[str]:
    ok = [r for r in rows if "error" not in r and r.get("measured")]
    out = []
    tok1 = [r for r in ok if r["mode"] == "token" and r["batch"] == 1]
    conv1 = [r for r in ok if r["mode"] == "batched" and r["batch"] == 1]
    if tok1 and conv1:
        best = min(tok1, key=lambda r: r["p50_s"])
        c = min(conv1, key=lambda r: r["seq_len"])
        out.append(f"Latency at batch 1: the recurrence ({best['engine']}) answers a token in "
                   f"{page.seconds(best['p50_s'])}; the convolution needs {page.seconds(c['p50_s'])} for a sequence "
                   f"of L={c['seq_len']} ({c['p50_s'] / best['p50_s']:.0f}x longer): recurrence wins latency.")
    conv = [r for r in ok if r["mode"] == "batched"]
    tok = [r for r in ok if r["mode"] == "token"]
    if conv and tok:
        bc = max(conv, key=lambda r: r["throughput_p50_tokens_per_s"])
        bt = max(tok, key=lambda r: r["throughput_p50_tokens_per_s"])
        winner = "convolution" if bc["throughput_p50_tokens_per_s"] > bt["throughput_p50_tokens_per_s"] else "recurrence"
        out.append(f"Highest throughput measured: convolution {page.rate(bc['throughput_p50_tokens_per_s'])} "
                   f"(B={bc['batch']}, L={bc['seq_len']}) vs token by token {page.rate(bt['throughput_p50_tokens_per_s'])} "
                   f"({bt['engine']}, B={bt['batch']}): {winner} wins throughput"
                   + (" on this CPU." if winner == "convolution" else
                      " here (the C recurrence beats PyTorch's FFT convolution on this CPU at these sizes)."))
        # the smallest batch at which the convolution out-runs each token engine
        for eng in dict.fromkeys(r["engine"] for r in tok):
            best_tok = {r["batch"]: r["throughput_p50_tokens_per_s"] for r in tok if r["engine"] == eng}
            top = max(best_tok.values())
            wins = sorted(r["batch"] for r in conv if r["throughput_p50_tokens_per_s"] > top)
            if wins:
                out.append(f"The convolution out-runs {eng} at its best ({page.rate(top)}) from batch {wins[0]}.")
    return out


# ---- 5 & 6. streaming latency and per-token trace -------------------------------------------


def _stream_sample(ctx: _Ctx) -> dict:
    """Time every token of one test sample on the C engine and torch step; keep torch's probabilities."""
    if "stream" in ctx.deployed:
        return ctx.deployed["stream"]
    from ..targets.cpu import FastProgram
    i = ctx.trace_index
    x = ctx.test.x[i]
    label = int(ctx.test.y[i])
    out = {"index": i, "label": label, "tokens": int(x.shape[0]), "errors": []}
    try:
        y, tf = FastProgram(ctx.model).stream_timed(x)
        out["cpu-fast (C engine)"] = tf
        out["fast_pred"] = [int(k) for k in y.argmax(1)]
    except Exception as e:  # noqa: BLE001
        out["errors"].append({"where": "cpu-fast", "error": _err(e)})
    st = ctx.model.init_state(1)
    tt, probs = [], []
    with torch.no_grad():
        for t in range(x.shape[0]):
            t0 = time.perf_counter()
            logits, st = ctx.model.step(x[t:t + 1], st)
            tt.append(time.perf_counter() - t0)
            probs.append(torch.softmax(logits[0].float(), -1).numpy())
    out["torch net.step"] = tt
    out["probs"] = np.stack(probs)
    ctx.deployed["stream"] = out
    return out


def _section_latency(ctx: _Ctx, sec: dict):
    if ctx.model is None:
        raise RuntimeError(f"model {ctx.model_name!r} could not be loaded")
    s = _stream_sample(ctx)
    sec["errors"] += s["errors"]
    series = {k: s[k] for k in ("cpu-fast (C engine)", "torch net.step") if k in s}
    rows = []
    for k, ts in series.items():
        a = np.asarray(ts)
        rows.append({"engine": k, "tokens": int(a.size), "p50_s": float(np.median(a)),
                     "p90_s": float(np.percentile(a, 90)), "p99_s": float(np.percentile(a, 99)),
                     "max_s": float(a.max()), "mean_s": float(a.mean())})
    sec["rows"] = rows
    sec["samples_s"] = {k: [float(v) for v in ts] for k, ts in series.items()}
    sec["png"] = _plot(sec, plots.latency_hist, series, ctx.out)
    sec["caption"] = (
        f"MEASURED on this CPU: wall-clock time of every token of test sample {s['index']} "
        f"({s['tokens']} tokens, batch 1, {torch.get_num_threads()} thread) through the C streaming engine and "
        f"PyTorch net.step, one call per token, every token timed including the first (log-scale counts). The tail (p99, max) includes "
        f"preemption by other processes: see the load average in the header.")
    sec["html"] = page.table(rows, [("engine", "engine", "l"), ("tokens", "tokens", "r")] + [
        (k.replace("_s", ""), (lambda r, k=k: page.seconds(r[k])), "r")
        for k in ("p50_s", "p90_s", "p99_s", "max_s", "mean_s")])


def _section_trace(ctx: _Ctx, sec: dict):
    if ctx.model is None:
        raise RuntimeError(f"model {ctx.model_name!r} could not be loaded")
    s = _stream_sample(ctx)
    P = s["probs"]
    L = P.shape[0]
    marks = sorted({max(1, L * k // 8) for k in (1, 2, 4, 6, 8)})
    rows = [{"token": t, "prediction": int(P[t - 1].argmax()), "confidence": float(P[t - 1].max()),
             "p_true_label": float(P[t - 1, s["label"]]),
             "cpu_fast_prediction": s["fast_pred"][t - 1] if "fast_pred" in s else None} for t in marks]
    sec["rows"] = rows
    sec["label"] = s["label"]
    sec["final_prediction"] = int(P[-1].argmax())
    pred = P.argmax(1)
    first = None
    for t in range(L - 1, -1, -1):      # the first token from which the prediction stays the label
        if pred[t] != s["label"]:
            break
        first = t + 1
    sec["first_token_correct_from"] = first
    sec["probs_every_8th_token"] = P[::8].round(4).tolist()
    sec["png"] = _plot(sec, plots.trace, P, s["label"],
                       f"{ctx.model_name}: prediction after every token, {ctx.task} test sample {s['index']} "
                       f"(label {s['label']})", ctx.out)
    agree = ("" if "fast_pred" not in s else
             f" The C engine's prediction agrees with torch on {sum(int(a == b) for a, b in zip(s['fast_pred'], P.argmax(1)))}"
             f" of {L} tokens.")
    sec["caption"] = (
        f"Softmax of the streaming readout after every token of test sample {s['index']} (label {s['label']}), "
        f"PyTorch net.step in float32 (computed, batch 1). Final prediction {sec['final_prediction']}; the "
        f"prediction is the true label from token {first} on." + agree if first else
        f"Softmax of the streaming readout after every token of test sample {s['index']} (label {s['label']}); "
        f"final prediction {sec['final_prediction']}." + agree)
    sec["html"] = page.table(rows, [("after token", "token", "r"), ("prediction (torch)", "prediction", "r"),
                                    ("confidence", lambda r: f"{r['confidence']:.3f}", "r"),
                                    ("p(true label)", lambda r: f"{r['p_true_label']:.3f}", "r"),
                                    ("prediction (C engine)", "cpu_fast_prediction", "r")])


# ---- the report -----------------------------------------------------------------------------

def _section_quant(ctx: _Ctx, sec: dict):
    from .quant_table import section
    section(ctx, sec)


SECTIONS = (("accuracy", "Accuracy per target and bit-width", _section_accuracy),
            ("quantization", "Float vs PTQ vs QAFT (sMNIST, psMNIST, sCIFAR)", _section_quant),
            ("cost", "Energy, latency and throughput per target and mode", _section_cost),
            ("robustness", "Robustness of the crossbar deployment", _section_robustness),
            ("study", "Token by token vs batched", _section_study),
            ("latency", "Streaming latency distribution (measured, this CPU)", _section_latency),
            ("trace", "Per-token prediction trace", _section_trace))


def _plot(sec: dict, fn, *args):
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - the table is still written
        sec["errors"].append({"where": "plot", "error": _err(e)})
        _log(traceback.format_exc(limit=4))
        return None


def _command(out, model_name, task, limit, opts: dict) -> str:
    data = os.environ.get("EDGESSM_DATA")
    cmd = (f"EDGESSM_DATA={data} " if data else "") + f"edgessm report --out {out} --model {model_name} --limit {limit}"
    if task:
        cmd += f" --task {task}"
    changed = {k: v for k, v in opts.items() if v != _DEFAULTS.get(k)}
    if changed:
        cmd += "   # and in Python: build_report(..., " + ", ".join(f"{k}={v!r}" for k, v in changed.items()) + ")"
    return cmd


def build_report(out, model_name: str = "smnist", task: str | None = None, limit: int = 200, *,
                 specs=SPECS, int_target: str = "loihi2", calibrate: int = 256,
                 crossbar_model: str | None = "fsdd01-ternary", crossbar_task: str = "fsdd-01",
                 crossbar_limit: int | None = None, trials: int = 3,
                 robust_devices: int = 2, robust_sweeps: dict | None = None, robust_models=None,
                 study: dict | None = None, cost_batch: int = 64, cost_steps: int = 500,
                 trace_index: int = 0, threads: int = 1, batch_size: int = 256, sections=None,
                 quant_tasks=("smnist", "psmnist", "scifar"), quant_limit: int = 50) -> Path:
    """Measure and write OUT/index.html, its PNGs and OUT/report.json; returns the HTML path.

    model_name/task/limit: the model of sections 1, 2, 4-6 on its first `limit` test samples.
    specs: PTQ specs run on `int_target` ("loihi2" or "fixed"), calibrated on `calibrate`
    training samples. crossbar_model/crossbar_task/crossbar_limit (None: the whole test set):
    the crossbar model (sections 1-3); trials: its device instances in section 1.
    robust_devices, robust_sweeps ({"write_noise"|"stuck"|"drift": values}), robust_models
    ([(label, model, {field: value})] extra models to sweep): section 3. study: overrides of
    STUDY (batches, seq_lens, steps, torch_steps, repeats, max_tokens). cost_batch, cost_steps:
    the measured CPU rows of section 2. threads: torch threads while measuring (restored).
    sections: keys of SECTIONS to build (default all). quant_tasks: the tasks of the float / PTQ /
    QAFT section (their shipped TASK and TASK-loihi2 models), computed on min(limit, quant_limit)
    test samples each (all of them when limit is None: report --full)."""
    plots.plt()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start, c_start = time.time(), _cpu_s()
    opts = dict(specs=tuple(specs), int_target=int_target, calibrate=calibrate, crossbar_model=crossbar_model,
                crossbar_task=crossbar_task, crossbar_limit=crossbar_limit, trials=trials,
                robust_devices=robust_devices, robust_sweeps=dict(robust_sweeps or ROBUST_SWEEPS),
                robust_models=robust_models, study={**STUDY, **(study or {})}, cost_batch=cost_batch,
                cost_steps=cost_steps, trace_index=trace_index, threads=threads, batch_size=batch_size,
                quant_tasks=tuple(quant_tasks), quant_limit=quant_limit)
    meta = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": page.machine(), "versions": page.versions(),
            "command": _command(out, model_name, task, limit,
                                {k: v for k, v in opts.items() if k not in ("robust_sweeps", "study")} |
                                {"robust_sweeps": robust_sweeps, "study": study}),
            "data_root": os.environ.get("EDGESSM_DATA") or "~/.cache/edgessm",
            "model": model_name, "limit": limit, "options": opts}
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        ctx = _Ctx(out, model_name=model_name, limit=limit, **opts)
        _load(ctx, task, limit)
        from ..data import sample
        meta["embedded_sample"] = {t: sample.describe(t) for t in sample.used()}
        meta["task"] = ctx.task
        meta["models"] = _model_info(ctx)
        _log(f"report: {model_name} on {len(ctx.test) if ctx.test is not None else '?'} {ctx.task} test samples, "
             f"{crossbar_model} on {crossbar_task} -> {out}")
        built = []
        from ..progress import bar
        todo = [(k, t, f) for k, t, f in SECTIONS if sections is None or k in sections]
        for key, title, fn in bar(todo, desc="report", unit="section"):
            sec = {"key": key, "title": title, "errors": [], "notes": [], "png": None}
            t0 = time.time()
            _log(f"section {key}...")
            try:
                fn(ctx, sec)
            except Exception as e:  # noqa: BLE001 - a failing section is an error in the report
                sec["errors"].append({"where": "section", "error": _err(e)})
                _log(traceback.format_exc(limit=4))
            sec["seconds"] = time.time() - t0
            _log(f"section {key}: {sec['seconds']:.1f} s" + (f", {len(sec['errors'])} error(s)" if sec["errors"] else ""))
            built.append(sec)
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
    _log(f"report: done in {meta['wall_s']:.0f} s wall, {meta['cpu_s']:.0f} s CPU")
    return path


_DEFAULTS = dict(specs=SPECS, int_target="loihi2", calibrate=256, crossbar_model="fsdd01-ternary",
                 crossbar_task="fsdd-01", crossbar_limit=None, trials=3, robust_devices=2, robust_sweeps=None,
                 robust_models=None, study=None, cost_batch=64, cost_steps=500, trace_index=0, threads=1,
                 batch_size=256, quant_tasks=("smnist", "psmnist", "scifar"), quant_limit=50)


def _load(ctx: _Ctx, task, limit):
    from .. import io
    from ..data import load_task
    try:
        ctx.model = io.load(ctx.model_name).eval()
    except Exception as e:  # noqa: BLE001
        ctx.load_errors["model"] = _err(e)
    ctx.task = task or io.trained_task(ctx.model) or "smnist"
    try:
        ctx.test = load_task(ctx.task, "test", limit=limit)
        ctx.calib = load_task(ctx.task, "train", limit=max(2, ctx.calibrate)).x
    except Exception as e:  # noqa: BLE001
        ctx.load_errors["model"] = ctx.load_errors.get("model") or _err(e)
        ctx.model = None
    if ctx.crossbar_model:
        try:
            ctx.xmodel = io.load(ctx.crossbar_model).eval()
            ctx.xtest = load_task(ctx.crossbar_task, "test", limit=ctx.crossbar_limit)
        except Exception as e:  # noqa: BLE001
            ctx.load_errors["xmodel"] = _err(e)
            ctx.xmodel = None


def _model_info(ctx: _Ctx) -> dict:
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
              "targets/crossbar/README.md; CPU energy is measured time times an assumed power, not a measurement.</p>"
            + ("<p class='err'>The machine was busy while this report was made (load average above half the "
               "cores): measured CPU times are pessimistic, their tails most of all.</p>" if busy else ""))
