"""`edgessm demo` (`make demo`): the shipped sMNIST model evaluated on the MNIST test set
in float, streamed token by token, deployed on the Loihi 2 integer engine beside float, the
shipped ternary spoken-digit model on simulated memristor crossbars, and the report."""
from __future__ import annotations

import logging
import time

import numpy as np
import torch


def progress_enabled() -> bool:
    from .progress import enabled
    return enabled()


def _log(msg: str):
    logging.getLogger("edgessm.demo").info(msg)


def _fast_us_per_token(model, x: np.ndarray) -> float | None:
    """Median latency per token of the C streaming engine at batch 1 (None without a C compiler)."""
    from .errors import EdgessmError
    from .targets.cpu import FastProgram
    try:
        prog = FastProgram(model)
    except EdgessmError as e:
        _log(f"  cpu-fast engine unavailable: {e}")
        return None
    return 1e6 * float(np.median(prog.stream_timed(x)[1]))


DEMO_TASKS = {"smnist": "mnist", "fsdd-01": "fsdd"}   # task -> the data set (download.SOURCES key)


def _reachable(url: str, timeout: float = 4.0) -> bool:
    """Whether a TCP connection to the URL's host opens within `timeout` (DNS included)."""
    import socket
    import threading
    import urllib.parse
    u = urllib.parse.urlparse(url)
    if u.scheme == "file":
        return True
    res = []

    def probe():
        try:
            socket.create_connection((u.hostname, u.port or (443 if u.scheme == "https" else 80)),
                                     timeout=timeout).close()
            res.append(True)
        except OSError:
            res.append(False)
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 1.0)
    return bool(res and res[0])


def prepare_data(tasks=tuple(DEMO_TASKS), offline: bool = False) -> dict:
    """For each task: "data root" when the data root has it, else "downloaded" (full set,
    with checksums) when the network reaches its source and `offline` is False, else "sample"
    (the package's embedded sample, with the reason)."""
    from .data import load_task
    from .data.download import SOURCES
    from .errors import DataError, MissingDataError
    status = {}
    for task in tasks:
        try:
            load_task(task, "test", limit=1)
            status[task] = {"data": "data root"}
            continue
        except MissingDataError:
            pass
        why = "offline (--offline)"
        if not offline:
            url = next(iter(SOURCES[DEMO_TASKS[task]].values())).url
            if _reachable(url):
                _log(f"{task}: data not in the data root; downloading the full set (checksummed)...")
                try:
                    load_task(task, "test", limit=1, download=True)
                    status[task] = {"data": "downloaded"}
                    continue
                except DataError as e:
                    why = f"download failed: {e}"
            else:
                why = f"no network ({url.split('/')[2]} unreachable)"
        from .data import sample
        _log(f"{task}: data not found and not downloaded ({why}); using {sample.describe(task)}")
        status[task] = {"data": "sample", "why": why, "what": sample.describe(task)}
    return status


def run_demo(args) -> dict:
    from .data import sample
    status = prepare_data(offline=getattr(args, "offline", False))
    sample.reset_used()
    with sample.fallback():
        result = _run(args, status)
    return result


