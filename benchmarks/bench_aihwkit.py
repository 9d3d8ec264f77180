"""Cross-check of the crossbar device model against IBM aihwkit (``pip install edgessm[aihwkit]``).

    python benchmarks/bench_aihwkit.py --model fsdd-ternary [--devices reram_wan2022_prog,reram_wan2022,pcm_1h]
        [--instances 20] [--limit N] [--json FILE]

The model's linear arrays (encoder, mixing, decoder) get device instances from both simulators
with matched settings (``edgessm.bench.analog_xcheck.DEVICES``); the S4D blocks stay float and the
converters ideal on both sides. Prints the accuracy over instances (mean, std, standard error)
per simulator, their difference with its standard error, and the weight error per target level
(in units of the column's largest weight), then a markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="fsdd-ternary")
    p.add_argument("--task", help="default: the model's trained task")
    p.add_argument("--devices", default="reram_wan2022_prog,reram_wan2022,pcm_1h")
    p.add_argument("--instances", type=int, default=20)
    p.add_argument("--limit", type=int)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the full results here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from edgessm import io
    from edgessm.bench.analog_xcheck import DEVICES, available, compare
    from edgessm.data import load_task
    from edgessm.errors import ConfigError
    ok, why = available()
    if not ok:
        raise ConfigError(why)
    model = io.load(a.model)
    task = a.task or io.trained_task(model)
    test = load_task(task, "test", limit=a.limit, **io.trained_task_options(model, task))
    devices = [d.strip() for d in a.devices.split(",") if d.strip()]
    bad = [d for d in devices if d not in DEVICES]
    if bad:
        raise ConfigError(f"unknown device(s) {', '.join(bad)}; known: {', '.join(DEVICES)}")
    results = []
    for d in devices:
        r = compare(model, test.x, test.y, d, instances=a.instances,
                    log=lambda s: print(s, file=sys.stderr, flush=True))
        r.update(model=a.model, task=task, aihwkit_version=why)
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k not in ("edgessm", "aihwkit")}
                         | {s: {k: r[s][k] for k in ("mean", "std", "se")} for s in ("edgessm", "aihwkit")}),
              flush=True)
    rows = ["| device settings | float | edgessm crossbar | aihwkit | difference | weight error at +-1: mean, std (edgessm / aihwkit) | std at 0 (edgessm / aihwkit) |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        e, k = r["edgessm"], r["aihwkit"]

        def lv(side, level, key):
            v = side["levels"].get(level)
            return float("nan") if v is None else v[key]
        pm = lambda side: (lv(side, 1.0, "mean") - lv(side, -1.0, "mean")) / 2  # noqa: E731
        sd = lambda side: (lv(side, 1.0, "std") + lv(side, -1.0, "std")) / 2   # noqa: E731
        rows.append(f"| {r['device']} | {r['float']:.3f} | {e['mean']:.3f} +- {e['std']:.3f} (se {e['se']:.3f}) "
                    f"| {k['mean']:.3f} +- {k['std']:.3f} (se {k['se']:.3f}) | {r['difference']:+.3f} +- "
                    f"{r['difference_se']:.3f} | {pm(e):+.4f}, {sd(e):.4f} / {pm(k):+.4f}, {sd(k):.4f} "
                    f"| {lv(e, 0.0, 'std'):.4f} / {lv(k, 0.0, 'std'):.4f} |")
    print("\n".join(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    from common import run_main
    run_main(main)
