"""Token-by-token vs batched, on this CPU (measured) and on the modelled targets.

    python benchmarks/bench_study.py [--model smnist] [--record]

CPU rows are wall-clock measurements (1 thread). Loihi 2 and crossbar rows are the
targets' cost models (``program.cost``), whose constants and sources are in their tables.
"""
from __future__ import annotations

import argparse

import edgessm as es
from edgessm.bench.study import run_study

from common import append_results, emit


def modelled(model, task: str) -> list[dict]:
    """Cost-model rows: loihi2 for the model (PTQ on 256 training samples, work counted on 20
    test samples), crossbar for the shipped fsdd01-ternary when the model does not fit arrays."""
    from edgessm.deploy import deploy_dict as deploy
    rows = []
    for target, name, t in (("loihi2", model, task), ("crossbar", model, task),
                            ("crossbar", "fsdd01-ternary", "fsdd-01")):
        try:
            d = deploy(name, target, t, limit=20, calibrate=256,
                       name=name if isinstance(name, str) else None)
        except es.EdgessmError as e:
            rows.append({"target": target, "model": name if isinstance(name, str) else task, "error": str(e)})
            continue
        for c in (d["cost"], d.get("cost_pipelined")):
            if c:
                rows.append({"target": target, "model": name if isinstance(name, str) else task,
                             "mode": c["mode"], "latency_per_token_s": c["latency_per_token_s"],
                             "throughput_tokens_per_s": c["throughput_tokens_per_s"],
                             "energy_per_token_j": c["energy_per_token_j"], "power_w": c["power_w"]})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smnist")
    ap.add_argument("--record", action="store_true")
    a = ap.parse_args()
    model = es.load(a.model)
    rows = run_study(model)
    for r in rows:
        emit({"bench": "study", "model": a.model, **r})
    mod = modelled(model, "smnist")
    for r in mod:
        emit({"bench": "study-modelled", "model": a.model, **r})
    if a.record:
        t = ["| engine | mode | batch | L | p50 latency | p99 latency | tokens/s | memory |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            mem = r.get("state_bytes", r.get("peak_rss_growth_bytes", 0))
            t.append(f"| {r['engine']} | {r['mode']} | {r['batch']} | {r.get('seq_len', '-')} | "
                     f"{1e6 * r['p50_s']:.0f} us | {1e6 * r['p99_s']:.0f} us | "
                     f"{r['throughput_tokens_per_s']:.0f} | {mem / 1024:.0f} KiB |")
        for r in mod:
            if "error" in r:
                t.append(f"| {r['target']} (modelled, {r['model']}) | - | - | - | {r['error'][:80]} | | | |")
            else:
                t.append(f"| {r['target']} (modelled, {r['model']}) | {r['mode']} | 1 | - | "
                         f"{1e6 * r['latency_per_token_s']:.1f} us | - | {r['throughput_tokens_per_s']:.0f} | "
                         f"{1e9 * r['energy_per_token_j']:.2f} nJ/token (energy) |")
        append_results(f"Token-by-token vs batched, model {a.model}", t,
                       "token: one token of B streams per call (latency = one step); batched: B whole "
                       "sequences of length L by FFT convolution (latency = the whole batch). "
                       "Memory: state kept per batch (token) or peak RSS growth (batched).")


if __name__ == "__main__":
    main()
