"""The integer engine: executes an :class:`~edgessm.quant.IntNet` with numpy int64 only.

No float appears in :meth:`Engine.step_int`: weights, descale factors, shifts, states and
graded spikes are integers; rounding is the round-half-up shift and every value leaves an
operation through saturation (or wrap-around, if the spec says so), with the overflows
counted per tensor kind. Float <-> integer conversion happens only at the host boundary
(``FixedProgram.step``), as it would on a chip.

Messaging. Every population sends graded spikes to the next one:

* default (``sigma_delta_threshold = -1``): a neuron sends when its output is non-zero
  (a ReLU that outputs 0 stays silent); exact.
* sigma-delta (threshold T >= 0): a neuron sends the change of its output since its last
  message when that change exceeds T (in units of its LSB); the receiver integrates the
  changes, so it sees the last sent value. T = 0 is still exact (it sends every change);
  T > 0 trades accuracy for fewer messages (measured with ``deploy --set``).

Counted work (for the cost models): messages per population, synaptic operations (each
message times the non-zero synapses it drives), neuron updates, per token.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...quant.fixedpoint import rshift_round_np, saturate_np
from ...quant.intnet import DenseInt, IntNet, S4DInt

OVERFLOW_KINDS = ("input", "accumulator", "activations", "state")


@dataclass
class EngineState:
    """Streaming state: per S4D layer (xr, xi) (B, H, n) int64, per population the last
    value sent (sigma-delta references), and the token count."""
    layers: list
    refs: dict = field(default_factory=dict)
    t: int = 0

    @property
    def batch(self) -> int:
        return self.layers[0][0].shape[0]


def _rsr_(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """rshift_round_np on a temporary, in place when every shift is positive."""
    if s.min() > 0:
        x += np.left_shift(np.int64(1), s - 1)
        x >>= s
        return x
    return rshift_round_np(x, s)


def _ssm_fan_out(s: S4DInt) -> np.ndarray:
    """Synapses driven by one input graded spike u_h: dB (real, imag) to each state, and D."""
    return (np.count_nonzero(s.br, 1) + np.count_nonzero(s.bi, 1) + (s.dm != 0)).astype(np.int64)


class Engine:
    def __init__(self, net: IntNet, sigma_delta_threshold: int = -1):
        self.net = net
        self.threshold = int(sigma_delta_threshold)
        self.pops = self._populations()
        self.reset_stats()

    # ---- structure -------------------------------------------------------------------------
    def _populations(self) -> list[dict]:
        """Every population that sends graded spikes: name, size, fan-out per neuron."""
        net = self.net
        pops = [{"name": "input", "size": net.d_input, "fan_out": net.encoder.fan_out, "kind": "host"}]
        nxt = [s for s, _ in net.layers]
        pops.append({"name": "encoder", "size": net.d_model,
                     "fan_out": _ssm_fan_out(nxt[0]) if nxt else net.decoder.fan_out, "kind": "dense"})
        for i, (s, m) in enumerate(net.layers):
            pops.append({"name": f"{s.name}.state", "size": 2 * s.d_model * s.n, "kind": "state",
                         "fan_out": np.ones(2 * s.d_model * s.n, dtype=np.int64),
                         "synops_per_step": int(np.count_nonzero(s.cr) + np.count_nonzero(s.ci))})
            pops.append({"name": s.name, "size": s.d_model, "fan_out": m.fan_out, "kind": "ssm_out"})
            fo = _ssm_fan_out(nxt[i + 1]) if i + 1 < len(nxt) else net.decoder.fan_out
            pops.append({"name": m.name, "size": m.W.shape[0], "fan_out": fo, "kind": "dense"})
        pops.append({"name": "decoder", "size": net.d_output,
                     "fan_out": np.zeros(net.d_output, dtype=np.int64), "kind": "dense"})
        return pops

    def neurons(self) -> dict[str, int]:
        """Neurons per population (a complex state counts as two: real and imaginary)."""
        return {p["name"]: p["size"] for p in self.pops if p["kind"] != "host"}

    # ---- statistics ------------------------------------------------------------------------
    def reset_stats(self):
        self.overflows = {k: 0 for k in OVERFLOW_KINDS}
        self.overflow_detail: dict[str, int] = {}
        self.messages = {p["name"]: 0 for p in self.pops}
        self.synops = {p["name"]: 0 for p in self.pops}
        self.stream_tokens = 0
        self.steps = 0

    def _over(self, kind: str, where: str, n: int):
        if n:
            self.overflows[kind] += n
            self.overflow_detail[f"{where}.{kind}"] = self.overflow_detail.get(f"{where}.{kind}", 0) + n

    def stats(self) -> dict:
        tok = max(self.stream_tokens, 1)
        graded = [p for p in self.pops if p["kind"] not in ("state",)]
        sent = sum(self.messages[p["name"]] for p in graded)
        possible = sum(p["size"] for p in graded) * self.stream_tokens
        return {"stream_tokens": self.stream_tokens, "steps": self.steps,
                "overflows": dict(self.overflows), "overflow_detail": dict(self.overflow_detail),
                "messages": dict(self.messages), "synops": dict(self.synops),
                "messages_per_token": {k: v / tok for k, v in self.messages.items()},
                "synops_per_token": {k: v / tok for k, v in self.synops.items()},
                "neuron_updates_per_token": sum(self.neurons().values()),
                "spike_sparsity": 1.0 - sent / possible if possible else 0.0,
                "sigma_delta_threshold": self.threshold}

    # ---- execution -------------------------------------------------------------------------
    def init_state(self, batch: int) -> EngineState:
        layers = [(np.zeros((batch, s.d_model, s.n), np.int64), np.zeros((batch, s.d_model, s.n), np.int64))
                  for s, _ in self.net.layers]
        refs = {p["name"]: np.zeros((batch, p["size"]), np.int64)
                for p in self.pops if p["kind"] != "state"} if self.threshold >= 0 else {}
        return EngineState(layers, refs, 0)

    def _send(self, pop: dict, a: np.ndarray, refs_in: dict, refs_out: dict) -> np.ndarray:
        """Graded spikes from a population; returns what the receivers see."""
        name = pop["name"]
        if self.threshold < 0:
            sent = a != 0
            seen = a
        else:
            ref = refs_in[name]
            sent = np.abs(a - ref) > self.threshold
            seen = np.where(sent, a, ref)
            refs_out[name] = seen
        self.messages[name] += int(np.count_nonzero(sent))
        self.synops[name] += int((sent.astype(np.int64) @ pop["fan_out"]).sum())
        return seen

    def _dense(self, a: np.ndarray, d: DenseInt) -> np.ndarray:
        acc = a @ d.W.T
        acc, o = saturate_np(acc, d.acc_bits, d.acc_mode)
        self._over("accumulator", d.name, o)
        v = rshift_round_np(acc * d.g, d.shift) + d.bias
        v, o = saturate_np(v, d.out_bits, d.out_mode)
        self._over("activations", d.name, o)
        return np.maximum(v, 0) if d.relu else v

    def _s4d(self, u: np.ndarray, xr: np.ndarray, xi: np.ndarray, s: S4DInt):
        uu = u[:, :, None]
        nr = _rsr_(s.ar * xr - s.ai * xi, s.sA)
        nr += _rsr_(s.br * uu, s.sB)
        ni = _rsr_(s.ar * xi + s.ai * xr, s.sA)
        ni += _rsr_(s.bi * uu, s.sB)
        nr, o1 = saturate_np(nr, s.state_bits, s.state_mode)
        ni, o2 = saturate_np(ni, s.state_bits, s.state_mode)
        self._over("state", s.name, o1 + o2)
        yc = (s.cr * nr - s.ci * ni).sum(-1)
        y = rshift_round_np(yc, s.sC) + rshift_round_np(s.dm * u, s.sD)
        y, o = saturate_np(y, s.out_bits, s.out_mode)
        self._over("activations", s.name, o)
        return y, nr, ni

    def step_int(self, xm: np.ndarray, state: EngineState) -> tuple[np.ndarray, EngineState]:
        """One token of every stream: integer input (B, d_in) -> integer logits (B, d_out).

        `state` is not modified; a new EngineState is returned."""
        if xm.dtype != np.int64:
            raise TypeError("step_int takes int64 inputs (encode floats at the host boundary)")
        P = {p["name"]: p for p in self.pops}
        refs: dict = {}
        a = self._send(P["input"], xm, state.refs, refs)
        h = self._send(P["encoder"], self._dense(a, self.net.encoder), state.refs, refs)
        layers = []
        for (s, m), (xr, xi) in zip(self.net.layers, state.layers):
            y, xr, xi = self._s4d(h, xr, xi, s)
            sp = P[f"{s.name}.state"]
            self.messages[sp["name"]] += sp["size"] * xm.shape[0]
            self.synops[sp["name"]] += sp["synops_per_step"] * xm.shape[0]
            layers.append((xr, xi))
            a = self._send(P[s.name], np.maximum(y, 0), state.refs, refs)
            h = self._send(P[m.name], self._dense(a, m), state.refs, refs)
        out = self._dense(h, self.net.decoder)
        self._send(P["decoder"], out, state.refs, refs)
        self.stream_tokens += xm.shape[0]
        self.steps += 1
        return out, EngineState(layers, refs, state.t + 1)
