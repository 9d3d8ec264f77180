"""Benchmark: the Loihi 2 token latency of a model, derived term by term, beside the measured
CPU engines and the published Loihi 2 vs Jetson Orin Nano ratios.

    PYTHONPATH=src python benchmarks/loihi2_latency.py [--model smnist-loihi2 --task smnist]

Prints one JSON object and a markdown table:
* the modelled time of one algorithmic step (the slowest core's synaptic ops and neuron
  updates, the barrier, the longest hop path, one spike), the number of populations a token
  crosses (one step each), and the two per-token figures that follow: the step time (a new
  token enters every step: streaming) and the fall-through (one token at a time);
* the measured per-token time of the same model on this CPU at batch 1: PyTorch's
  ``SequenceModel.step`` (a recurrent framework implementation, the kind the published study ran
  on its edge GPU) and the C streaming kernel;
* what the published ratios (~75x lower latency, ~1000x less energy per token than recurrent
  S4D on a Jetson Orin Nano, token by token) imply for the Jetson's time and energy per token
  under each reading of "latency per token".
"""
from __future__ import annotations

import argparse
import json

import torch

import edgessm as es
from edgessm.bench.study import token_by_token
from edgessm.data import load_task
from edgessm.report import published
from edgessm.targets.cpu import CPU_POWER

#: Published ratios of Meyer et al. 2024 (arXiv:2409.15022, abstract; report/published.py): Loihi 2
#: vs recurrent S4D on a Jetson Orin Nano, token-by-token processing.
PUBLISHED_LATENCY_RATIO = published.get("m24_latency_ratio").value
PUBLISHED_ENERGY_RATIO = published.get("m24_energy_ratio").value


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smnist-loihi2")
    ap.add_argument("--float-model", default="smnist", help="float model for the CPU engines")
    ap.add_argument("--task", default="smnist")
    ap.add_argument("--samples", type=int, default=20, help="test samples to count the work on")
    ap.add_argument("--steps", type=int, default=2000, help="timed CPU steps per engine")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    q = es.load(a.model)
    prog = es.targets.get("loihi2").compile(q)
    prog.run(load_task(a.task, "test", limit=a.samples).x)       # count the work on real tokens
    tm = prog.timing()
    tok, pipe = prog.cost(mode="token"), prog.cost(mode="pipelined")
    fl = es.load(a.float_model)
    fl.eval()
    cpu = {e: token_by_token(fl, 1, a.steps, engine=e)["p50_s"] for e in ("torch", "fast")}
    rec = {
        "model": a.model, "task": a.task,
        "time_per_step_s": tm["time_per_step_s"],
        "terms_s": {"busy (slowest population: %s)" % tm["slowest_population"]: tm["busy_max_s"],
                    "barrier sync": tm["barrier_sync_s"], "hops": tm["hops_s"], "spike": tm["spike_s"]},
        "depth_steps": tm["depth_steps"], "fall_through_s": tm["fall_through_s"],
        "energy_per_token_streaming_j": pipe.energy_per_token_j,
        "energy_per_token_one_at_a_time_j": tok.energy_per_token_j,
        "cpu_torch_step_s": cpu["torch"], "cpu_c_kernel_s": cpu["fast"],
        "implied_jetson_time_per_token_s": {
            "if the published latency is the step time": PUBLISHED_LATENCY_RATIO * tm["time_per_step_s"],
            "if it is the fall-through": PUBLISHED_LATENCY_RATIO * tm["fall_through_s"]},
        "implied_jetson_energy_per_token_j": {
            "streaming": PUBLISHED_ENERGY_RATIO * pipe.energy_per_token_j,
            "one token at a time": PUBLISHED_ENERGY_RATIO * tok.energy_per_token_j},
    }
    print(json.dumps(rec, indent=1, default=float))
    us = lambda s: f"{s * 1e6:.1f} us"
    rows = [("one algorithmic step (streaming: a new token every step)", us(tm["time_per_step_s"])),
            *[(f"  {k}", us(v)) for k, v in rec["terms_s"].items()],
            ("populations a token crosses (one step each)", str(tm["depth_steps"])),
            ("fall-through of one token (depth x step)", us(tm["fall_through_s"])),
            ("energy per token, streaming / one at a time",
             f"{pipe.energy_per_token_j * 1e6:.2f} / {tok.energy_per_token_j * 1e6:.2f} uJ"),
            (f"measured here, batch 1: PyTorch `step` ({a.float_model})", us(cpu["torch"])),
            (f"measured here, batch 1: C kernel ({a.float_model})", us(cpu["fast"])),
            ("Jetson time per token implied by 75x, latency = step time",
             us(rec["implied_jetson_time_per_token_s"]["if the published latency is the step time"])),
            ("Jetson time per token implied by 75x, latency = fall-through",
             us(rec["implied_jetson_time_per_token_s"]["if it is the fall-through"]))]
    print("\n| figure | value |\n|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    # every published figure of the Loihi 2 vs Jetson comparison beside this project's analogue:
    # measured CPU time per token (energy = time x the stated CPU power) over the modelled Loihi 2 step
    w = CPU_POWER["watts_per_core"]
    lat = {e: cpu[e] / tm["time_per_step_s"] for e in cpu}
    en = {e: cpu[e] * w / pipe.energy_per_token_j for e in cpu}
    rec["ratios_cpu_over_loihi2"] = {"latency": lat, "energy": en, "cpu_watts_per_core": w}
    ours = {"m24_energy_ratio": f"PyTorch step {en['torch']:.0f}x, C kernel {en['fast']:.1f}x",
            "m24_latency_ratio": f"PyTorch step {lat['torch']:.1f}x, C kernel {lat['fast']:.2f}x",
            "m24_throughput_ratio": f"PyTorch step {lat['torch']:.1f}x, C kernel {lat['fast']:.2f}x",
            "m24w_speed_ratio": f"PyTorch step {lat['torch']:.1f}x, C kernel {lat['fast']:.2f}x",
            "m24o_params": f"{sum(p.numel() for p in fl.parameters()):,} ({a.float_model})",
            "m24s_cores_small": f"{prog.resources()['cores']} (modelled, {a.model})",
            "m24s_cores_large": f"{prog.resources()['cores']} (modelled, {a.model})"}
    print(f"\n| published (S4D on Loihi 2 vs Jetson Orin Nano) | value | source | this project: measured CPU "
          f"over modelled Loihi 2 ({w:g} W per CPU core, stated) |\n|---|---|---|---|")
    for f in published.figures("loihi2-jetson"):
        print(f"| {f.what} | {f.text()} | {f.source} | {ours.get(f.key, '-')} |")
    return rec


if __name__ == "__main__":
    main()
