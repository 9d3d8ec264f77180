"""The Loihi 2 mapping, step time and dynamic energy, as functions of a chain of populations.

One set of rules for every network the model costs: :class:`.program.Loihi2Program` (a quantized
S4D network, work counted by the integer engine) and :mod:`.network` (a described chain of dense
layers with given activity) both call these, with the constants of :mod:`.constants` held in a
:class:`.program.Loihi2Config` (or any object with the same attributes).

A population is a dict: ``name``, ``neurons``, ``synapses`` (non-zero incoming weights),
``w_bits``, ``max_fan_in`` (the widest neuron's incoming synapses) and ``from`` (the sending
population's name, or ``"input"`` for the host); optionally ``res_from``, a second sender (a
residual connection's block input). Its per-step work is a dict: ``synops`` (synaptic ops its
incoming graded spikes cause), ``neurons`` (neuron updates), ``messages_in`` (graded spikes it
receives from ``from``), ``hops`` and ``cores`` (from the mapping), and with a second sender
``res_messages_in`` and ``res_hops``.
"""
from __future__ import annotations

import math

from ...errors import ConfigError


def map_populations(pops: list[dict], c) -> dict:
    """Place each population on its own neuro cores (in chain order, row by row on the mesh).

    A population gets enough cores that its neurons, its memory (incoming synapses x weight bits +
    neurons x neuron_state_bytes) and its synaptic work per step (at most max_synops_per_core
    synapses) fit one core. Adds ``memory_bytes``, ``cores``, ``first_core`` and ``hops`` (mesh
    distance from its sender; 1 from the host; ``res_hops`` likewise from ``res_from``) to each
    population dict, in place. Returns
    ``{"populations", "cores", "chips", "depth"}``; a network larger than ``max_chips`` chips, or
    a neuron whose synapses overflow one core, is a ConfigError naming the populations."""
    core = 0
    for p in pops:
        mem = p["synapses"] * p["w_bits"] / 8 + p["neurons"] * c.neuron_state_bytes
        one = p["max_fan_in"] * p["w_bits"] / 8 + c.neuron_state_bytes
        if one > c.core_memory_bytes:
            raise ConfigError(f"population {p['name']}: one neuron's {p['max_fan_in']} input "
                              f"synapses need {one:.0f} B, more than a core's memory "
                              f"({c.core_memory_bytes} B); reduce d_model or the weight bits")
        k = max(1, math.ceil(p["neurons"] / c.max_neurons_per_core),
                math.ceil(mem / c.core_memory_bytes),
                math.ceil(p["synapses"] / max(c.max_synops_per_core, 1)))
        k = min(k, p["neurons"])
        p.update(memory_bytes=int(math.ceil(mem)), cores=k, first_core=core)
        core += k
    chips = math.ceil(core / c.neuro_cores_per_chip)
    if chips > c.max_chips:
        big = sorted(pops, key=lambda p: -p["cores"])[:3]
        raise ConfigError(
            f"the network needs {core} neuro cores = {chips} Loihi 2 chips, but max_chips = "
            f"{c.max_chips} allows {c.max_chips * c.neuro_cores_per_chip}; largest populations: "
            + ", ".join(f"{p['name']} ({p['cores']} cores: {p['neurons']} neurons, "
                        f"{p['memory_bytes']} B)" for p in big)
            + "; use a smaller model or --set max_chips=N")
    syn_total = sum(p["synapses"] for p in pops)
    if syn_total > c.max_synapses_per_chip * c.max_chips:
        raise ConfigError(f"the network has {syn_total} synapses, more than "
                          f"{c.max_synapses_per_chip} per chip x {c.max_chips} chips")

    def pos(i):
        r, col = divmod(i % c.neuro_cores_per_chip, c.mesh_cols)
        return r, col
    by = {p["name"]: p for p in pops}

    def hops(sender, p):
        src = by.get(sender)
        if src is None:
            return 1        # from the host / embedded core at the mesh edge
        (r1, c1), (r2, c2) = pos(src["first_core"]), pos(p["first_core"])
        return max(1, abs(r1 - r2) + abs(c1 - c2))
    for p in pops:
        p["hops"] = hops(p["from"], p)
        if p.get("res_from"):
            p["res_hops"] = hops(p["res_from"], p)
    return {"populations": pops, "cores": core, "chips": chips, "depth": len(pops)}


def step_timing(P: dict, cores: int, depth: int, c) -> dict:
    """The time of one barrier-synchronised algorithmic step and of a fall-through of `depth` steps.

    P: population name -> per-step work (``synops``, ``neurons``, ``hops``, ``cores``). Every core
    integrates its synaptic ops and updates its neurons, then all `cores` meet at a barrier (its
    time interpolated between the published 1-tile and 32-tile figures), and the longest hop path
    and one spike latency follow. Returns every term, in seconds."""
    busy = {name: p["synops"] / p["cores"] * c.time_synop_s
            + p["neurons"] / p["cores"] * c.time_neuron_update_s for name, p in P.items()}
    slowest = max(busy, key=busy.get)
    sync = c.barrier_sync_min_s + (c.barrier_sync_max_s - c.barrier_sync_min_s) * (cores - 1) / 31
    hops = max(max(p["hops"], p.get("res_hops", 0)) for p in P.values()) * c.latency_hop_s
    t_step = busy[slowest] + sync + hops + c.latency_spike_in_tile_s
    return {"busy_s": busy, "slowest_population": slowest, "busy_max_s": busy[slowest],
            "barrier_sync_s": sync, "hops_s": hops, "spike_s": c.latency_spike_in_tile_s,
            "time_per_step_s": t_step, "depth_steps": depth, "fall_through_s": depth * t_step}


def dynamic_energy(P: dict, messages_out: float, c) -> dict:
    """Dynamic energy of one step's work, J by component: synaptic ops, neuron updates, graded-spike
    messages (received by each population from each of its senders, plus `messages_out` leaving
    the chain) and mesh hops."""
    syn = sum(p["synops"] for p in P.values())
    neu = sum(p["neurons"] for p in P.values())
    msgs = sum(p["messages_in"] + p.get("res_messages_in", 0.0) for p in P.values()) + messages_out
    hop_msgs = sum(p["messages_in"] * p["hops"] + p.get("res_messages_in", 0.0) * p.get("res_hops", 0)
                   for p in P.values())
    return {"synaptic": syn * c.energy_synop_j, "neurons": neu * c.energy_neuron_update_j,
            "messages": msgs * c.energy_spike_in_tile_j, "hops": hop_msgs * c.energy_hop_j}
