"""A described network on Loihi 2: a chain of dense (or sigma-delta) layers with given activity.

The loihi2 target costs a quantized S4D model from the work its integer engine counts. This
module costs a network that is only *described* (layer sizes, weight bits, the fraction of each
layer's inputs that send a graded spike per step) with the same mapping, step time and energy
rules (:mod:`.costmodel`) and the same constants (:mod:`.constants`). It is how the model is
checked against a published Loihi 2 measurement of another network
(``benchmarks/loihi2_second_point.py``, :data:`.constants.SECOND_POINT`).

    net = dense_chain([256, 128, 64, 32, 64, 128, 256], activity=0.25)
    net.work()                     # per step: synaptic ops, neuron updates, graded spikes
    cost_network(net, steps=15)    # cores, step time, energy per step and per inference

Work per step of a dense layer with ``n_in`` inputs, ``n_out`` neurons and activity ``a``:
``n_in * a`` graded spikes arrive, each fans out to ``n_out`` synapses (``n_in * a * n_out``
synaptic ops), and every one of the ``n_out`` neurons is updated (neurons update every step
whether or not a spike arrived, as in the compiled programs). The last layer's neurons send
``n_out * output_activity`` graded spikes off the chain.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

from ...errors import ConfigError
from .constants import SECOND_POINT
from .costmodel import dynamic_energy, map_populations, step_timing
from .program import Loihi2Config


def _fraction(x, what: str) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number in [0, 1], got {x!r}") from None
    if not 0.0 <= v <= 1.0 or math.isnan(v):
        raise ConfigError(f"{what} must be in [0, 1], got {x!r}")
    return v


def _count(x, what: str) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < 1:
        raise ConfigError(f"{what} must be a positive integer, got {x!r}")
    return int(x)


@dataclass(frozen=True)
class DenseLayer:
    """A dense layer of `n_out` neurons fed by `n_in` senders, `activity` of which send a graded
    spike in a step, with `w_bits`-bit weights."""
    name: str
    n_in: int
    n_out: int
    activity: float = 1.0
    w_bits: int = 8

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or self.name == "input":
            raise ConfigError(f"a layer needs a name other than 'input', got {self.name!r}")
        for k in ("n_in", "n_out", "w_bits"):
            object.__setattr__(self, k, _count(getattr(self, k), f"layer {self.name}: {k}"))
        object.__setattr__(self, "activity", _fraction(self.activity, f"layer {self.name}: activity"))


@dataclass(frozen=True)
class DescribedNetwork:
    """A chain of dense layers (each feeds the next); the first is fed by the host."""
    layers: tuple[DenseLayer, ...]
    output_activity: float = 1.0

    def __post_init__(self):
        layers = tuple(self.layers)
        if not layers or not all(isinstance(l, DenseLayer) for l in layers):
            raise ConfigError("a described network needs at least one DenseLayer")
        names = [l.name for l in layers]
        if len(set(names)) != len(names):
            raise ConfigError(f"layer names must be unique, got {names}")
        for a, b in zip(layers, layers[1:]):
            if a.n_out != b.n_in:
                raise ConfigError(f"layer {b.name} takes {b.n_in} inputs but layer {a.name} "
                                  f"has {a.n_out} neurons")
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "output_activity", _fraction(self.output_activity, "output_activity"))

    @property
    def neurons(self) -> int:
        """Neurons updated per step (every layer's neurons; the inputs live on the host)."""
        return sum(l.n_out for l in self.layers)

    @property
    def synapses(self) -> int:
        return sum(l.n_in * l.n_out for l in self.layers)

    def populations(self) -> list[dict]:
        """The layers as populations of :func:`.costmodel.map_populations`."""
        out, prev = [], "input"
        for l in self.layers:
            out.append({"name": l.name, "neurons": l.n_out, "synapses": l.n_in * l.n_out,
                        "w_bits": l.w_bits, "max_fan_in": l.n_in, "from": prev})
            prev = l.name
        return out

    def work(self) -> dict:
        """Work of one step: per layer (synaptic ops, neuron updates, graded spikes received) and
        the totals, graded spikes counting those received by every layer and those sent off the
        chain by the last one."""
        per = {l.name: {"synops": l.n_in * l.activity * l.n_out, "neurons": l.n_out,
                        "messages_in": l.n_in * l.activity} for l in self.layers}
        out = self.layers[-1].n_out * self.output_activity
        return {"layers": per, "messages_out": out,
                "synops": sum(p["synops"] for p in per.values()),
                "neuron_updates": sum(p["neurons"] for p in per.values()),
                "messages": sum(p["messages_in"] for p in per.values()) + out}


def dense_chain(sizes: Sequence[int], activity=1.0, w_bits: int = 8, output_activity=None,
                prefix: str = "dense") -> DescribedNetwork:
    """A chain of dense layers ``sizes[0] -> sizes[1] -> ... -> sizes[-1]`` (``sizes[0]`` inputs
    from the host). `activity`: one fraction for every layer, or one per layer (len(sizes) - 1);
    `output_activity` (default: the last layer's activity) for the spikes leaving the chain."""
    sizes = list(sizes) if not isinstance(sizes, (str, bytes)) else None
    if sizes is None or len(sizes) < 2:
        raise ConfigError("a dense chain needs at least two sizes (inputs and one layer)")
    sizes = [_count(s, f"sizes[{i}]") for i, s in enumerate(sizes)]
    n = len(sizes) - 1
    if isinstance(activity, (list, tuple)):
        if len(activity) != n:
            raise ConfigError(f"activity has {len(activity)} entries for {n} layers")
        acts = list(activity)
    else:
        acts = [activity] * n
    layers = tuple(DenseLayer(f"{prefix}{i}", sizes[i], sizes[i + 1], acts[i], w_bits) for i in range(n))
    return DescribedNetwork(layers, layers[-1].activity if output_activity is None else output_activity)


def from_counts(sizes: Sequence[int], synops: float, neuron_updates: float, w_bits: int = 8) -> tuple[DescribedNetwork, float]:
    """A dense chain whose work per inference is known from a profile (synaptic ops and neuron
    updates per inference) rather than from its activity: an inference spans
    ``steps = neuron_updates / neurons`` steps (every neuron is updated every step) and each step
    sends a uniform activity ``synops / (steps x synapses)``. Returns (network, steps)."""
    net = dense_chain(sizes, 1.0, w_bits)
    for v, what in ((synops, "synops"), (neuron_updates, "neuron_updates")):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or math.isinf(v):
            raise ConfigError(f"{what} per inference must be a positive number, got {v!r}")
    steps = neuron_updates / net.neurons
    activity = synops / (steps * net.synapses)
    if activity > 1.0:
        raise ConfigError(f"{synops:g} synaptic ops over {steps:.2f} steps is more than every input "
                          f"of every layer sending each step ({net.synapses} synapses): not a dense "
                          f"chain of these sizes")
    return dense_chain(sizes, activity, w_bits), steps


def cost_network(net: DescribedNetwork, config=None, steps: float = 1) -> dict:
    """Cores, step time and energy of a described network on Loihi 2, by the rules and constants
    the loihi2 target uses (`config`: a Loihi2Config, default its defaults; constants can be
    changed with ``Loihi2Config.from_sets([...])``). `steps`: algorithmic steps per inference.

    Returns the mapping (cores, chips, per-layer cores), the work of one step, every term of the
    step time, the dynamic energy of one step by component, the static power, and per inference:
    time (steps x step time), dynamic energy (steps x per step), static energy (static power x
    time) and their sum; also the fall-through of one input through the chain (depth x step)."""
    if not isinstance(net, DescribedNetwork):
        raise ConfigError(f"cost_network takes a DescribedNetwork, got {type(net).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, (int, float)) or not steps > 0 or math.isinf(steps):
        raise ConfigError(f"steps per inference must be a positive number, got {steps!r}")
    if config is None:
        config = Loihi2Config()
    mapping = map_populations(net.populations(), config)
    w = net.work()
    P = {p["name"]: {**w["layers"][p["name"]], "hops": p["hops"], "cores": p["cores"]}
         for p in mapping["populations"]}
    tm = step_timing(P, mapping["cores"], mapping["depth"], config)
    e = dynamic_energy(P, w["messages_out"], config)
    dyn_step = sum(e.values())
    static_w = config.static_power_chip_w * mapping["chips"]
    t_inf = steps * tm["time_per_step_s"]
    return {"cores": mapping["cores"], "chips": mapping["chips"], "depth_steps": mapping["depth"],
            "layer_cores": {p["name"]: p["cores"] for p in mapping["populations"]},
            "work_per_step": {k: w[k] for k in ("synops", "neuron_updates", "messages")},
            "timing": tm, "time_per_step_s": tm["time_per_step_s"], "fall_through_s": tm["fall_through_s"],
            "dynamic_per_step_j": dict(e), "dynamic_energy_per_step_j": dyn_step,
            "static_power_w": static_w, "steps": steps,
            "per_inference": {"time_s": t_inf, "dynamic_energy_j": steps * dyn_step,
                              "static_energy_j": static_w * t_inf,
                              "total_energy_j": steps * dyn_step + static_w * t_inf,
                              "synops": steps * w["synops"], "neuron_updates": steps * w["neuron_updates"],
                              "messages": steps * w["messages"]}}


def compare_second_point(config=None) -> dict:
    """The model's prediction for the published second measurement (:data:`.constants.SECOND_POINT`)
    beside the published figures, with no constant fitted to it.

    The network is described from the paper: the dense autoencoder's layer sizes and weight bits,
    and its work per inference from the published activity profile (:func:`from_counts`: the
    neuron-update count gives the steps per inference, the synaptic-op count the activity). So the
    synaptic-op and neuron-update rows agree by construction; cores, step time, latency, dynamic,
    static and total energy are predictions. Returns {"network", "steps", "activity", "cost",
    "rows"}; each row: what, published, modelled, ratio (modelled / published), unit, note."""
    S = SECOND_POINT
    net, steps = from_counts(S["sizes"], S["synops_per_inference"], S["neuron_updates_per_inference"],
                             S["w_bits"])
    c = cost_network(net, config, steps)
    inf = c["per_inference"]

    def row(what, pub, mod, unit, note=""):
        return {"what": what, "published": pub, "modelled": mod, "unit": unit, "note": note,
                "ratio": (mod / pub) if pub else None}
    rows = [
        row("neuro cores", S["cores"], c["cores"], "cores",
            "the model splits a population at 8192 synapses per core (max_synops_per_core, an assumption); "
            "the Lava compiler used 74"),
        row("synaptic ops per inference", S["synops_per_inference"], inf["synops"], "ops",
            "by construction: the activity is derived from this count"),
        row("neuron updates per inference", S["neuron_updates_per_inference"], inf["neuron_updates"], "updates",
            f"by construction: {steps:.1f} steps of {net.neurons} neurons"),
        row("graded spikes per inference", S["spike_events_per_inference"], inf["messages"], "spikes",
            "published: 'input and output spike events' (its counting rule is not given: a spike "
            "counted where it leaves and at every core it reaches counts two or more times); "
            "modelled: each graded spike once"),
        row("time per step", S["latency_s"] / steps, c["time_per_step_s"], "s",
            "published: latency / steps per inference; modelled: Loihi 1 per-op times [D18]"),
        row("latency per inference", S["latency_s"], inf["time_s"], "s", f"{steps:.1f} steps"),
        row("dynamic energy per inference", S["dynamic_energy_j"], inf["dynamic_energy_j"], "J",
            "published: measured on the VPX system (power analyzer and on-board probes), not split "
            "into neuro cores, embedded x86 cores and I/O; modelled: neuro-core synaptic ops, neuron "
            "updates, spikes and hops with Loihi 1 per-op energies [D18]"),
        row("static power", S["static_power_w"], c["static_power_w"], "W",
            "published: the whole 16-chip VPX system; modelled: 1 chip x static_power_chip_w "
            "(derived from the [M24] chip-level measurement)"),
        row("total energy per inference", S["total_energy_j"], inf["total_energy_j"], "J",
            "dominated by the published system's static power"),
    ]
    return {"network": S["network"], "system": S["system"], "source": S["source"], "steps": steps,
            "activity": net.layers[0].activity, "cost": c, "rows": rows}
