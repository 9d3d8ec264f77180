"""QuantSequenceModel: an S4D network whose eval mode is exactly the integer arithmetic.

* ``train()`` mode: fake quantization with straight-through gradients; the S4D runs as an
  FFT convolution whose kernel is built from the fixed-point dA, dB, C (so the trained
  dynamics are the quantized ones); activations are rounded and saturated at their
  calibrated exponents. Used for QAT / QAFT.
* ``eval()`` mode (``exact_eval``, the default): the integer network (:mod:`edgessm.quant.intnet`) executed in torch int64,
  token by token for the S4D recurrence; states are two saturating integers per complex
  state. The integer engine (``targets/fixed``) executes the same network in numpy and
  must agree integer for integer (``tests/test_fixed.py``).

Only what a neuromorphic core can do is quantizable: ReLU, Linear mixing, no block norm
(the ``neuromorphic`` preset), optionally with residual connections (the block input added to
the mixing layer's graded spikes: one synapse per neuron) and a batch norm of the mixing product
(``mix_norm``, folded into the mixing weights by ``from_float``). The decoder runs at every
token; the readout is its last output, or with a mean readout the host's running sum of its
integer outputs divided by the token count (:mod:`.intnet`).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError
from ..ssm.kernel import conv_last, fft_conv, vandermonde_kernel
from ..ssm.network import ModelConfig, SequenceModel, channel_linear
from ..ssm.validate import check_tensor
from .fixedpoint import (exponent_for, int_range, quantize_input_t, round_half_up,
                         rshift_round_t, saturate_t)
from .intnet import DenseInt, IntNet, IntState, S4DInt
from .quantizers import (fake_quant_act, fake_quant_coeff, fake_quant_weight, lsq_init,
                         quantize_coeff, quantize_weight)
from .spec import QuantSpec

QUANT_META_VERSION = 1
OVERFLOW_KINDS = ("input", "accumulator", "activations", "state")


def unsupported(config: ModelConfig) -> list[str]:
    """Reasons a model configuration cannot run on integer-only hardware (empty: fine)."""
    why = []
    if config.activation != "relu":
        why.append(f"activation {config.activation!r}: only ReLU is exact in integers "
                   f"(GELU needs erf/tanh)")
    if config.mixing != "linear":
        why.append(f"mixing {config.mixing!r}: GLU needs a sigmoid; use mixing='linear'")
    if config.norm != "none":
        why.append(f"norm {config.norm!r}: normalization needs a per-token mean/variance, "
                   f"division and square root across channels; use norm='none'")
    return why


def check_quantizable(config: ModelConfig):
    why = unsupported(config)
    if why:
        raise ConfigError("this model cannot be quantized to integers (use the 'neuromorphic' "
                          "preset): " + "; ".join(why))


def _rsr_t_(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """rshift_round_t on a temporary, in place when every shift is positive."""
    if int(s.min()) > 0:
        x += torch.bitwise_left_shift(torch.ones_like(s), s - 1)
        x.bitwise_right_shift_(s)
        return x
    return rshift_round_t(x, s)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.int64).numpy().copy()


class QuantSequenceModel(SequenceModel):
    """A SequenceModel quantized per a QuantSpec; see the module docstring."""

    def __init__(self, config: ModelConfig, spec="loihi2"):
        if config.mix_norm:
            raise ConfigError("a quantized model has its mixing batch norm folded into the mixing "
                              "weights: build it with QuantSequenceModel.from_float(model), which folds "
                              "(SequenceModel.fold_norms), or set mix_norm=False")
        super().__init__(config)
        check_quantizable(config)
        self.spec = QuantSpec.load(spec).validate()
        n = config.n_layers
        z = lambda *s: torch.zeros(*s, dtype=torch.int64)  # noqa: E731
        self.register_buffer("exp_in", z(()))
        self.register_buffer("exp_enc", z(()))
        self.register_buffer("exp_y", z(n))
        self.register_buffer("exp_z", z(n))
        self.register_buffer("exp_x", z(n))
        self.register_buffer("exp_out", z(()))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))
        self.lsq = nn.ParameterDict()
        for key, kind, lin in self._linears():
            ts = self.spec[kind]
            if ts.method == "lsq":
                self.lsq[key] = nn.Parameter(torch.ones(lin.weight.shape[0] if ts.per_channel else 1))
        self.overflows: dict[str, int] = {k: 0 for k in OVERFLOW_KINDS}
        # eval mode runs the exact integer network; qat_wrap turns this off while training so
        # per-epoch validation uses the (fast, FFT) fake-quant path; a loaded model is exact
        self.exact_eval = True
        self._int_key = None
        self._int_net = None
        self._int_t = None

    # ---- construction --------------------------------------------------------------------
    @classmethod
    def from_float(cls, model: SequenceModel, spec="loihi2") -> "QuantSequenceModel":
        """A quantized copy of `model`'s float weights (not yet calibrated); a mixing batch norm
        (``mix_norm``) is folded into the mixing weights first (``SequenceModel.fold_norms``)."""
        training = model.training
        model = model.fold_norms()
        q = cls(model.config, spec)
        sd = {k: v for k, v in model.state_dict().items() if not k.startswith(("exp_", "lsq.", "calibrated"))}
        missing, unexpected = q.load_state_dict(sd, strict=False)
        bad = [k for k in missing if not k.startswith(("exp_", "lsq.", "calibrated"))]
        if bad or unexpected:
            raise ConfigError(f"cannot copy weights into the quantized model: missing {bad[:5]}, "
                              f"unexpected {list(unexpected)[:5]}")
        q.train(training)
        q.metrics = dict(getattr(model, "metrics", {}) or {})
        q.checkpoint_meta = dict(getattr(model, "checkpoint_meta", {}) or {})
        return q

    def quant_meta(self) -> dict:
        """Stored under "quant" in model.json; edgessm.load rebuilds the model from it."""
        return {"format_version": QUANT_META_VERSION, "spec": self.spec.to_dict(),
                "calibrated": bool(self.calibrated)}

    def _linears(self):
        yield "encoder", "encoder", self.encoder
        for i, b in enumerate(self.blocks):
            yield f"mixing{i}", "mixing", b.mix
        yield "decoder", "decoder", self.decoder

    # ---- calibration (PTQ) -----------------------------------------------------------------
    @torch.no_grad()
    def calibrate(self, X: torch.Tensor, state_samples: int = 64, batch_size: int = 128) -> dict:
        """Choose every activation and state exponent from the float model on inputs X.

        Graded spikes that go through a ReLU only need their positive range. Returns the
        observed maxima."""
        check_tensor(X, ndim=3, last=self.config.d_input, name="calibration X",
                     what="(batch, length, d_input)")
        n = self.config.n_layers
        mx = {"in": 0.0, "enc": 0.0, "y": [0.0] * n, "z": [0.0] * n, "x": [0.0] * n, "out": 0.0}
        for s in range(0, X.shape[0], batch_size):
            x = X[s:s + batch_size].float()
            mx["in"] = max(mx["in"], float(x.abs().max()))
            h = self.encoder(x)
            mx["enc"] = max(mx["enc"], float(h.abs().max()))
            for i, b in enumerate(self.blocks):
                if s < state_samples:
                    mx["x"][i] = max(mx["x"][i], self._max_state(b.s4d, h[:state_samples - s]))
                y = b.s4d(h)
                mx["y"][i] = max(mx["y"][i], float(F.relu(y).max()))
                h = F.relu(b.mix(F.relu(y))) + (h if b.residual else 0)
                mx["z"][i] = max(mx["z"][i], float(h.abs().max()))
            mx["out"] = max(mx["out"], float(self.decoder(h).abs().max()))
        sp = self.spec
        act, st = sp["activations"], sp["state"]
        self.exp_in.fill_(exponent_for(mx["in"], sp["input"].bits))
        self.exp_enc.fill_(exponent_for(mx["enc"], act.bits, act.headroom_bits))
        for i in range(n):
            self.exp_y[i] = exponent_for(mx["y"][i], act.bits, act.headroom_bits)
            self.exp_z[i] = exponent_for(mx["z"][i], act.bits, act.headroom_bits)
            self.exp_x[i] = exponent_for(mx["x"][i], st.bits, st.headroom_bits)
        self.exp_out.fill_(exponent_for(mx["out"], act.bits, act.headroom_bits))
        for key, kind, lin in self._linears():
            if key in self.lsq:
                self.lsq[key].data.copy_(lsq_init(lin.weight, sp[kind]).reshape(self.lsq[key].shape)
                                         if sp[kind].per_channel else
                                         lsq_init(lin.weight, sp[kind])[:1])
        self.calibrated.fill_(True)
        self._int_key = None
        return mx

    @staticmethod
    def _max_state(s4d, u: torch.Tensor) -> float:
        dA, dB, _ = s4d.discrete()
        st = torch.zeros(u.shape[0], *dA.shape, dtype=dA.dtype, device=u.device)
        m = torch.zeros((), device=u.device)
        for t in range(u.shape[1]):
            st = dA * st + dB * u[:, t].unsqueeze(-1)
            m = torch.maximum(m, torch.view_as_real(st).abs().max())
        return float(m)

    def _need_calibration(self):
        if not bool(self.calibrated):
            raise ConfigError("the quantized model is not calibrated: run "
                              "edgessm.quant.quantize(model, spec, calibration=X) (PTQ) or "
                              "model.calibrate(X) first")

    # ---- export: the integer network ---------------------------------------------------------
    def _param_key(self):
        return tuple((p.data_ptr(), p._version) for p in self.parameters()) + \
            tuple(int(b.sum()) + 31 * int(b.abs().sum()) for b in (self.exp_y, self.exp_z, self.exp_x)) + \
            (int(self.exp_in), int(self.exp_enc), int(self.exp_out), bool(self.calibrated))

    @torch.no_grad()
    def integer_network(self) -> IntNet:
        """Every mantissa, descale factor and shift of the network (cached until a change)."""
        self._need_calibration()
        key = self._param_key()
        if key == self._int_key and self._int_net is not None:
            return self._int_net
        sp = self.spec
        comp: dict[str, int] = {}
        enc = self._dense_int("encoder", "encoder", self.encoder, int(self.exp_in), sp["input"].bits,
                              int(self.exp_enc), relu=False, comp=comp)
        layers = []
        e_u = int(self.exp_enc)
        for i, b in enumerate(self.blocks):
            s4 = self._s4d_int(i, b.s4d, e_u)
            mix = self._dense_int(f"mixing{i}", "mixing", b.mix, int(self.exp_y[i]),
                                  sp["activations"].bits, int(self.exp_z[i]), relu=True, comp=comp,
                                  res_exp=e_u if b.residual else None)
            layers.append((s4, mix))
            e_u = int(self.exp_z[i])
        dec = self._dense_int("decoder", "decoder", self.decoder, e_u, sp["activations"].bits,
                              int(self.exp_out), relu=False, comp=comp)
        net = IntNet(in_exp=int(self.exp_in), in_bits=sp["input"].bits, in_mode=sp["input"].overflow,
                     encoder=enc, layers=layers, decoder=dec, spec_name=sp.name,
                     compile_overflows=comp, readout=self.config.readout)
        self._int_net, self._int_key, self._int_t = net, key, None
        return net

    def _dense_int(self, key, kind, lin: nn.Linear, in_exp: int, in_bits: int, out_exp: int,
                   relu: bool, comp: dict, res_exp: int | None = None) -> DenseInt:
        """The integer form of `lin`; with `res_exp` (the exponent of the block input) a residual
        connection: the input added after the ReLU with weight 1 (``DenseInt.res_w``)."""
        sp = self.spec
        ts, act, acc = sp[kind], sp["activations"], sp["accumulator"]
        qw = quantize_weight(lin.weight, ts, self.lsq[key] if key in self.lsq else None)
        shift = out_exp - qw.f - in_exp
        b = lin.bias.detach().double() if lin.bias is not None else torch.zeros(qw.m.shape[0], dtype=torch.float64)
        bm = round_half_up(b * 2.0 ** (-out_exp))
        lo, hi = int_range(sp["bias"].bits)
        nb = int(((bm < lo) | (bm > hi)).sum())
        if nb:
            comp[f"{key}.bias"] = nb
        bm = bm.clamp(lo, hi).to(torch.int64)
        # int64 safety: |acc| * g << max(-shift, 0) must stay below 2**62
        K = qw.m.shape[1]
        amax = min(2.0 ** (acc.bits - 1), K * float(qw.m.abs().max().clamp(min=1)) * 2.0 ** (in_bits - 1))
        bound = math.log2(amax) + math.log2(float(qw.g.max())) + max(0, -int(shift.min()))
        if bound > 62:
            raise ConfigError(f"{key}: the descaled accumulator needs {bound:.0f} bits, more than the "
                              f"int64 engine's 62; narrow [accumulator] or [{kind}] descale_bits")
        res = {}
        if res_exp is not None:
            C = qw.m.shape[0]
            res = {"res_w": np.ones(C, np.int64), "res_shift": np.full(C, out_exp - res_exp, np.int64)}
        return DenseInt(name=key, W=_np(qw.m), g=_np(qw.g), shift=_np(shift), bias=_np(bm),
                        relu=relu, out_exp=out_exp, out_bits=act.bits, out_mode=act.overflow,
                        acc_bits=acc.bits, acc_mode=acc.overflow, **res)

    def _s4d_int(self, i: int, s4d, e_u: int) -> S4DInt:
        sp = self.spec
        dA, dB, C = s4d.discrete()
        mA, eA = quantize_coeff(dA, sp["dA"].bits, sp["dA"].per_channel)
        mB, eB = quantize_coeff(dB, sp["dB"].bits, sp["dB"].per_channel)
        mC, eC = quantize_coeff(2 * C, sp["dC"].bits, sp["dC"].per_channel)
        mD, eD = quantize_coeff(s4d.D, sp["D"].bits, sp["D"].per_channel)
        H = dA.shape[0]
        e_x = torch.full((H, 1), int(self.exp_x[i]), dtype=torch.int64)
        e_y = int(self.exp_y[i])
        sA, sB = -eA, e_x - eB - e_u
        sC, sD = (e_y - eC - e_x).squeeze(-1), (e_y - eD - e_u).squeeze(-1)
        st, act = sp["state"], sp["activations"]
        checks = {"dB*u": sp["dB"].bits + act.bits - 2 + max(0, -int(sB.min())),
                  "dA*x": sp["dA"].bits + st.bits - 1,
                  "C*x": sp["dC"].bits + st.bits - 1 + math.log2(max(1, dA.shape[1])) + max(0, -int(sC.min())),
                  "D*u": sp["D"].bits + act.bits - 2 + max(0, -int(sD.min()))}
        for what, bits in checks.items():
            if bits > 62:
                raise ConfigError(f"layer {i} S4D: {what} needs {bits:.0f} bits after alignment, more "
                                  f"than the int64 engine's 62; the exponents of the spec are too far apart")
        return S4DInt(name=f"s4d{i}", ar=_np(mA[..., 0]), ai=_np(mA[..., 1]), br=_np(mB[..., 0]),
                      bi=_np(mB[..., 1]), cr=_np(mC[..., 0]), ci=_np(mC[..., 1]), dm=_np(mD),
                      sA=_np(sA), sB=_np(sB), sC=_np(sC), sD=_np(sD), state_exp=_np(e_x),
                      state_bits=st.bits, state_mode=st.overflow, out_exp=e_y, out_bits=act.bits,
                      out_mode=act.overflow)

    def _tensors(self):
        net = self.integer_network()
        if self._int_t is None:
            T = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
            dense = lambda d: {k: T(getattr(d, k)) for k in ("W", "g", "shift", "bias", "res_w", "res_shift")  # noqa: E731
                               if getattr(d, k) is not None}
            ssm = lambda s: {k: T(getattr(s, k)) for k in ("ar", "ai", "br", "bi", "cr", "ci", "dm",  # noqa: E731
                                                            "sA", "sB", "sC", "sD")}
            self._int_t = {"enc": dense(net.encoder), "dec": dense(net.decoder),
                           "layers": [(ssm(s), dense(m)) for s, m in net.layers]}
        return net, self._int_t

    # ---- eval mode: the integer network in torch int64 -------------------------------------
    def _dense_t(self, a, d: DenseInt, t: dict, res=None):
        acc = a @ t["W"].T
        acc, o = saturate_t(acc, d.acc_bits, d.acc_mode)
        self.overflows["accumulator"] += o
        v = rshift_round_t(acc * t["g"], t["shift"]) + t["bias"]
        v, o = saturate_t(v, d.out_bits, d.out_mode)
        self.overflows["activations"] += o
        v = v.clamp(min=0) if d.relu else v
        if d.res_w is not None:
            v = v + rshift_round_t(t["res_w"] * res, t["res_shift"])
            v, o = saturate_t(v, d.out_bits, d.out_mode)
            self.overflows["activations"] += o
        return v

    def _s4d_step_t(self, u, xr, xi, s: S4DInt, t: dict):
        uu = u.unsqueeze(-1)
        ar, ai = t["ar"], t["ai"]
        nr = _rsr_t_(ar * xr - ai * xi, t["sA"])
        nr += _rsr_t_(t["br"] * uu, t["sB"])
        ni = _rsr_t_(ar * xi + ai * xr, t["sA"])
        ni += _rsr_t_(t["bi"] * uu, t["sB"])
        nr, o1 = saturate_t(nr, s.state_bits, s.state_mode)
        ni, o2 = saturate_t(ni, s.state_bits, s.state_mode)
        self.overflows["state"] += o1 + o2
        yc = (t["cr"] * nr - t["ci"] * ni).sum(-1)
        y = rshift_round_t(yc, t["sC"]) + rshift_round_t(t["dm"] * u, t["sD"])
        y, o = saturate_t(y, s.out_bits, s.out_mode)
        self.overflows["activations"] += o
        return y, nr, ni

    @torch.no_grad()
    def int_forward(self, x: torch.Tensor, all_tokens: bool = True) -> torch.Tensor:
        """The decoder's integer outputs (mantissas): at every token (B, L, d_out) (all_tokens),
        or (B, d_out) the last token's, int64. With a mean readout the logits are their running
        mean (:meth:`forward`, :meth:`forward_tokens`)."""
        check_tensor(x, ndim=3, last=self.config.d_input, name="x", what="(batch, length, d_input)")
        net, T = self._tensors()
        xm, o = quantize_input_t(x, net.in_exp, net.in_bits)
        self.overflows["input"] += o
        h = self._dense_t(xm, net.encoder, T["enc"])
        B, L, H = h.shape
        for (s, m), (ts, tm) in zip(net.layers, T["layers"]):
            xr = torch.zeros(B, H, s.n, dtype=torch.int64, device=h.device)
            xi = torch.zeros_like(xr)
            ys = torch.empty(B, L, H, dtype=torch.int64, device=h.device)
            for k in range(L):
                ys[:, k], xr, xi = self._s4d_step_t(h[:, k], xr, xi, s, ts)
            h = self._dense_t(ys.clamp_(min=0), m, tm, res=h)
        return self._dense_t(h if all_tokens else h[:, -1], net.decoder, T["dec"])

    def _to_float(self, m: torch.Tensor) -> torch.Tensor:
        return (m.double() * 2.0 ** int(self.exp_out)).float()

    def _readout_int(self, out: torch.Tensor) -> torch.Tensor:
        """Logits after every token from the decoder's integer outputs (B, L, d_out): as they are
        (last-token readout), or their running mean, the sums exact in float64 (mean readout)."""
        return self._to_float(_running_mean(out.double()) if self.config.readout == "mean" else out)

    def reset_overflows(self):
        self.overflows = {k: 0 for k in OVERFLOW_KINDS}

    # ---- train mode: fake quantization ------------------------------------------------------
    def _fq_linear(self, key, kind, lin, x):
        """Fake-quantized Linear on channel-major x (B, in, L) -> (B, out, L)."""
        w = fake_quant_weight(lin.weight, self.spec[kind], self.lsq[key] if key in self.lsq else None)
        return channel_linear(x, w, lin.bias)

    def _fq_s4d(self, s4d, u, last: bool = False):
        """Fake-quantized S4D on channel-major u (B, H, L), by FFT convolution; `last`: its last
        output only, (B, H, 1), in one pass over u."""
        sp = self.spec
        dA, dB, C = s4d.discrete()
        dAq = fake_quant_coeff(dA, sp["dA"].bits, sp["dA"].per_channel)
        dBq = fake_quant_coeff(dB, sp["dB"].bits, sp["dB"].per_channel)
        Cq2 = fake_quant_coeff(2 * C, sp["dC"].bits, sp["dC"].per_channel)
        Dq = fake_quant_coeff(s4d.D, sp["D"].bits, sp["D"].per_channel)
        logA = torch.complex(torch.log(dAq.abs().clamp(min=1e-12)), torch.angle(dAq))
        K = vandermonde_kernel(Cq2 / 2 * dBq, logA, u.shape[-1])
        K = torch.cat([K[:, :1] + Dq.unsqueeze(-1), K[:, 1:]], dim=1)     # + Dq u, in the kernel
        if last:
            return conv_last(u, K).unsqueeze(-1)
        return fft_conv(u, K)

    def _fq_features(self, x, last: bool = False):
        """(B, L, d_in) -> the last block's fake-quantized output, channel-major (B, H, L);
        `last`: its last position only, (B, H, 1) (the last block's convolution reduced to its
        last output; every quantizer is elementwise, so the values are the same)."""
        if not bool(self.calibrated):  # QAT from a wrap without data: calibrate on the first batch
            self.calibrate(x.detach())
        sp = self.spec
        ab = sp["activations"].bits
        x = fake_quant_act(x, int(self.exp_in), sp["input"].bits).transpose(1, 2)
        h = fake_quant_act(self._fq_linear("encoder", "encoder", self.encoder, x), int(self.exp_enc), ab)
        for i, b in enumerate(self.blocks):
            if last and i == len(self.blocks) - 1:
                y, h = self._fq_s4d(b.s4d, h, last=True), h[..., -1:]
            else:
                y = self._fq_s4d(b.s4d, h)
            y = fake_quant_act(y, int(self.exp_y[i]), ab, relu=True)
            z = self._fq_linear(f"mixing{i}", "mixing", b.mix, b.dropout(y, 1))
            z = fake_quant_act(z, int(self.exp_z[i]), ab, relu=True)
            if b.residual:      # the block input rounded to the output's grid, the sum saturated
                z = fake_quant_act(z + fake_quant_act(h, int(self.exp_z[i]), ab), int(self.exp_z[i]), ab)
            h = z
        return h

    def _fq_decoder(self, h):
        """Fake-quantized decoder on (B, H) or (B, L, H) -> its outputs (the logits of a
        last-token readout)."""
        w = fake_quant_weight(self.decoder.weight, self.spec["decoder"],
                              self.lsq["decoder"] if "decoder" in self.lsq else None)
        return fake_quant_act(F.linear(h, w, self.decoder.bias), int(self.exp_out),
                              self.spec["activations"].bits)

    def _fq_logits(self, x, all_tokens: bool):
        """Fake-quantized logits: (B, L, d_out) after every token, or (B, d_out) after the last.
        A mean readout averages the decoder's per-token outputs, as the host does with the
        integer ones."""
        if self.config.readout == "mean":
            out = self._fq_decoder(self._fq_features(x).transpose(1, 2))
            return _running_mean(out) if all_tokens else out.mean(1)
        if all_tokens:
            return self._fq_decoder(self._fq_features(x).transpose(1, 2))
        return self._fq_decoder(self._fq_features(x, last=True)[..., -1])

    # ---- the SequenceModel interface ----------------------------------------------------------
    def features(self, x, mode=None):
        check_tensor(x, ndim=3, last=self.config.d_input, name="x", what="(batch, length, d_input)")
        return self._fq_features(x).transpose(1, 2)

    def forward(self, x: torch.Tensor, mode=None) -> torch.Tensor:
        """(B, L, d_in) -> logits (B, d_out): fake-quantized in train mode, integer-exact in eval."""
        check_tensor(x, ndim=3, last=self.config.d_input, name="x", what="(batch, length, d_input)")
        if self.training or not self.exact_eval:
            return self._fq_logits(x, all_tokens=False)
        return self.exact_logits(x).float()

    @torch.no_grad()
    def exact_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The integer network's logits after the last token, (B, d_out) float64: the decoder's
        last output, or with a mean readout the mean of its outputs over the tokens, scaled by
        2^out_exp, as the deployment reads them. :meth:`forward` in eval mode returns them
        rounded to float32; an argmax should read these: a mean readout's sums of 1,024 tokens
        carry more than float32's 24 bits, and rounding could tie two classes."""
        check_tensor(x, ndim=3, last=self.config.d_input, name="x", what="(batch, length, d_input)")
        mean = self.config.readout == "mean"
        out = self.int_forward(x, all_tokens=mean)                 # the last token's alone: (B, d)
        return final_logits(out if mean else out[:, None], self.config.readout, int(self.exp_out))

    def forward_tokens(self, x: torch.Tensor, mode=None) -> torch.Tensor:
        check_tensor(x, ndim=3, last=self.config.d_input, name="x", what="(batch, length, d_input)")
        if self.training or not self.exact_eval:
            return self._fq_logits(x, all_tokens=True)
        return self._readout_int(self.int_forward(x, all_tokens=True))

    def init_state(self, batch: int = 1) -> IntState:
        """The integer network's streaming state (:class:`~.intnet.IntState`, torch tensors on
        the model's device), zero."""
        if not isinstance(batch, int) or batch < 1:
            raise InputError(f"batch must be a positive integer, got {batch!r}")
        c = self.config
        dev = self.exp_in.device

        def zeros():
            return torch.zeros(batch, c.d_model, c.d_state // 2, dtype=torch.int64, device=dev)
        total = torch.zeros(batch, c.d_output, dtype=torch.int64, device=dev) if c.readout == "mean" else None
        return IntState([(zeros(), zeros()) for _ in range(c.n_layers)], {}, 0, total)

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, state: IntState):
        """One token through the integer network: (logits (B, d_out), new state)."""
        check_tensor(x_t, ndim=2, last=self.config.d_input, name="x_t", what="(batch, d_input)")
        H, n = self.config.d_model, self.config.d_state // 2
        mean = self.config.readout == "mean"
        if not isinstance(state, IntState) or len(state.layers) != len(self.blocks) \
                or any(not isinstance(a, torch.Tensor) or a.dtype != torch.int64 or a.shape != (x_t.shape[0], H, n)
                       for pair in state.layers for a in pair) \
                or not state.readout_fits(self.config.readout, self.config.d_output):
            raise InputError(f"state does not belong to this quantized model and batch "
                             f"{x_t.shape[0]}; create it with init_state({x_t.shape[0]}) (an engine's "
                             f"numpy state: state.to_torch())")
        net, T = self._tensors()
        xm, o = quantize_input_t(x_t, net.in_exp, net.in_bits)
        self.overflows["input"] += o
        h = self._dense_t(xm, net.encoder, T["enc"])
        new = []
        for (s, m), (ts, tm), (xr, xi) in zip(net.layers, T["layers"], state.layers):
            y, xr, xi = self._s4d_step_t(h, xr, xi, s, ts)
            new.append((xr, xi))
            h = self._dense_t(y.clamp(min=0), m, tm, res=h)
        out = self._dense_t(h, net.decoder, T["dec"])
        if not mean:
            return self._to_float(out), IntState(new, {}, state.t + 1)
        total = state.total + out
        return (total.double() / (state.t + 1) * 2.0 ** int(self.exp_out)).float(), \
            IntState(new, {}, state.t + 1, total)

    def extra_repr(self) -> str:
        return f"spec={self.spec.name!r}, calibrated={bool(self.calibrated)}"