def _run(args, status) -> dict:
    from . import io
    from .bench.trace import stream_trace
    from .deploy import Checkpoint, deploy
    from .data import load_task
    from .train import evaluate
    name = "smnist"
    model = io.load(name)
    limit = getattr(args, "limit", None)
    dlimit = getattr(args, "deploy_limit", 500)
    test = load_task("smnist", "test", limit=limit)
    rows = []
    _log(f"evaluating shipped model {name!r} on {len(test)} MNIST test digits (float, FFT convolution)...")
    t0 = time.time()
    with torch.no_grad():
        r = evaluate(model, test, 500, progress=progress_enabled())
    rows.append({"model": name, "engine": "cpu float32 (FFT conv)", "accuracy": r["accuracy"], "n": r["n"],
                 "seconds": time.time() - t0, "notes": "measured"})

    x, y = test[0]
    tr = stream_trace(model, x, int(y))
    pred = tr["pred"].tolist()
    conf = tr["probs"].max(-1).values.tolist()
    torch_us = 1e6 * sorted(tr["step_s"])[len(tr["step_s"]) // 2]
    fast_us = _fast_us_per_token(model, x.numpy().astype(np.float32))
    stream = {"label": int(y), "prediction": pred[-1], "confidence": conf[-1],
              "torch_us_per_token": torch_us, "fast_us_per_token": fast_us,
              "trace": {t: (pred[t - 1], conf[t - 1]) for t in (98, 196, 392, 588, 784)}}

    n_dep = min(dlimit, len(test)) if dlimit else len(test)
    try:
        qname, qmodel = "smnist-loihi2", io.load("smnist-loihi2")   # shipped, quantization-aware fine-tuned
        how = "QAFT w8/s24/a24"
    except Exception:  # noqa: BLE001 - without it, the float model is quantized here (PTQ)
        qname, qmodel, how = name, model, "PTQ w8/s24/a24"
    _log(f"running {n_dep} test digits token by token through the Loihi 2 integer engine ({qname}, {how})...")
    try:
        sub = load_task("smnist", "test", limit=n_dep)
        with torch.no_grad():
            fl = evaluate(model, sub, 500)
        rows.append({"model": name, "engine": "cpu float32 (same digits)", "accuracy": fl["accuracy"],
                     "n": fl["n"], "seconds": 0.0, "notes": "measured"})
        d = deploy(Checkpoint.from_model(qmodel, qname), "loihi2", task="smnist", limit=n_dep,
                   calibrate=getattr(args, "calibrate", 512))
        rows.append({"model": qname, "engine": "loihi2 (integer engine)", "accuracy": d.accuracy, "n": d.n,
                     "seconds": d.wall_s,
                     "notes": f"{how}; {d.resources['cores']} cores; modelled streaming (a token every step) "
                              + (f"{1e6 / piped.throughput_tokens_per_s:.1f} us and {piped.energy_per_token_j * 1e6:.1f} "
                                 f"uJ per token, " if (piped := d.cost_modes.get("pipelined")) else "")
                              + f"{d.cost.latency_per_token_s * 1e6:.0f} us for one token to fall through; "
                              f"overflows {sum(d.stats['overflows'].values())}"})
    except Exception as e:  # noqa: BLE001 - the demo shows what failed and goes on
        rows.append({"model": qname, "engine": "loihi2 (integer engine)", "error": f"{type(e).__name__}: {e}"})

    trials = getattr(args, "trials", 3)
    _log(f"running the shipped ternary spoken-digit model on {trials} simulated crossbar instances...")
    try:
        xm = io.load("fsdd01-ternary")
        ft = load_task("fsdd-01", "test")
        with torch.no_grad():
            sw = evaluate(xm, ft, 500)
        rows.append({"model": "fsdd01-ternary", "engine": "cpu (software, ternary)", "accuracy": sw["accuracy"],
                     "n": sw["n"], "seconds": 0.0, "notes": "measured"})
        d = deploy(Checkpoint.from_model(xm, "fsdd01-ternary"), "crossbar", task="fsdd-01", trials=trials)
        rows.append({"model": "fsdd01-ternary", "engine": "crossbar (default device)", "accuracy": d.accuracy,
                     "n": d.n, "seconds": d.wall_s,
                     "notes": f"+- {d.accuracy_std:.3f} over {trials} devices, {d.resources.get('arrays')} arrays, "
                              f"{d.cost.energy_per_token_j * 1e9:.1f} nJ/token, "
                              f"{d.cost.latency_per_token_s * 1e6:.2f} us/token (modelled)"})
    except Exception as e:  # noqa: BLE001
        rows.append({"model": "fsdd01-ternary", "engine": "crossbar (default device)",
                     "error": f"{type(e).__name__}: {e}"})

    for row in rows:
        row["data"] = "sample" if status.get(_ROW_TASK.get(row["model"], "smnist"), {}).get("data") == "sample" \
            else "full"
    result = {"model": name, "rows": rows, "stream": stream, "data": status}
    if not getattr(args, "no_report", False):
        from .report import build_report
        _log("writing the report...")
        try:
            result["report"] = str(build_report(getattr(args, "report", "report"), name))
        except Exception as e:  # noqa: BLE001
            result["report_error"] = f"{type(e).__name__}: {e}"
    if getattr(args, "json", False):
        from .fields import json_text
        print(json_text(result))
        return result
    _print(model, name, rows, stream, result)
    return result


_ROW_TASK = {"fsdd01-ternary": "fsdd-01"}


def _print(model, name, rows, stream, result):
    c = model.config
    print(f"\nedgessm demo: shipped model {name!r} ({c.preset} preset, H={c.d_model}, N={c.d_state}, "
          f"{c.n_layers} layers, {sum(p.numel() for p in model.parameters())} parameters)\n")
    print(f"{'model':<15} {'engine':<27} {'accuracy':>9} {'samples':>8} {'seconds':>8}  notes")
    for row in rows:
        if "error" in row:
            print(f"{row['model']:<15} {row['engine']:<27} {'-':>9} {'-':>8} {'-':>8}  {row['error']}")
            continue
        star = "*" if row.get("data") == "sample" else " "
        print(f"{row['model']:<15} {row['engine']:<27} {100 * row['accuracy']:>8.2f}%{star}{row['n']:>7} "
              f"{row['seconds']:>8.1f}  {row.get('notes', '')}")
    samp = {t: d for t, d in result.get("data", {}).items() if d["data"] == "sample"}
    if samp:
        print("\n* from the sample embedded in the package (the data root lacks the data set and it was not "
              "downloaded):")
        for t, d in samp.items():
            print(f"  {t}: {d['what']} ({d['why']})")
        print("  Full test sets: set EDGESSM_DATA to a data root holding them, or run with network access.")
    fast = f", C engine {stream['fast_us_per_token']:.0f} us" if stream["fast_us_per_token"] else ""
    print(f"\nstreaming test digit 0 (label {stream['label']}) token by token on this CPU "
          f"(per token: torch step {stream['torch_us_per_token']:.0f} us{fast}):")
    print(f"{'token':>6} {'pred':>5} {'confidence':>10}")
    for t, (p, cf) in stream["trace"].items():
        print(f"{t:>6} {p:>5} {cf:>10.3f}  {'#' * int(round(30 * cf))}")
    if "report" in result:
        print(f"\nreport: {result['report']}")
    elif "report_error" in result:
        print(f"\nreport failed: {result['report_error']}")
