"""The ``loihi2`` target: the integer engine plus a Loihi 2 mapping and cost model.

Mapping. The network is a chain of neuron populations, each on its own neuro cores:
``encoder -> [s4d.state -> s4d (ReLU) -> mixing (ReLU)] x n_layers -> decoder``. A complex
S4D state is two neurons (real, imaginary); its dB synapses come from the previous
population, its C synapses go to the layer's output neuron, D is a synapse from the input.
A residual connection is one more synapse per mixing neuron, from the block input; the block
input reaches it two algorithmic steps before the same token's branch does (through the state
and output populations), so those synapses carry a delay of two steps in a pipelined stream
(Lava's dense process with per-synapse delays, lava-nc/lava ``proc/dense``, buffers delay + 1
inputs per neuron; the synapses' work is counted, that buffer's memory is not).
A population is split over enough cores that neurons, synaptic memory (weights of the
incoming synapses plus neuron state) and synaptic work per step fit one core
(``constants.CONSTANTS``); cores are laid out row by row on the 8 x 16 mesh.

Readout. The decoder's graded spikes leave the chip at every token (``messages_out``): the
prediction after each token. With a last-token readout the host decodes them as they come;
with a mean readout it keeps their running sum (d_out integer additions per token on the host,
not counted as chip work) and divides by the token count when it reads the prediction, so no
neuron divides.

Cost per token, from counted work (a run on data) or the dense worst case:
    E_dynamic = synops * E_synop + neuron updates * E_neuron
              + messages * E_spike + message hops * E_hop
    T_step    = max over cores (synops * t_synop + neurons * t_neuron)
              + barrier sync + the longest hop path
Token by token (mode "token"): a token traverses the chain's D populations, one algorithmic
time step each, before the next token enters: latency = D * T_step, throughput = 1 / latency.
Pipelined (mode "pipelined"): a new token every time step: latency = D * T_step,
throughput = 1 / T_step. Energy per token adds static power times the time per token.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ...errors import ConfigError
from ...fields import Rule
from ...quant.model import QuantSequenceModel
from ...quant.spec import QuantSpec
from ..base import Cost, Program, register
from ..config import Capabilities, TargetConfig
from ..fixed.program import BACKEND, CALIBRATE, THRESHOLD, FixedProgram, FixedTarget, lower, quant_spec_field
from .constants import CONSTANTS, REFERENCE_ONLY
from .costmodel import dynamic_energy, map_populations, step_timing

def _constant_rule(value) -> Rule:
    return Rule(int, ge=0) if isinstance(value, int) else Rule(float, ge=0)


Loihi2Config = dataclasses.make_dataclass(
    "Loihi2Config",
    [("quant_spec", "QuantSpec | None", quant_spec_field()),
     ("sigma_delta_threshold", int, dataclasses.field(default=-1, metadata={"rule": THRESHOLD})),
     ("calibrate", int, dataclasses.field(default=512, metadata={"rule": CALIBRATE})),
     ("max_chips", int, dataclasses.field(default=1, metadata={"rule": Rule(int, ge=1)})),
     ("backend", str, dataclasses.field(default="auto", metadata={"rule": BACKEND}))]
    + [(k, type(v[0]), dataclasses.field(default=v[0], metadata={"rule": _constant_rule(v[0])}))
       for k, v in CONSTANTS.items() if k not in REFERENCE_ONLY],
    bases=(TargetConfig,), namespace={"TARGET": "loihi2", "SPEC_FIELD": "quant_spec"})
Loihi2Config.__doc__ = ("Options of the loihi2 target (deploy --set KEY=VALUE): quant_spec (deploy --spec), "
                        "sigma_delta_threshold (-1 off), calibrate (PTQ samples), max_chips, backend "
                        "(integer engine: auto, c, numpy), and every constant of "
                        "targets/loihi2/constants.py the model uses (not the reference-only ones)")


# ---- what Loihi 2 cannot map ----------------------------------------------------------------
def unmappable_layers(model) -> list[str]:
    """One sentence per layer of `model` that Loihi 2 cannot run: which layer and why."""
    import torch.nn as nn
    why = []
    c = model.config
    for i, b in enumerate(model.blocks):
        if isinstance(b.norm, nn.LayerNorm):
            why.append(f"blocks.{i}.norm (LayerNorm): needs the mean and variance over all "
                       f"{c.d_model} channels of every token, then a division and a square root; "
                       f"a neuro core only runs per-neuron programs on weighted sums of graded "
                       f"spikes, with no reduction across neurons")
        elif b.norm is not None:
            why.append(f"blocks.{i}.norm ({type(b.norm).__name__}): normalization is not a "
                       f"per-neuron integer operation in this mapping; retrain with norm='none'")
        if not isinstance(b.act, nn.ReLU):
            why.append(f"blocks.{i}.act ({type(b.act).__name__}): only ReLU maps to a graded-spike "
                       f"neuron (GELU needs erf/tanh)")
        if b.mixing != "linear":
            why.append(f"blocks.{i}.mix (GLU mixing): the gate multiplies one neuron's output by "
                       f"the sigmoid of another's; synapses only add weighted spikes")
    return why


def check_spec_fits(spec: QuantSpec, cfg) -> None:
    """Bit widths Loihi 2 supports (limits in constants.py). Wrap-around overflow is allowed as
    well as saturation (two's complement registers)."""
    for kind in ("encoder", "mixing", "decoder", "dB", "dC", "D"):
        if spec[kind].bits > cfg.max_weight_bits:
            raise ConfigError(f"spec [{kind}] has {spec[kind].bits}-bit weights; loihi2 synapses take "
                              f"at most {cfg.max_weight_bits} bits (max_weight_bits)")
    for kind, limit, field in (("activations", cfg.max_graded_spike_bits, "max_graded_spike_bits"),
                               ("input", cfg.max_graded_spike_bits, "max_graded_spike_bits"),
                               ("state", cfg.max_state_bits, "max_state_bits")):
        if spec[kind].bits > limit:
            raise ConfigError(f"spec [{kind}] is {spec[kind].bits} bits; loihi2 allows at most "
                              f"{limit} ({field})")


class Loihi2Program(FixedProgram):
    target = "loihi2"

    def __init__(self, qmodel: QuantSequenceModel, config):
        super().__init__(qmodel, config)
        self.mapping = self._map()

    # ---- mapping ---------------------------------------------------------------------------
    def _populations(self) -> list[dict]:
        net, sp = self.net, self.model.spec
        nz = np.count_nonzero
        pops = [{"name": "encoder", "neurons": net.d_model, "synapses": int(nz(net.encoder.W)),
                 "w_bits": sp["encoder"].bits, "max_fan_in": net.d_input, "from": "input"}]
        prev = "encoder"
        for s, m in net.layers:
            pops.append({"name": f"{s.name}.state", "neurons": 2 * s.d_model * s.n,
                         "synapses": int(nz(s.br) + nz(s.bi)), "w_bits": sp["dB"].bits,
                         "max_fan_in": 1, "from": prev})
            pops.append({"name": s.name, "neurons": s.d_model,
                         "synapses": int(nz(s.cr) + nz(s.ci) + nz(s.dm)), "w_bits": sp["dC"].bits,
                         "max_fan_in": 2 * s.n + 1, "from": f"{s.name}.state"})
            # a residual connection: one more synapse per neuron, from the block input (`prev`)
            res = 0 if m.res_w is None else int(nz(m.res_w))
            pops.append({"name": m.name, "neurons": m.W.shape[0], "synapses": int(nz(m.W)) + res,
                         "w_bits": sp["mixing"].bits, "max_fan_in": m.W.shape[1] + (res > 0),
                         "from": s.name, "res_from": prev if res else None})
            prev = m.name
        pops.append({"name": "decoder", "neurons": net.d_output, "synapses": int(nz(net.decoder.W)),
                     "w_bits": sp["decoder"].bits, "max_fan_in": net.decoder.W.shape[1], "from": prev})
        return pops

    def _map(self) -> dict:
        return map_populations(self._populations(), self.config)

    def resources(self) -> dict:
        m = self.mapping
        return {"cores": m["cores"], "chips": m["chips"], "depth_steps": m["depth"],
                "neurons": sum(p["neurons"] for p in m["populations"]),
                "synapses": sum(p["synapses"] for p in m["populations"]),
                "memory_bytes": sum(p["memory_bytes"] for p in m["populations"]),
                "populations": [{k: p[k] for k in ("name", "neurons", "synapses", "memory_bytes",
                                                    "cores", "first_core")} for p in m["populations"]],
                "limits": {k: getattr(self.config, k) for k in
                           ("neuro_cores_per_chip", "max_neurons_per_core", "core_memory_bytes",
                            "max_synops_per_core", "max_chips")}}

    # ---- cost ------------------------------------------------------------------------------
    def work(self) -> dict:
        """Per stream token: synops into, neurons of, and messages from each population."""
        pops = self.mapping["populations"]
        e = self.engine
        counted = e.stream_tokens > 0
        st = e.stats() if counted else None
        out = {}
        res_syn = {}        # sender -> residual synops per token (one synapse per message)
        for p in pops:
            if p.get("res_from"):
                n = p["res_from"]
                res_syn[n] = st["messages_per_token"].get(n, 0.0) if counted else float(self._sender_size(n))
        for p in pops:
            r = res_syn[p["res_from"]] if p.get("res_from") else 0.0
            # synops are counted at the sender (its fan-out); the D synapses of an S4D output
            # neuron are counted with the dB synapses of the same input, under the state population;
            # a residual synapse's under the mixing population it belongs to (p["synapses"] of a
            # mixing population already holds them)
            if counted:
                syn = st["synops_per_token"].get(p["from"], 0.0) - res_syn.get(p["from"], 0.0) + r
                msg_in = st["messages_per_token"].get(p["from"], 0.0)
            else:
                syn, msg_in = float(p["synapses"]), float(self._sender_size(p["from"]))
            out[p["name"]] = {"synops": syn, "neurons": p["neurons"], "messages_in": msg_in,
                              "hops": p["hops"], "cores": p["cores"]}
            if p.get("res_from"):
                out[p["name"]].update(res_messages_in=r, res_hops=p["res_hops"])
        out_msgs = self.net.d_output
        return {"populations": out, "messages_out": out_msgs,
                "source": "counted over %d stream tokens" % e.stream_tokens if counted
                else "dense worst case (every neuron sends every step; nothing run yet)"}

    def _sender_size(self, name: str) -> int:
        for p in self.engine.pops:
            if p["name"] == name:
                return p["size"]
        return 0

    def timing(self, work: dict | None = None) -> dict:
        """The time of one barrier-synchronised algorithmic step and of a token's fall-through.

        Loihi 2 runs in time steps: every core updates its neurons and sends its graded spikes,
        then all cores meet at a barrier. A graded spike sent in step t is integrated by its
        target population in step t + 1, so a token reaches the readout ``depth`` steps after it
        entered (one step per population of the chain). Returns every term, in seconds.
        work: :meth:`work` when the caller already has it (counted once per cost)."""
        P = (work if work is not None else self.work())["populations"]
        return step_timing(P, self.mapping["cores"], self.mapping["depth"], self.config)

    def cost(self, tokens: int = 1, mode: str = "token") -> Cost:
        if mode not in ("token", "pipelined"):
            raise ConfigError(f"unknown cost mode {mode!r}; use 'token' or 'pipelined'")
        c = self.config
        w = self.work()
        P = w["populations"]
        e = dynamic_energy(P, w["messages_out"], c)
        e_syn, e_neu, e_msg, e_hop = e["synaptic"], e["neurons"], e["messages"], e["hops"]
        e_dyn = e_syn + e_neu + e_msg + e_hop
        tm = self.timing(w)
        t_step, depth = tm["time_per_step_s"], tm["depth_steps"]
        cores = self.mapping["cores"]
        latency = tm["fall_through_s"]
        t_token = latency if mode == "token" else t_step
        p_static = c.static_power_chip_w * self.mapping["chips"]
        energy = e_dyn + p_static * t_token
        used = {k: (getattr(c, k), CONSTANTS[k][1], CONSTANTS[k][2]) for k in
                ("energy_synop_j", "time_synop_s", "energy_neuron_update_j", "time_neuron_update_s",
                 "energy_spike_in_tile_j", "latency_spike_in_tile_s", "energy_hop_j", "latency_hop_s",
                 "barrier_sync_min_s", "barrier_sync_max_s", "static_power_chip_w")}
        return Cost(
            energy_per_token_j=energy, latency_per_token_s=latency,
            throughput_tokens_per_s=1.0 / t_token, power_w=energy / t_token, mode=mode, measured=False,
            assumptions={**used, "work": w["source"], "time_per_step_s": t_step, "depth_steps": depth,
                         "cores": cores, "chips": self.mapping["chips"], "tokens": tokens,
                         "per_op_figures": "Loihi 1 (14 nm) measurements [D18]: an upper bound for Loihi 2",
                         "token_mode": "one token traverses all populations before the next enters",
                         "readout": ("the decoder's outputs leave the chip every token; the host sums them "
                                     "and divides by the token count (mean readout, host work not counted)"
                                     if self.mean else "the decoder's outputs leave the chip every token")},
            breakdown={"synaptic": e_syn, "neurons": e_neu, "messages": e_msg, "hops": e_hop,
                       "static": p_static * t_token})


@register("loihi2")
class Loihi2Target(FixedTarget):
    """Intel Loihi 2: integer engine + mapping onto neuro cores + per-op cost model."""
    config_class = Loihi2Config
    capabilities = Capabilities(needs_calibration=True, supports_check=True,
                                cost_modes=("token", "pipelined"))
    program_class = Loihi2Program

    def build(self, model, config, calibration=None) -> Program:
        why = unmappable_layers(model)
        if why:
            raise ConfigError("loihi2 cannot map this model: " + "; ".join(why)
                              + ". Use the 'neuromorphic' preset (ReLU, linear mixing, no block norm, "
                                "residual connections, mix_norm and a mean readout are allowed).")
        spec = config.quant_spec
        s = spec if spec is not None else (
            model.spec if isinstance(model, QuantSequenceModel) else QuantSpec.preset("loihi2"))
        check_spec_fits(s, config)
        q = lower(model, s if spec is not None or not isinstance(model, QuantSequenceModel) else None,
                  calibration, config.calibrate, self.name)
        return Loihi2Program(q, config)
