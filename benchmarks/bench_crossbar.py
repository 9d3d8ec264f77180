"""Crossbar target: accuracy over device instances, robustness sweeps and cost.

    python benchmarks/bench_crossbar.py accuracy --model M [--set k=v ...] --task T --trials K [--limit N]
    python benchmarks/bench_crossbar.py plot --json RESULTS.json --task T --param P [--fixed k=v] --plot OUT.png
    python benchmarks/bench_crossbar.py table --json RESULTS.json --task T --param P [--fixed k=v]   (markdown)
    python benchmarks/bench_crossbar.py merge --json RESULTS.json --from PART.json [--from PART2.json ...]
    python benchmarks/bench_crossbar.py sweep --model NAME=M[:k=v,k=v] ... --task T --param write_noise_sigma_us
        --values 0,5,10 [--fixed write_noise_slope=0] --trials K --plot benchmarks/plots/crossbar_noise.png
        [--json benchmarks/results/crossbar_write_noise.json] [--drop 0.05]

``--json PATH`` merges the sweep into a results file (schema "edgessm-crossbar-sweep", version 1,
described in benchmarks/RESULTS.md): one point per (task, model, param, value, fixed settings),
a later run replacing the same point, and per (task, model, param) curve the first value at
which the mean falls ``--drop`` below the mean at the first value.

Every line printed is one JSON object (the figures and the command that made them). Accuracy
is the prediction after the last token; "software" is the hardware-aware model in float
arithmetic with quantized weights and converters and ideal devices (for a float model
without hw metadata: the float model itself).
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time

import torch


def _sets(pairs):
    out = {}
    for s in pairs or []:
        for kv in s.split(","):
            if kv:
                k, v = kv.split("=", 1)
                out[k.strip()] = v.strip()
    return out


def crossbar_accuracy(model, test, calib, trials: int, sets: dict, batch: int = 100) -> dict:
    from edgessm import targets
    T = targets.get("crossbar")
    accs, res, cost = [], None, None
    for k in range(trials):
        prog = T.compile(model, calibration=calib, **{"seed": k, **sets})
        correct = 0
        for s in range(0, len(test.y), batch):
            Y = prog.run(test.x[s:s + batch])
            correct += int((Y[:, -1].argmax(-1) == test.y[s:s + batch]).sum())
        accs.append(correct / len(test.y))
        if k == 0:
            res, cost = prog.resources(), prog.cost(tokens=test.x.shape[1]).to_dict()
            sats = prog.stats()["adc_saturations"]
    return {"mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "trials": accs, "arrays": res["arrays"], "utilization": res["utilization"],
            "energy_per_token_j": cost["energy_per_token_j"], "latency_per_token_s": cost["latency_per_token_s"],
            "breakdown": cost["breakdown"], "adc_saturations_trial0": sats,
            "devices": res["devices"], "programming_energy_j": res["programming_energy_j"],
            "programming_pulses": res["programming_pulses"], "verify_unconverged_trial0": res["verify_unconverged"]}


def software_accuracy(model, test, calib, sets: dict) -> float:
    from edgessm.targets.crossbar import HwSequenceModel, load_device, parse_options
    from edgessm.train.loop import evaluate
    meta = (getattr(model, "checkpoint_meta", {}) or {}).get("hw")
    if not meta and not sets:
        return evaluate(model, test)["accuracy"]
    dev = dict((meta or {}).get("device") or {})
    for k in ("weight_bits", "ssm_bits", "state_mode"):
        if meta and k in meta:
            dev[k] = meta[k]
    cfg = parse_options({**dev, **sets}, base=load_device("default"))
    m = HwSequenceModel.from_float(model, cfg)
    if not m.calibrated:
        m.calibrate(calib[:cfg.calibrate])
    m.eval()
    return evaluate(m, test)["accuracy"]


SCHEMA, SCHEMA_VERSION = "edgessm-crossbar-sweep", 1


def _key(r) -> tuple:
    return (r["task"], r["model"], r["param"], json.dumps(r.get("fixed") or {}, sort_keys=True), r["value"])


def threshold(points: list[dict], drop: float):
    """First value (in increasing order) whose mean accuracy is more than `drop` below the mean at
    the smallest value; None if no point falls that far."""
    pts = sorted(points, key=lambda r: r["value"])
    ref = pts[0]["accuracy"]["mean"]
    for r in pts[1:]:
        if r["accuracy"]["mean"] < ref - drop:
            return r["value"]
    return None


def write_results(path: str, rows: list[dict], drop: float) -> dict:
    """Merge sweep points into the JSON results file at `path` (created with its folder if
    missing) and recompute the per-curve summary."""
    import datetime
    import os
    import platform
    old = {}
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old.get("schema") != SCHEMA:
            raise SystemExit(f"{path} is not a {SCHEMA} results file")
    pts = {_key(r): r for r in old.get("points", [])}
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for r in rows:
        pts[_key(r)] = {**r, "measured_utc": now}
    points = sorted(pts.values(), key=_key)
    curves = {}
    for r in points:
        curves.setdefault(_key(r)[:4], []).append(r)
    summary = []
    for (task, model, param, fixed), rr in curves.items():
        ref = min(rr, key=lambda r: r["value"])
        summary.append({"task": task, "model": model, "param": param, "fixed": json.loads(fixed),
                        "reference_value": ref["value"], "reference_accuracy": ref["accuracy"]["mean"],
                        "drop": drop, "first_value_below": threshold(rr, drop),
                        "values": [r["value"] for r in sorted(rr, key=lambda r: r["value"])]})
    out = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "updated_utc": now,
           "machine": {"python": platform.python_version(), "torch": torch.__version__,
                       "cpus": os.cpu_count()},
           "points": points, "summary": summary}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".part"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, path)
    return out


def _load(spec: str):
    from edgessm import io
    name, _, rest = spec.partition("=") if "=" in spec.split(":")[0] else ("", "", spec)
    path, _, sets = rest.partition(":")
    return (name or path), io.load(path), _sets([sets])


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["accuracy", "sweep", "plot", "table", "merge"])
    p.add_argument("--model", action="append")
    p.add_argument("--task")
    p.add_argument("--from", dest="sources", action="append", default=[],
                   help="merge: results files whose points go into --json")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--limit", type=int)
    p.add_argument("--speaker-holdout")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--param")
    p.add_argument("--values")
    p.add_argument("--fixed", action="append", default=[])
    p.add_argument("--plot")
    p.add_argument("--xlabel")
    p.add_argument("--json", help="merge the sweep's points into this results file")
    p.add_argument("--drop", type=float, default=0.05, help="accuracy drop for the threshold in --json")
    a = p.parse_args(argv)
    if a.what == "merge":
        if not a.json or not a.sources:
            p.error("merge needs --json OUT and --from FILE")
        rows = []
        for src in a.sources:
            with open(src) as f:
                rows += json.load(f)["points"]
        out = write_results(a.json, rows, a.drop)
        print(json.dumps({"json": a.json, "points": len(out["points"])}))
        return 0
    if a.what in ("plot", "table"):
        if not (a.json and a.task and a.param and (a.plot or a.what == "table")):
            p.error(f"{a.what} needs --json, --task, --param" + (" and --plot" if a.what == "plot" else ""))
        with open(a.json) as f:
            pts = json.load(f)["points"]
        fixed = _sets(a.fixed)
        rows = [r for r in pts if r["task"] == a.task and r["param"] == a.param and (r.get("fixed") or {}) == fixed]
        if not rows:
            p.error(f"no points for task {a.task}, param {a.param}, fixed {fixed} in {a.json}")
        if a.what == "table":
            print(table_rows(rows, a.param, a.drop))
            return 0
        plot_rows(rows, a.param, a.task, a.plot, a.xlabel)
        print(json.dumps({"plot": a.plot, "points": len(rows)}))
        return 0
    if not (a.model and a.task):
        p.error(f"{a.what} needs --model and --task")
    torch.set_num_threads(1)
    from edgessm.data import load_task
    kw = {"speaker_holdout": a.speaker_holdout} if a.speaker_holdout else {}
    test = load_task(a.task, "test", limit=a.limit, **kw)
    calib = load_task(a.task, "train", limit=256, **kw).x
    cmd = "python benchmarks/bench_crossbar.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    rows = []
    for spec in a.model:
        name, model, msets = _load(spec)
        sets = {**msets, **_sets(a.set)}
        if a.what == "accuracy":
            t0 = time.time()
            sw = software_accuracy(model, test, calib, {k: v for k, v in sets.items()
                                                         if k in ("weight_bits", "ssm_bits", "state_mode")})
            xb = crossbar_accuracy(model, test, calib, a.trials, sets)
            row = {"model": name, "task": a.task, "n": len(test.y), "sets": sets, "software_accuracy": sw,
                   "crossbar_accuracy": xb, "seconds": time.time() - t0, "command": cmd}
            print(json.dumps(row), flush=True)
            rows.append(row)
        else:
            for v in a.values.split(","):
                s2 = {**sets, **_sets(a.fixed), a.param: v}
                xb = crossbar_accuracy(model, test, calib, a.trials, s2)
                row = {"model": name, "source": spec, "task": a.task, "n": len(test.y), "param": a.param,
                       "value": float(v), "sets": s2, "fixed": _sets(a.fixed),
                       "accuracy": {"mean": xb["mean"], "std": xb["std"]}, "trials": xb["trials"],
                       "cost_trial0": {k: xb[k] for k in ("arrays", "devices", "energy_per_token_j",
                                                          "programming_energy_j", "programming_pulses",
                                                          "verify_unconverged_trial0")},
                       "command": cmd}
                print(json.dumps(row), flush=True)
                rows.append(row)
    if a.json and a.what == "sweep":
        write_results(a.json, rows, a.drop)
    if a.plot and a.what == "sweep":
        plot_rows(rows, a.param, a.task, a.plot, a.xlabel)
        print(json.dumps({"plot": a.plot, "command": cmd}))


def table_rows(rows, param, drop: float) -> str:
    """Markdown: one line per model, mean +- std per value, and the first value `drop` below
    the first value's mean."""
    values = sorted({r["value"] for r in rows})
    head = f"| {param} | " + " | ".join(f"{v:g}" for v in values) + f" | first {param} {drop:g} below |"
    out = [head, "|---" * (len(values) + 2) + "|"]
    for name in dict.fromkeys(r["model"] for r in rows):
        rr = {r["value"]: r for r in rows if r["model"] == name}
        cells = [f"{rr[v]['accuracy']['mean']:.3f} +- {rr[v]['accuracy']['std']:.3f}" if v in rr else "-"
                 for v in values]
        t = threshold(list(rr.values()), drop)
        out.append(f"| {name} | " + " | ".join(cells) + f" | {'not reached' if t is None else f'{t:g}'} |")
    return "\n".join(out)


def plot_rows(rows, param, task, out, xlabel=None):
    """Accuracy (mean +- std over device instances) against the swept value, one curve per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name in dict.fromkeys(r["model"] for r in rows):
        rr = sorted((r for r in rows if r["model"] == name), key=lambda r: r["value"])
        ax.errorbar([r["value"] for r in rr], [r["accuracy"]["mean"] for r in rr],
                    yerr=[r["accuracy"]["std"] for r in rr], marker="o", capsize=3, label=name)
    trials = sorted({len(r["trials"]) for r in rows})
    ax.set_xlabel(xlabel or param)
    ax.set_ylabel(f"accuracy ({task}, {rows[0]['n']} test, {'/'.join(map(str, trials))} devices)")
    if param in ("drift_time_s",):
        ax.set_xscale("log")
    if param in ("stuck_on_frac",):
        ax.set_xscale("symlog", linthresh=1e-3)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
