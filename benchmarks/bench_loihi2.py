"""Benchmark: a model on the loihi2 target: float vs PTQ (and QAFT) accuracy, bit-exactness
over the test set, Loihi 2 resources and modelled cost, sigma-delta threshold sweep, and
the calibration point. Prints JSON lines; appends a table to benchmarks/RESULTS.md.

    PYTHONPATH=src python benchmarks/bench_loihi2.py --model smnist --task smnist --check
    PYTHONPATH=src python benchmarks/bench_loihi2.py --model runs/psmnist/best --task psmnist \
        --qaft runs/psmnist_qaft/best --limit 2000
    PYTHONPATH=src python benchmarks/bench_loihi2.py --calibration-only

Full sMNIST test set (10,000 x 784 tokens, H=64, N=64, 4 layers): the integer engine's C
backend (default where a C compiler exists; --backend) takes about 35-45 us of CPU per token,
about 5 min on one core; the numpy backend about 3-4x as long; the integer PyTorch reference
(--check) about as long as the numpy backend again.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

import edgessm as es
from edgessm.data import load_task
from edgessm.quant import QuantSequenceModel, quantize
from edgessm.targets.loihi2 import CALIBRATION_POINT

RESULTS = Path(__file__).parent / "RESULTS.md"


def emit(rec: dict, rows: list):
    print(json.dumps(rec, default=float), flush=True)
    rows.append(rec)


def float_accuracy(model, ds, bs=256) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(ds), bs):
            correct += int((model(ds.x[s:s + bs]).argmax(-1) == ds.y[s:s + bs]).sum())
    return correct / len(ds)


def deploy(q, ds, check: bool, bs: int, backend: str = "auto", **opts) -> dict:
    p = es.targets.get("loihi2").compile(q, **opts)
    p.set_backend(backend)
    t0, c0 = time.time(), time.process_time()
    correct = mism = 0
    for s in range(0, len(ds), bs):
        xb, yb = ds.x[s:s + bs], ds.y[s:s + bs]
        if check:
            r = p.check(xb, batch_size=bs, labels=yb)
            correct += r["correct"]
            mism += r["mismatches"]
        else:
            correct += int((p.run(xb)[:, -1].argmax(-1) == yb).sum())
    st = p.stats()
    tok, pipe = p.cost(mode="token"), p.cost(mode="pipelined")
    out = {"accuracy": correct / len(ds), "n": len(ds), "cores": p.resources()["cores"],
           "chips": p.resources()["chips"], "spike_sparsity": st["spike_sparsity"],
           "overflows": st["overflows"], "messages_per_token": sum(st["messages_per_token"].values()),
           "synops_per_token": sum(st["synops_per_token"].values()),
           "energy_per_token_j": tok.energy_per_token_j, "latency_per_token_s": tok.latency_per_token_s,
           "throughput_tokens_per_s": tok.throughput_tokens_per_s, "power_w": tok.power_w,
           "pipelined_energy_per_token_j": pipe.energy_per_token_j,
           "pipelined_throughput_tokens_per_s": pipe.throughput_tokens_per_s,
           "time_per_step_s": tok.assumptions["time_per_step_s"], "wall_s": time.time() - t0,
           "cpu_s": time.process_time() - c0, "engine_backend": p.engine.backend}
    if check:
        out["mismatches"] = mism
    return out


def calibration_point() -> dict:
    c = CALIBRATION_POINT
    torch.manual_seed(0)
    m = es.SequenceModel.from_preset("neuromorphic", d_input=c["d_input"], d_output=c["d_output"],
                                     d_model=c["d_model"], d_state=c["d_state"], n_layers=c["n_layers"])
    p = es.targets.get("loihi2").compile(m, "loihi2", calibration=torch.randn(8, 32, c["d_input"]))
    pipe = p.cost(mode="pipelined")
    return {"bench": "loihi2_calibration", "cores": p.resources()["cores"], "cores_published": c["cores"],
            "time_per_step_s": pipe.assumptions["time_per_step_s"],
            "time_per_step_published_s": c["time_per_step_s"], "power_w": pipe.power_w,
            "power_published_w": c["power_w"], "token_mode_power_w": p.cost(mode="token").power_w}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smnist")
    ap.add_argument("--task", default="smnist")
    ap.add_argument("--limit", type=int, default=None, help="first N test samples (default: all)")
    ap.add_argument("--specs", default="loihi2", help="comma-separated PTQ specs")
    ap.add_argument("--qaft", action="append", default=[], help="a QAFT checkpoint to deploy as well")
    ap.add_argument("--sigma-delta", default="", help="comma-separated thresholds (LSB) to sweep")
    ap.add_argument("--calibrate", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--check", action="store_true", help="compare with the quantized PyTorch model")
    ap.add_argument("--calibration-only", action="store_true")
    ap.add_argument("--no-append", action="store_true", help="do not append to RESULTS.md")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", choices=("auto", "c", "numpy"), default="auto",
                    help="integer engine backend (auto: C when a compiler is available)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows: list[dict] = []
    emit(calibration_point(), rows)
    if not a.calibration_only:
        model = es.load(a.model)
        te = load_task(a.task, "test", limit=a.limit)
        cal = load_task(a.task, "train", limit=a.calibrate).x
        if not isinstance(model, QuantSequenceModel):
            emit({"bench": "loihi2", "model": a.model, "task": a.task, "variant": "float (cpu)",
                  "accuracy": float_accuracy(model, te), "n": len(te)}, rows)
        for spec in [s for s in a.specs.split(",") if s]:
            q = quantize(model, spec, calibration=cal)
            emit({"bench": "loihi2", "model": a.model, "task": a.task, "variant": f"PTQ {spec}",
                  **deploy(q, te, a.check, a.batch_size, a.backend)}, rows)
        for path in a.qaft:
            q = es.load(path)
            emit({"bench": "loihi2", "model": path, "task": a.task, "variant": f"QAFT {q.spec.name}",
                  **deploy(q, te, a.check, a.batch_size, a.backend)}, rows)
        if a.sigma_delta:
            q = quantize(model, "loihi2", calibration=cal)
            for thr in [int(t) for t in a.sigma_delta.split(",")]:
                emit({"bench": "loihi2_sigma_delta", "model": a.model, "task": a.task,
                      "variant": f"PTQ loihi2, sigma-delta T={thr}",
                      **deploy(q, te, False, a.batch_size, a.backend, sigma_delta_threshold=thr)}, rows)
    if not a.no_append:
        append(rows, " ".join(["python"] + sys.argv))


def append(rows: list[dict], command: str):
    lines = [f"\n## bench_loihi2 ({datetime.date.today()})", "",
             f"`{command}` on {platform.machine()} {platform.processor() or ''} "
             f"({os.cpu_count()} CPUs), torch {torch.__version__}, edgessm {es.__version__}. "
             "Loihi 2 figures are modelled (targets/loihi2/constants.py), not measured.", ""]
    cal = [r for r in rows if r.get("bench") == "loihi2_calibration"]
    for r in cal:
        lines += ["| calibration (1-layer S4D, H=128, N=4, 3 inputs) | cores | time/step | power |",
                  "|---|---|---|---|",
                  f"| published [M24] | {r['cores_published']} | {r['time_per_step_published_s'] * 1e6:.1f} us "
                  f"| {r['power_published_w']:.3f} W |",
                  f"| model | {r['cores']} | {r['time_per_step_s'] * 1e6:.1f} us | {r['power_w']:.3f} W |", ""]
    runs = [r for r in rows if r.get("bench") in ("loihi2", "loihi2_sigma_delta")]
    if runs:
        lines += ["| model | task | variant | n | accuracy | mismatches | cores | energy/token | "
                  "latency/token | throughput (token / pipelined) | spike sparsity | overflows |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in runs:
            if "cores" not in r:
                lines.append(f"| {r['model']} | {r['task']} | {r['variant']} | {r['n']} | "
                             f"{r['accuracy']:.4f} | | | | | | | |")
                continue
            lines.append(
                f"| {r['model']} | {r['task']} | {r['variant']} | {r['n']} | {r['accuracy']:.4f} | "
                f"{r.get('mismatches', '')} | {r['cores']} | {r['energy_per_token_j'] * 1e6:.3f} uJ | "
                f"{r['latency_per_token_s'] * 1e6:.1f} us | {r['throughput_tokens_per_s']:.0f} / "
                f"{r['pipelined_throughput_tokens_per_s']:.0f} tok/s | {r['spike_sparsity']:.3f} | "
                f"{sum(r['overflows'].values())} |")
    with open(RESULTS, "a") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
