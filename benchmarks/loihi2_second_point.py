"""Benchmark: the Loihi 2 cost model against a second published measurement, with no constant fitted.

    PYTHONPATH=src python benchmarks/loihi2_second_point.py [--json]

The network (targets/loihi2/constants.py SECOND_POINT, source [A26]): a dense autoencoder
256-128-64-32-64-128-256 (8-bit weights, 24-bit activations) measured on a 16-chip Loihi 2 VPX
system, per inference. It is described to the model as a chain of dense layers
(targets/loihi2/network.py): layer sizes from the paper, steps per inference and activity from the
published activity profile (neuron updates / neurons per step, synaptic ops / synapses per step).
The model then maps it (cores), times a step (slowest core + barrier + hops) and charges its work
with the Loihi 1 per-op energies and the chip static power, exactly as it does for the S4D models.

Prints the prediction beside the published figures (ratio = modelled / published), then two
readings that are not predictions and are labelled so: the time per step the same work would take
with per-op times other sources give for Loihi 2, and the fall-through of one input through the
six layers.
"""
from __future__ import annotations

import argparse
import json

from edgessm.targets.loihi2 import Loihi2Config
from edgessm.targets.loihi2.network import compare_second_point, cost_network, from_counts
from edgessm.targets.loihi2.constants import SECOND_POINT


def fmt(v, unit):
    if unit == "s":
        return f"{v * 1e6:.1f} us"
    if unit == "J":
        return f"{v * 1e6:.1f} uJ"
    if unit == "W":
        return f"{v:.2f} W"
    return f"{v:,.0f}"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print the whole record as JSON too")
    a = ap.parse_args(argv)
    r = compare_second_point()
    c = r["cost"]
    # not predictions: the same described work under other per-op times and another reading of an inference
    net, steps = from_counts(SECOND_POINT["sizes"], SECOND_POINT["synops_per_inference"],
                             SECOND_POINT["neuron_updates_per_inference"])
    other = Loihi2Config().replace(time_synop_s=0.66e-9, time_neuron_update_s=4e-9)
    fast = cost_network(net, other, steps)
    r["readings"] = {
        "time_per_step_with_lava_dl_profiling_estimates_s": fast["time_per_step_s"],
        "latency_with_lava_dl_profiling_estimates_s": fast["per_inference"]["time_s"],
        "fall_through_of_six_layers_s": c["fall_through_s"]}
    if a.json:
        print(json.dumps(r, indent=1, default=float))
    print(f"{r['network']}; {r['system']} ({r['source']})")
    print(f"described as: {steps:.2f} steps per inference, activity {r['activity']:.3f} per layer per step; "
          f"model mapping {c['cores']} cores on {c['chips']} chip(s): {c['layer_cores']}")
    print("\n| figure | published | modelled | modelled / published | note |\n|---|---|---|---|---|")
    for x in r["rows"]:
        print(f"| {x['what']} | {fmt(x['published'], x['unit'])} | {fmt(x['modelled'], x['unit'])} | "
              f"{x['ratio']:.2f} | {x['note']} |")
    rd = r["readings"]
    print("\nNot predictions (labelled readings):")
    print(f"- time per step with the per-op times of Intel's Lava-DL profiling script for Loihi 2 "
          f"(0.66 ns per synaptic op, 4 ns per neuron op): "
          f"{rd['time_per_step_with_lava_dl_profiling_estimates_s'] * 1e6:.2f} us "
          f"(latency {rd['latency_with_lava_dl_profiling_estimates_s'] * 1e6:.1f} us)")
    print(f"- fall-through of one input through the six layers (6 steps): "
          f"{rd['fall_through_of_six_layers_s'] * 1e6:.1f} us")
    return r


if __name__ == "__main__":
    main()
