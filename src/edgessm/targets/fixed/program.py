"""The ``fixed`` target: a quantized network on the integer engine (bit-exact to the
quantized PyTorch model), with op-count based costs of a generic integer datapath."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from ...errors import ConfigError, InputError
from ...fields import Rule
from ...quant.fixedpoint import quantize_input_np
from ...quant.intnet import mean_readout
from ...quant.model import QuantSequenceModel, unsupported
from ...quant.ptq import quantize
from ...quant.spec import QuantSpec
from ...ssm.validate import check_tensor
from ..base import Cost, Program, Target, register
from ..config import Capabilities, TargetConfig
from .engine import Engine, EngineState


def load_spec(label: str, value) -> QuantSpec:
    """A quantization spec field: a preset name, a TOML path or a QuantSpec."""
    return QuantSpec.load(value)


def quant_spec_field():
    """The config field ``deploy --spec`` sets on integer targets (None: the model's spec, or
    loihi2 for a float model)."""
    return field(default=None, metadata={"parse": load_spec})
THRESHOLD = Rule(int, ge=-1, note="-1: send every non-zero graded spike")
CALIBRATE = Rule(int, ge=1)
BACKEND = Rule(str, choices=("auto", "c", "numpy"))
ENERGY = Rule(float, ge=0)


@dataclass
class FixedConfig(TargetConfig):
    """Options of the fixed target (``deploy --set KEY=VALUE``, ``--spec``)."""
    TARGET: ClassVar[str] = "fixed"
    SPEC_FIELD: ClassVar[str] = "quant_spec"

    quant_spec: QuantSpec | None = quant_spec_field()
    # -1: send non-zero graded spikes; T >= 0: sigma-delta, send changes > T LSB
    sigma_delta_threshold: int = field(default=-1, metadata={"rule": THRESHOLD})
    # calibration samples when a float model is compiled (PTQ)
    calibrate: int = field(default=512, metadata={"rule": CALIBRATE})
    # integer engine: "c" (compiled, needs cc), "numpy", "auto" (c if possible)
    backend: str = field(default="auto", metadata={"rule": BACKEND})
    # generic integer datapath energies, Horowitz, "Computing's energy problem (and what we can
    # do about it)", ISSCC 2014, Fig. 1.1.9 (45 nm): 32-bit int multiply 3.1 pJ, 32-bit add 0.1 pJ
    energy_mac_j: float = field(default=3.2e-12, metadata={"rule": ENERGY})
    energy_add_j: float = field(default=0.1e-12, metadata={"rule": ENERGY})


def lower(model, spec, calibration, n: int, target: str) -> QuantSequenceModel:
    """The calibrated quantized model a target executes (PTQ when given a float model)."""
    why = unsupported(model.config)
    if why:
        raise ConfigError(f"the {target} target cannot run this model: " + "; ".join(why))
    if isinstance(model, QuantSequenceModel) and spec is None:
        model._need_calibration()
        return model.eval()
    spec = QuantSpec.load(spec if spec is not None else "loihi2")
    if isinstance(model, QuantSequenceModel) and model.spec.to_dict() == spec.to_dict() \
            and bool(model.calibrated):
        return model.eval()
    if calibration is None:
        raise ConfigError(f"compiling a float model for {target} quantizes it (PTQ) and needs "
                          f"calibration data: pass calibration=X (B, L, d_in), or quantize first "
                          f"with `edgessm quantize MODEL --spec ... --out DIR`")
    return quantize(model, spec, calibration=calibration, n=n)


class FixedProgram(Program):
    target = "fixed"

    def __init__(self, qmodel: QuantSequenceModel, config: FixedConfig):
        self.model = qmodel.eval()
        self.config = config
        self.net = qmodel.integer_network()
        self.engine = Engine(self.net, config.sigma_delta_threshold, config.backend)
        self.d_input, self.d_output = self.net.d_input, self.net.d_output
        self._wall = [0.0, 0]

    def set_backend(self, backend: str) -> None:
        """Run on another integer engine backend ("auto", "c", "numpy"); resets the statistics."""
        self.engine = Engine(self.net, self.engine.threshold, backend)
        self._wall = [0.0, 0]

    # ---- host boundary ---------------------------------------------------------------------
    def encode(self, x: np.ndarray) -> np.ndarray:
        xm, o = quantize_input_np(x, self.net.in_exp, self.net.in_bits)
        self.engine._over("input", "input", o)
        return xm

    def decode(self, m: np.ndarray) -> torch.Tensor:
        """Mantissas (integer outputs, or a mean readout's running means) -> float logits."""
        return torch.from_numpy(m.astype(np.float64) * 2.0 ** self.net.out_exp).float()

    @property
    def mean(self) -> bool:
        """A mean readout: the host sums the decoder's integer outputs and divides by the count."""
        return self.net.readout == "mean"

    def readout(self, out: np.ndarray) -> torch.Tensor:
        """The prediction after every token (float logits, (B, L, d_out)) from the decoder's
        integer outputs of a whole stream (B, L, d_out)."""
        return self.decode(mean_readout(out)[0] if self.mean else out)

    def init_state(self, batch: int = 1) -> EngineState:
        if not isinstance(batch, int) or batch < 1:
            raise InputError(f"batch must be a positive integer, got {batch!r}")
        st = self.engine.init_state(batch)
        if self.mean:
            st.total = np.zeros((batch, self.d_output), np.int64)
        return st

    def step(self, x_t: torch.Tensor, state: EngineState):
        check_tensor(x_t, ndim=2, last=self.d_input, name="x_t", what="(batch, d_input)")
        if not isinstance(state, EngineState) or state.batch != x_t.shape[0] \
                or not state.readout_fits(self.net.readout, self.d_output):
            raise InputError(f"state does not belong to this program and batch {x_t.shape[0]}; "
                             f"create it with init_state({x_t.shape[0]})")
        t0 = time.perf_counter()
        out, new = self.engine.step_int(self.encode(x_t.detach().cpu().numpy()), state)
        self._wall[0] += time.perf_counter() - t0
        self._wall[1] += 1
        if not self.mean:
            return self.decode(out), new
        m, new.total = mean_readout(out[:, None], state.total, state.t)
        return self.decode(m[:, 0]), new

    def run_int(self, X: torch.Tensor) -> np.ndarray:
        """(B, L, d_in) -> the decoder's integer outputs (B, L, d_out), token by token (the
        logits of a last-token readout; :meth:`readout` makes the prediction of either kind)."""
        check_tensor(X, ndim=3, last=self.d_input, name="X", what="(batch, length, d_input)")
        xm = self.encode(X.detach().cpu().numpy())
        t0 = time.perf_counter()
        out, _ = self.engine.run_int(xm, self.engine.init_state(X.shape[0]))
        self._wall[0] += time.perf_counter() - t0
        self._wall[1] += X.shape[1]
        return out

    def run(self, X: torch.Tensor) -> torch.Tensor:
        return self.readout(self.run_int(X))

    # ---- verification ----------------------------------------------------------------------
    def check(self, X: torch.Tensor, batch_size: int = 64, labels: torch.Tensor | None = None) -> dict:
        """Integer logits of every token vs the quantized PyTorch model (eval mode).

        Returns the number of mismatching integer outputs (all tokens, all classes), how many
        were compared, how many samples had any mismatch, and, with labels, the engine's
        correct predictions after the last token (a mean readout: the argmax of the sum of the
        outputs over the tokens, which is the mean's)."""
        mism, compared, samples, maxdiff, correct = 0, 0, 0, 0, 0
        for s in range(0, X.shape[0], batch_size):
            xb = X[s:s + batch_size]
            a = self.run_int(xb)
            b = self.model.int_forward(xb, all_tokens=True).numpy()
            d = a != b
            mism += int(d.sum())
            compared += d.size
            samples += int(d.reshape(d.shape[0], -1).any(1).sum())
            maxdiff = max(maxdiff, int(np.abs(a - b).max()) if d.any() else 0)
            if labels is not None:
                final = a.sum(1) if self.mean else a[:, -1]
                correct += int((torch.from_numpy(final.argmax(-1)) == labels[s:s + batch_size]).sum())
        out = {"mismatches": mism, "compared": compared, "samples_with_mismatch": samples,
               "max_abs_diff": maxdiff}
        if labels is not None:
            out["correct"] = correct
        return out

    # ---- resources, cost, stats ------------------------------------------------------------
    def spec_name(self) -> str:
        return self.model.spec.name

    def stats(self) -> dict:
        return self.engine.stats()

    def reset_stats(self) -> None:
        self.engine.reset_stats()
        self._wall = [0.0, 0]

    def work_per_token(self) -> dict:
        """Counted work per token: from the tokens run so far, else the dense worst case."""
        e = self.engine
        if e.stream_tokens:
            st = e.stats()
            return {"synops": sum(st["synops_per_token"].values()),
                    "messages": st["messages_per_token"],
                    "neuron_updates": st["neuron_updates_per_token"], "source": "counted"}
        msgs = {p["name"]: float(p["size"]) for p in e.pops}
        syn = float(sum(int(p["fan_out"].sum()) for p in e.pops if p["kind"] != "state")
                    + sum(p.get("synops_per_step", 0) for p in e.pops))
        return {"synops": syn, "messages": msgs, "neuron_updates": sum(e.neurons().values()),
                "source": "dense worst case (nothing run yet)"}

    def resources(self) -> dict:
        n = self.net
        syn = int(np.count_nonzero(n.encoder.W)) + int(np.count_nonzero(n.decoder.W))
        for s, m in n.layers:
            syn += int(np.count_nonzero(m.W)) + sum(int(np.count_nonzero(a)) for a in (s.br, s.bi, s.cr, s.ci, s.dm))
        return {"neurons": self.engine.neurons(), "total_neurons": sum(self.engine.neurons().values()),
                "synapses": syn, "spec": n.spec_name}

    def cost(self, tokens: int = 1, mode: str = "token") -> Cost:
        if mode not in ("token", "pipelined"):
            raise ConfigError(f"unknown cost mode {mode!r}; use 'token' or 'pipelined'")
        w = self.work_per_token()
        c = self.config
        e_tok = w["synops"] * c.energy_mac_j + w["neuron_updates"] * 4 * c.energy_mac_j
        if self._wall[1] == 0:
            self.run_int(torch.zeros(1, 4, self.d_input))
            self.engine.reset_stats()
        lat = self._wall[0] / max(self._wall[1], 1)
        return Cost(energy_per_token_j=e_tok, latency_per_token_s=lat,
                    throughput_tokens_per_s=1.0 / lat if lat > 0 else 0.0,
                    power_w=e_tok / lat if lat > 0 else 0.0, mode=mode, measured=False,
                    assumptions={"energy_mac_j": (c.energy_mac_j, "Horowitz ISSCC 2014 Fig 1.1.9, 45 nm, "
                                                  "32-bit int mult 3.1 pJ + add 0.1 pJ"),
                                 "neuron_update": "4 MACs per neuron update",
                                 "latency": f"measured wall time per step of the {self.engine.backend} "
                                            f"integer engine on this CPU (all streams of a batch in one step)",
                                 "work": w["source"]},
                    breakdown={"synaptic": w["synops"] * c.energy_mac_j,
                               "neurons": w["neuron_updates"] * 4 * c.energy_mac_j})


@register("fixed")
class FixedTarget(Target):
    """Integer-only execution of a quantized network (any integer-expressible model)."""
    config_class = FixedConfig
    capabilities = Capabilities(needs_calibration=True, supports_check=True,
                                cost_modes=("token", "pipelined"))
    program_class = FixedProgram

    def build(self, model, config: FixedConfig, calibration=None) -> Program:
        q = lower(model, config.quant_spec, calibration, config.calibrate, self.name)
        return self.program_class(q, config)