def final_logits(out: torch.Tensor, readout: str, out_exp: int) -> torch.Tensor:
    """The logits after the last token, float64 (B, d_out), from the decoder's integer outputs
    (B, L, d_out) (a last-token readout reads position -1 alone): the last output, or with a mean
    readout the mean of all L, scaled by 2^out_exp. The model's exact path and the training
    loop's engine path both read them."""
    final = out.sum(1).double() / out.shape[1] if readout == "mean" else out[:, -1].double()
    return final * 2.0 ** out_exp


def _running_mean(out: torch.Tensor) -> torch.Tensor:
    """The mean of (B, L, d) over the tokens up to each one (the torch twin of
    :func:`.intnet.mean_readout`, for the fake-quantized and the exact paths)."""
    count = torch.arange(1, out.shape[1] + 1, dtype=out.dtype, device=out.device).view(1, -1, 1)
    return out.cumsum(1) / count


def build_quantized(config: ModelConfig, quant_meta: dict) -> QuantSequenceModel:
    """Rebuild a quantized model from a checkpoint's "quant" metadata (used by edgessm.load)."""
    from ..errors import CheckpointError
    if not isinstance(quant_meta, dict) or "spec" not in quant_meta:
        raise CheckpointError("the checkpoint's \"quant\" entry has no \"spec\"; it was not written "
                              "by edgessm's quantizer")
    if quant_meta.get("format_version", 1) > QUANT_META_VERSION:
        raise CheckpointError("the checkpoint's quantization format is newer than this edgessm; upgrade")
    try:
        spec = QuantSpec.from_dict(quant_meta["spec"])
    except Exception as e:  # noqa: BLE001 - a corrupt spec is a corrupt checkpoint
        raise CheckpointError(f"the checkpoint's quantization spec is invalid: {e}") from None
    return QuantSequenceModel(config, spec)
