"""Hardware-aware (crossbar-aware) S4D network: the numerics shared by training and the
simulator, and the ``wrap`` for the training loop.

Every matrix-vector product runs the way an array computes it::

    v = DAC(x / r)              inputs scaled to the DAC range r (one per matrix), clipped to
                                [-1, 1] and rounded to dac_bits (signed)
    n = W_q v                   W_q: weights quantized to the conductance levels per output
                                (per-column scale; ternary {-1,0,+1} for weight_bits = 2) with
                                write noise injected while training (straight-through gradients)
    n = ADC(n)                  clipped at the column's full scale, rounded to adc_bits (signed)
    y = r n + bias              digital periphery

The S4D layer runs its recurrence token by token on one real block matrix per channel
(inputs [w_re, w_im, v_u], outputs [w_re', w_im', y/r], n = N/2 complex states)::

    w_k = dA w_(k-1) + b v_u          b = dB / |dB| * sqrt(1 - |dA|^2) / rho
    y_k / r = Re(c w_(k-1)) + d v_u   c = 2 C dA sigma rho,  d = 2 Re(sum C dB) + D
    (x = r * sigma * rho * w,  sigma = |dB| / sqrt(1 - |dA|^2))

i.e. the state x is normalized per complex state so the input coupling has the size of an
RMS-stationary response and one gain rho per complex state puts |w| <= 1 on the calibration
data (each state uses the whole converter range: a similarity transform of the diagonal
recurrence, free on the array); every entry is then O(1) and the matrix does not depend on the
DAC range r. Both rows of a
complex state share one scale, so the quantized block is still a complex diagonal SSM
(``project`` turns it back into plain S4D parameters). The state passes through the ADC
and, in ``state_mode = "digital"``, through the DAC again every step; with ``state_dither``
the state skips the ADC and is rounded once, at the DAC, after the dither of
:func:`dither_offsets`. With ``recurrence = "digital"`` the same quantized block runs in the
digital periphery: no DAC on its input, no write noise, the state rounded to a
``digital_state_bits`` word (dithered or half up), the output column exact.
"""
from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError, InputError
from ...quant.quantizers import split_descale_np
from ...quant.spec import TensorSpec
from ...ssm.kernel import fft_conv, vandermonde_kernel
from ...ssm.network import SequenceModel
from ...ssm.validate import check_tensor
from .device import FIELDS, CrossbarConfig, load_device, parse_options, program_devices
from .scan import (amax_abs, array_mvm, available as scan_available, block_scan, converter, layer_scan,
                   native_ok, warn_fallback, write_noise_sum)

HW_META_FORMAT = "edgessm-crossbar-hw"
HW_META_VERSION = 1
_TINY = 1e-12
_EMA = 0.05
_RHO_FLOOR = 0.01      # the smallest state gain, relative to its layer's largest


def weight_spec(bits: int) -> TensorSpec:
    """Per-output-channel weight quantizer: TWN ternary for 2 bits, uniform otherwise."""
    return TensorSpec(bits=bits, method="ternary" if bits == 2 else "uniform", per_channel=True,
                      descale_bits=16)


def quant_linear(W: torch.Tensor, bits: int, with_mask: bool = False):
    """(q, scale): q (out, in) in [-1, 1] on the signed levels, scale (out,) the digital column
    gain, W_q = q * scale[:, None]; with_mask: (q, scale, mask), mask the quantizer's
    straight-through gradient (None: 1; uniform levels: 0 where it clipped). Values only, no
    autograd (``HwSequenceModel._weight`` attaches the straight-through gradient).

    Per output row w: ternary for 2 bits (TWN: threshold 0.7 mean|w|, step the mean of the kept
    |w|), else uniform (step max|w| / qmax); the step as g 2^f with g below 2^15 (the descale of
    ``quantize_weight``, ``split_descale``), the signed levels m = round(clamp(w / step)), q =
    m / qmax, scale = g 2^f qmax. In numpy, statistics in float64: the arrays' matrices are
    small, and torch's per-op cost would be most of it."""
    ts = weight_spec(bits)
    w = W.detach().cpu().double().numpy()
    a = np.abs(w)
    if ts.method == "ternary":
        keep = a > 0.7 * np.maximum(a.mean(-1), 1e-30)[:, None]
        g, f = split_descale_np((a * keep).sum(-1) / np.maximum(keep.sum(-1), 1), ts.descale_bits)
        m = np.sign(w) * keep
        x = None
    else:
        g, f = split_descale_np(a.max(-1) / ts.qmax, ts.descale_bits)
        x = w / (g * np.exp2(f))[:, None]
        m = np.floor(np.clip(x, -ts.qmax, ts.qmax) + 0.5)
    step = g * np.exp2(f)
    q = torch.from_numpy(m / ts.qmax).to(device=W.device, dtype=W.dtype)
    scale = torch.from_numpy(step * ts.qmax).to(device=W.device, dtype=W.dtype)
    if not with_mask:
        return q, scale
    mask = None if x is None else torch.from_numpy(np.abs(x) <= ts.qmax).to(W.device)
    return q, scale, mask


_M32 = 0xFFFFFFFF
_DITHER_CACHE: dict = {}


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply rounds) on int64 tensors holding 32-bit values."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def dither_offsets(layer: int, H: int, n2: int, t0: int, L: int, dtype=torch.float32) -> torch.Tensor:
    """(L, H, n2): the offsets U in (0, 1) that the dithered state rounding floor(x q + U) / q
    adds for tokens t0 .. t0+L-1 of S4D layer `layer` (round half up is U = 1/2): uniform
    pseudo-random, a hash of (layer, token, channel, state), the same for every sequence and
    device instance (an on-chip generator restarted per sequence), exact in float32. Whole
    sequences (t0 = 0) are cached; a streaming step's single token is computed, so that it does
    not push the training tables out of the cache."""
    key = (layer, H, n2, L, dtype)
    hit = _DITHER_CACHE.get(key) if t0 == 0 else None
    if hit is not None:
        return hit
    t = torch.arange(t0, t0 + L, dtype=torch.int64) & _M32
    a = _mix32(t * 0x9E3779B1 + (int(layer) + 1) * 0x85EBCA77)
    j = torch.arange(H * n2, dtype=torch.int64)
    x = _mix32(a.unsqueeze(1) ^ _mix32(j * 0x27D4EB2F + 0x165667B1).unsqueeze(0))
    u = ((x >> 9).double() * 2.0 ** -23 + 2.0 ** -24).to(dtype).reshape(L, H, n2)
    if t0 == 0:
        if len(_DITHER_CACHE) > 16:
            _DITHER_CACHE.clear()
        _DITHER_CACHE[key] = u
    return u


def block_matrix(s4d, rho: float | torch.Tensor = 1.0, fixed: float = 0.0) -> torch.Tensor:
    """The real block matrix per channel, (H, n2+1, n2+1) as (out, in), n2 = N = 2 * (N/2).
    rho: the state gain, a number or one per complex state (H, N/2).

    The gain of a state is at least sqrt(2 (1 - |dA|^2)) / |dA| (so |b| <= |dA| / sqrt(2)): the
    two rows of a complex state share one quantization scale, the largest of their entries, and
    an input coupling b larger than the recurrence's entries would make that scale coarse for
    dA (a quantized |dA| above 1 is an unstable recurrence).

    fixed > 0: use the state scaling sigma * rho = fixed for every state instead of the RMS
    normalization (a projected checkpoint: its quantized block comes back exactly).

    For zoh discretization the whole map, S4D parameters to M, is one autograd node computed in
    numpy in float64 with its backward written out (``_BlockZoh``): the matrices are small and
    torch's cost per operation would be most of it. Other discretizations: torch ops."""
    if s4d.discretization == "zoh":
        k = None if fixed > 0 else torch.as_tensor(rho, dtype=torch.float64).expand(s4d.A_imag.shape)
        return _BlockZoh.apply(s4d.log_dt, s4d.log_A_real, s4d.A_imag, s4d.B, s4d.C, s4d.D, k, float(fixed))
    return _block_matrix_torch(s4d, rho, fixed)


def _block_matrix_torch(s4d, rho, fixed: float) -> torch.Tensor:
    """block_matrix by torch ops (autograd), any discretization."""
    dA, dB, C = s4d.discrete()
    H, n = dA.shape
    if fixed > 0:
        sr = torch.full(dA.shape, float(fixed), dtype=dA.real.dtype)
    else:
        mag = dA.abs().clamp(max=1 - 1e-6)
        root = torch.sqrt(1 - mag ** 2)
        with torch.no_grad():
            cap = root * math.sqrt(2.0) / mag.clamp(min=1e-3)
        sr = dB.abs().clamp(min=_TINY) / root * torch.maximum(torch.as_tensor(rho, dtype=cap.dtype), cap)
    b = dB / sr
    c = 2 * C * dA * sr
    d = 2 * (C * dB).real.sum(-1) + s4d.D
    Ar, Ai = torch.diag_embed(dA.real), torch.diag_embed(dA.imag)       # (H, n, n)
    top = torch.cat([Ar, -Ai, b.real.unsqueeze(-1)], -1)                # rows 0..n-1: Re w
    mid = torch.cat([Ai, Ar, b.imag.unsqueeze(-1)], -1)                 # rows n..2n-1: Im w
    bot = torch.cat([c.real, -c.imag, d.unsqueeze(-1)], -1).unsqueeze(1)  # row 2n: y / r
    return torch.cat([top, mid, bot], 1)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


def _cplx(t: torch.Tensor) -> np.ndarray:
    """(..., 2) real pairs -> complex128."""
    a = _np(t)
    return a[..., 0] + 1j * a[..., 1]


class _BlockZoh(torch.autograd.Function):
    """block_matrix for zoh discretization: (log_dt (H,), log_A_real, A_imag (H, n), B, C (H, n, 2),
    D (H,), the state gain rho (H, n) or None, fixed) -> M (H, 2n+1, 2n+1), in numpy (float64),
    the torch ops' formulas; its backward by the chain rule in PyTorch's convention for complex
    values (the gradient of a real loss L at z = x + iy is dL/dx + i dL/dy, so dL = Re(conj(G) dz))."""

    @staticmethod
    def forward(ctx, log_dt, log_A_real, A_imag, B, C, D, rho, fixed):
        dt = np.exp(_np(log_dt))
        A = -np.exp(_np(log_A_real)) + 1j * _np(A_imag)
        Bc, Cc = _cplx(B), _cplx(C)
        a = np.exp(dt[:, None] * A)                                   # dA
        Q = (a - 1) / A
        beta = Q * Bc                                                 # dB
        H, n = a.shape
        absb = np.abs(beta)
        if fixed > 0:
            sr = np.full((H, n), fixed)
            mag = root = kf = None
        else:
            mag = np.minimum(np.abs(a), 1 - 1e-6)
            root = np.sqrt(1 - mag ** 2)
            kf = np.maximum(_np(rho), root * math.sqrt(2.0) / np.maximum(mag, 1e-3))
            sr = np.maximum(absb, _TINY) / root * kf
        b = beta / sr
        c = 2 * Cc * a * sr
        d = 2 * (Cc * beta).real.sum(-1) + _np(D)
        K = 2 * n + 1
        i = np.arange(n)
        M = np.zeros((H, K, K))
        M[:, i, i] = M[:, n + i, n + i] = a.real
        M[:, i, n + i] = -a.imag
        M[:, n + i, i] = a.imag
        M[:, i, 2 * n], M[:, n + i, 2 * n] = b.real, b.imag
        M[:, 2 * n, i], M[:, 2 * n, n + i] = c.real, -c.imag
        M[:, 2 * n, 2 * n] = d
        ctx.vals = (dt, A, Bc, Cc, a, Q, beta, absb, sr, mag, root, kf, b, fixed > 0)
        return torch.from_numpy(M).to(device=log_dt.device, dtype=log_dt.dtype)

    @staticmethod
    def backward(ctx, gM):
        dt, A, Bc, Cc, a, Q, beta, absb, sr, mag, root, kf, b, fixed = ctx.vals
        n = a.shape[1]
        i, e = np.arange(n), 2 * n
        g = _np(gM)
        Ga = (g[:, i, i] + g[:, n + i, n + i]) + 1j * (g[:, n + i, i] - g[:, i, n + i])
        Gb = g[:, i, e] + 1j * g[:, n + i, e]
        Gc = g[:, e, i] - 1j * g[:, e, n + i]
        gd = g[:, e, e]
        GC = 2 * gd[:, None] * np.conj(beta)                          # d = 2 Re(sum C dB) + D
        Gbeta = 2 * gd[:, None] * np.conj(Cc)
        GC = GC + np.conj(2 * a * sr) * Gc                            # c = C P, P = 2 dA sr
        GP = np.conj(Cc) * Gc
        Ga = Ga + 2 * sr * GP
        gsr = 2 * (np.conj(GP) * a).real
        Gbeta = Gbeta + Gb / sr                                       # b = dB / sr
        gsr = gsr - (np.conj(Gb) * b).real / sr
        if not fixed:                   # sr = max(|dB|, tiny) / root(|dA|) * k, k constant
            gabs = gsr * kf / root * (absb >= _TINY)
            Gbeta = Gbeta + gabs * beta / np.where(absb > 0, absb, 1)
            gmag = gsr * sr * mag / root ** 2
            absa = np.abs(a)
            Ga = Ga + gmag * (absa <= 1 - 1e-6) * a / np.where(absa > 0, absa, 1)
        GBc = np.conj(Q) * Gbeta                                      # dB = Q B
        GQ = np.conj(Bc) * Gbeta
        Ga = Ga + GQ / np.conj(A)                                     # Q = (dA - 1) / A
        GA = -GQ * np.conj((a - 1) / A ** 2)
        GdtA = np.conj(a) * Ga                                        # dA = exp(dt A)
        GA = GA + dt[:, None] * GdtA
        gdt = (np.conj(GdtA) * A).real.sum(-1)
        dev, dtp = gM.device, gM.dtype
        t = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(device=dev, dtype=dtp)  # noqa: E731
        pair = lambda z: t(np.stack([z.real, z.imag], -1))             # noqa: E731
        need = ctx.needs_input_grad
        return (t(gdt * dt) if need[0] else None,
                t(GA.real * A.real) if need[1] else None,                # A.real = -exp(log_A_real)
                t(GA.imag) if need[2] else None,
                pair(GBc) if need[3] else None,
                pair(GC) if need[4] else None,
                t(gd) if need[5] else None,
                None, None)


def quant_block(M: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, scale) of a block matrix (H, K, K): uniform per output row, the two rows of a
    complex state sharing one scale s (the larger of their max |entry|); q = round(clamp(M / s,
    -1, 1) qmax) / qmax, rounding half up. Values only, no autograd (``HwSequenceModel._block_q``
    attaches the straight-through gradient); elementwise IEEE operations in M's dtype (numpy: the
    bits of the same torch ops)."""
    H, K, _ = M.shape
    n = (K - 1) // 2
    qmax = (1 << (bits - 1)) - 1
    m = M.detach().cpu().numpy()
    s = np.maximum(np.abs(m).max(-1), m.dtype.type(_TINY))                     # (H, K)
    pair = np.maximum(s[:, :n], s[:, n:2 * n])
    s = np.concatenate([pair, pair, s[:, 2 * n:]], -1)
    q = np.floor(np.clip(m / s[..., None], -1, 1) * m.dtype.type(qmax) + m.dtype.type(0.5)) / m.dtype.type(qmax)
    return torch.from_numpy(q).to(M.device), torch.from_numpy(s).to(M.device)


class _Straight(torch.autograd.Function):
    """value (computed from x without autograd) forward; the gradient to x backward, times mask
    where there is one (a straight-through estimate)."""

    @staticmethod
    def forward(ctx, x, value, mask):
        ctx.save_for_backward(mask)
        return value

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return (g if mask is None else g * mask), None, None


def _straight(x: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return _Straight.apply(x, value, mask) if x.requires_grad and torch.is_grad_enabled() else value


class _Converter(torch.autograd.Function):
    """floor(clamp(v / fs, -1, 1) * q + U) / q * fs in place on one buffer (U = 1/2, or the
    dither offsets); gradient: the straight-through estimate, 1 where the clamp was inactive
    (|v / fs| <= 1), else 0."""

    @staticmethod
    def forward(ctx, v, fs, q, off):
        x = v / fs
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward((x >= -1) & (x <= 1))
        return x.clamp_(-1, 1).mul_(q).add_(off).floor_().div_(q).mul_(fs)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask, None, None, None


def fake_converter(v: torch.Tensor, full_scale, bits: int, offset=0.5) -> torch.Tensor:
    """Signed converter: clip to [-fs, fs], round half up to 2**(bits-1) - 1 steps per side
    (straight-through gradient). full_scale: a number or a tensor without gradient; offset:
    1/2, or dither offsets in (0, 1) broadcast against v (:func:`dither_offsets`)."""
    q = (1 << (bits - 1)) - 1
    fs = full_scale.detach() if isinstance(full_scale, torch.Tensor) else full_scale
    return _Converter.apply(v, fs, float(q), offset)


def write_noise(q: torch.Tensor, cfg, generator=None, native: bool = True) -> torch.Tensor:
    """q plus the programming error of its differential pairs, in units of the window
    (G_max - G_min): the device's write noise, bounded by the write-verify loop when
    ``verify_tolerance_us > 0``, averaged over ``devices_per_weight`` pairs. native: without
    write-verify, the sums in one pass (scan.c, the same bits); False: the torch ops."""
    win = cfg.g_max_us - cfg.g_min_us
    k = cfg.devices_per_weight
    with torch.no_grad():
        fused = native and cfg.verify_tolerance_us <= 0 and native_ok(q)   # the ops below in one pass
        if not fused:
            gp = cfg.g_min_us + q.detach().clamp(min=0) * win
            gm = cfg.g_min_us - q.detach().clamp(max=0) * win
        e = torch.zeros_like(q)
        for _ in range(k):
            ep = torch.randn(q.shape, generator=generator, dtype=q.dtype)
            em = torch.randn(q.shape, generator=generator, dtype=q.dtype)
            if fused:
                write_noise_sum(q, ep, em, e, cfg.g_min_us, win, cfg.write_noise_sigma_us, cfg.write_noise_slope,
                                math.sqrt(100.0 / cfg.program_verify_iterations))
            elif cfg.verify_tolerance_us > 0:
                e = e + (program_devices(gp, cfg, ep, generator)[0] - gp
                         - (program_devices(gm, cfg, em, generator)[0] - gm)) / win
            else:
                e = e + (cfg.write_sigma_us(gp) * ep - cfg.write_sigma_us(gm) * em) / win
        e = e / k
    return q + e


class HwSequenceModel(SequenceModel):
    """A SequenceModel that computes as the crossbar does (see the module docstring).

    Its state_dict is the float model's (same keys); the DAC ranges, ADC full scales and
    state gains are non-persistent buffers, exported by :meth:`hw_meta`.
    ``train()``: write noise injected at the device's sigma (``cfg.noise``), ranges tracked
    by a moving maximum; ``eval()``: ideal devices, quantization and converters only.
    """

    def __init__(self, config, hw=None):
        if config.mix_norm:
            raise ConfigError("the crossbar programs the mixing batch norm folded into the mixing "
                              "weights: build with HwSequenceModel.from_float(model), which folds "
                              "(SequenceModel.fold_norms), or set mix_norm=False")
        super().__init__(config)
        self.hw = hw if isinstance(hw, CrossbarConfig) else load_device(hw or "default")
        c = config
        nb = lambda *s: torch.zeros(*s)  # noqa: E731
        self.register_buffer("r_enc", nb(()), persistent=False)
        self.register_buffer("r_s4d", nb(c.n_layers), persistent=False)
        self.register_buffer("r_mix", nb(c.n_layers), persistent=False)
        self.register_buffer("r_dec", nb(()), persistent=False)
        self.register_buffer("rho", torch.ones(c.n_layers, c.d_model, c.d_state // 2), persistent=False)
        self.register_buffer("norm_fixed", torch.zeros(c.n_layers), persistent=False)
        H, K = c.d_model, c.d_state + 1
        mo = 2 * H if c.mixing == "glu" else H
        self.register_buffer("fs_enc", nb(H), persistent=False)
        self.register_buffer("fs_s4d", nb(c.n_layers, H, K), persistent=False)
        self.register_buffer("fs_mix", nb(c.n_layers, mo), persistent=False)
        self.register_buffer("fs_dec", nb(c.d_output), persistent=False)
        self.calibrated = False
        self._calib = False
        self.scan = "native"     # the S4D recurrence: "native" (scan.c) or "loop" (the reference)
        self.saturations = 0
        if c.d_state % 2:
            raise ConfigError("the crossbar mapping needs an even d_state (complex states as pairs)")

    # ---- construction / export ---------------------------------------------------------------
    @classmethod
    def from_float(cls, model: SequenceModel, hw=None) -> "HwSequenceModel":
        training = model.training
        model = model.fold_norms()          # a mixing batch norm becomes the mixing weights
        m = cls(model.config, hw)
        m.load_state_dict(model.state_dict())
        meta = (getattr(model, "checkpoint_meta", {}) or {}).get("hw")
        if isinstance(model, HwSequenceModel) and model.calibrated:
            m.load_ranges(model.ranges())
        elif meta and meta.get("ranges"):
            m.load_ranges(meta["ranges"])
        m.metrics = dict(getattr(model, "metrics", {}) or {})
        m.checkpoint_meta = copy.deepcopy(getattr(model, "checkpoint_meta", {}) or {})
        m.train(training)
        return m

    _RANGE_KEYS = ("r_enc", "r_s4d", "r_mix", "r_dec", "rho", "norm_fixed", "fs_enc", "fs_s4d", "fs_mix", "fs_dec")

    def ranges(self) -> dict:
        return {k: getattr(self, k).tolist() for k in self._RANGE_KEYS}

    def load_ranges(self, d: dict):
        for k in self._RANGE_KEYS:
            if k not in d and k == "norm_fixed":
                continue
            t = torch.as_tensor(d[k], dtype=getattr(self, k).dtype)
            if k == "rho" and t.dim() == 1 and t.shape[0] == self.rho.shape[0]:
                t = t.view(-1, 1, 1).expand_as(self.rho)      # one gain per layer (older ranges)
            if t.shape != getattr(self, k).shape:
                raise ConfigError(f"hw ranges {k}: shape {tuple(t.shape)} does not fit the model "
                                  f"{tuple(getattr(self, k).shape)}")
            getattr(self, k).copy_(t)
        self.calibrated = True

    def hw_meta(self) -> dict:
        """JSON metadata: device overrides, precisions and calibrated ranges."""
        default = CrossbarConfig()
        dev = {k: v for k, v in dataclasses.asdict(self.hw).items() if getattr(default, k) != v}
        return {"format": HW_META_FORMAT, "format_version": HW_META_VERSION, "device": dev,
                "weight_bits": self.hw.weight_bits, "ssm_bits": self.hw.ssm_bits,
                "state_mode": self.hw.state_mode, "ranges": self.ranges()}

    def save_deployable(self, path, metrics: dict | None = None, extra: dict | None = None):
        """What `edgessm train --hw crossbar` writes at the end: see :func:`save_hw`."""
        return save_hw(self, path, metrics=metrics, extra=extra)

    # ---- quantized matrices (normalized q, digital scale) ----------------------------------------
    def qlinear(self, lin: nn.Linear):
        return quant_linear(lin.weight, self.hw.weight_bits)

    def qblock(self, i: int):
        return quant_block(block_matrix(self.blocks[i].s4d, self.rho[i], float(self.norm_fixed[i])),
                           self.hw.ssm_bits)

    def _noisy(self, q, kind: str = "linear"):
        if kind == "s4d" and self.hw.recurrence == "digital":
            return q
        if self.training and self.hw.noise and not self._calib \
                and self.hw.write_noise_arrays in ("all", kind):
            return write_noise(q, self.hw, native=self.scan == "native")
        return q

    def _weight(self, lin: nn.Linear) -> torch.Tensor:
        """The matrix an array applies, W_q = (q + write noise) * scale (``qlinear``, ``_noisy``),
        computed without autograd (the values of those ops), with the straight-through gradient
        to lin.weight: 1, or for uniform levels 0 where the quantizer clipped."""
        with torch.no_grad():
            q, scale, mask = quant_linear(lin.weight, self.hw.weight_bits, with_mask=True)
            Wq = self._noisy(q) * scale.unsqueeze(-1)
        return _straight(lin.weight, Wq, mask)

    def _block_q(self, i: int) -> tuple[torch.Tensor, bool]:
        """(M_q, noisy): the block matrices the arrays apply, (q + write noise) * s (``qblock``,
        ``_noisy``), with the straight-through gradient (1) to the block matrix of the S4D
        parameters; noisy: whether write noise was added (else M_q is zero outside its complex
        pairs)."""
        M = block_matrix(self.blocks[i].s4d, self.rho[i], float(self.norm_fixed[i]))
        with torch.no_grad():
            q, s = quant_block(M, self.hw.ssm_bits)
            qn = self._noisy(q, "s4d")
            Mq = qn * s.unsqueeze(-1)
        return _straight(M, Mq), qn is not q

    # ---- one MVM ---------------------------------------------------------------------------------
    def _track(self, buf: torch.Tensor, value: torch.Tensor, idx=None):
        value = value.detach().to(buf.dtype)
        if self._calib:
            new = value
        elif self.training:
            cur = buf if idx is None else buf[idx]
            new = (1 - _EMA) * cur + _EMA * value
        else:
            return
        if idx is None:
            buf.copy_(new)
        else:
            buf[idx] = new

    def _native(self, x) -> bool:
        """The converters and range trackers in scan.c (one pass each, the same bits as the
        torch ops) when the S4D scan is native too; ``scan = "loop"`` keeps every op in torch."""
        return self.scan == "native" and native_ok(x)

    def _amax(self, x, nat: bool, per_column: bool = False):
        """max |x| over everything (or per last-dim column), without gradient."""
        if nat:
            m = amax_abs(x)
            return m if per_column else m.amax()
        x = x.detach().abs()
        return x.amax(tuple(range(x.dim() - 1))) if per_column else x.amax()

    def _mvm(self, x, lin: nn.Linear, rname: str, fsname: str, idx=None):
        hw = self.hw
        nat = self._native(x)
        rbuf = getattr(self, rname)
        self._track(rbuf, self._amax(x, nat).clamp(min=_TINY), idx)
        r = (rbuf if idx is None else rbuf[idx]).clone()
        fbuf = getattr(self, fsname)

        def full_scale(peak):          # the ADC's full scales, tracked on the products' peaks
            self._track(fbuf, peak * hw.adc_headroom, idx)
            return (fbuf if idx is None else fbuf[idx]).clamp(min=_TINY)

        if nat and not self._calib:                   # one node: DAC, products, ADC and gain, bias
            y, sat = array_mvm(x, self._weight(lin), lin.bias, r, hw.dac_bits, hw.adc_bits, full_scale)
            self.saturations += sat
            return y
        v = converter(x, 1.0, hw.dac_bits, pre=r)[0] if nat else fake_converter(x / r, 1.0, hw.dac_bits)
        n = F.linear(v, self._weight(lin))
        fs = full_scale(self._amax(n, nat, per_column=True))
        if self._calib:
            y = n * r
        elif nat:                                     # ADC and digital gain in one pass
            y, sat = converter(n, fs, hw.adc_bits, post=r)
            self.saturations += sat
        else:
            self.saturations += int((n.detach().abs() > fs).sum())
            y = fake_converter(n, fs, hw.adc_bits) * r
        return y + lin.bias if lin.bias is not None else y

    def _s4d(self, i: int, u: torch.Tensor, last: bool = False) -> torch.Tensor:
        """(B, L, H) -> (B, L, H) through the layer's block matrices, token by token; last: the
        output of the last token only, (B, 1, H) (the recurrence still runs over every token)."""
        hw, s4d = self.hw, self.blocks[i].s4d
        nat = self._native(u)
        self._track(self.r_s4d, self._amax(u, nat).clamp(min=_TINY), i)
        r = self.r_s4d[i].clone()
        fixed = float(self.norm_fixed[i]) > 0
        if self._calib and not fixed:
            self._calibrate_rho(i, u, float(r))
        Mq, noisy = self._block_q(i)                                               # (H, K, K)
        B, L, H = u.shape
        n2 = s4d.d_state
        digital = hw.recurrence == "digital"    # the block in the periphery: no DAC, ADC or noise
        if digital and hw.digital_train == "fft" and self.training and not self._calib:
            return self._s4d_fft(i, u, Mq, r, last)
        with torch.no_grad():        # state columns: |w| <= 1 by the choice of rho; fixed full scale
            self.fs_s4d[i, :, :n2] = hw.adc_headroom
        fs = self.fs_s4d[i].clamp(min=_TINY).clone()
        native = self.scan == "native" and Mq.dtype == u.dtype and u.device.type == "cpu" \
            and u.dtype in (torch.float32, torch.float64) and scan_available()[0]
        if native and not digital and not self._calib:     # both converters inside the scan's layout
            return self._s4d_layer(i, u, Mq, fs, r, last, sparse=not noisy)
        if digital:
            vu = u / r
        else:
            vu = converter(u, 1.0, hw.dac_bits, pre=r)[0] if nat else fake_converter(u / r, 1.0, hw.dac_bits)
        if native:
            return self._s4d_native(i, vu, Mq, fs, r, last, sparse=not noisy)
        if self.scan == "native" and not scan_available()[0]:
            warn_fallback()          # (other devices and dtypes run the loop: the scan is CPU code)
        dith = dither_offsets(i, H, n2, 0, L, u.dtype).to(u.device) if hw.state_dither else None
        sbits = hw.state_word_bits
        w = torch.zeros(B, H, n2, dtype=u.dtype)
        ys = []
        for t in range(L):
            inp = torch.cat([w, vu[:, t].unsqueeze(-1)], -1)                # (B, H, K)
            n = torch.einsum("bhi,hoi->bho", inp, Mq)
            ys.append(n[..., n2])      # the output column, before its ADC (_s4d_output)
            n = n[..., :n2]
            if digital or dith is not None:     # the state word rounded once (dithered), no ADC
                w = fake_converter(n, 1.0, sbits, dith[t] if dith is not None else 0.5)
                continue
            if not self._calib:
                self.saturations += int((n.detach().abs() > fs[:, :n2]).sum())
                n = fake_converter(n, fs[:, :n2], hw.adc_bits)
            w = fake_converter(n, 1.0, sbits) if sbits is not None else n
        ny = torch.stack(ys[-1:] if last else ys, 1)
        return self._s4d_output(i, ny, fs[:, n2], r, nat, exact=digital)

    def _s4d_output(self, i, ny, fs, r, nat, exact=False):
        """The output column of S4D layer i from ny (B, L', H), the product before its ADC: the
        ADC at the full scales fs (H,) and the digital gain r (exact: a digital column, ny r);
        its full scale tracked on ny (in a last-token forward: on the last token)."""
        if self._calib or self.training:
            self._track_output(i, self._amax(ny, nat, per_column=True))
        if self._calib or exact:
            return ny * r
        if nat:                                      # ADC and digital gain in one pass
            y, sat = converter(ny, fs, self.hw.adc_bits, post=r)
            self.saturations += sat
            return y
        self.saturations += int((ny.detach().abs() > fs).sum())
        return fake_converter(ny, fs, self.hw.adc_bits) * r

    def _s4d_fft(self, i, u, Mq, r, last=False):
        """A digital recurrence in training (``digital_train = "fft"``): the quantized block as a
        linear system, its output y_t = d v_t + sum_{l >= 1} Re(sum_p g_p l_p^(l-1) b_p) v_(t-l)
        with the complex pole l_p = A[p, p] + i A[n+p, p], input b_p = A[p, n2] + i A[n+p, n2]
        and output g_p = A[n2, p] - i A[n2, n+p] of the pair p (the block's 2 x 2 rotations),
        by FFT convolution. The same as the scan without its state word (no rounding, no
        saturation at +-1)."""
        H, K, _ = Mq.shape
        n2 = K - 1
        n = n2 // 2
        p = torch.arange(n, device=Mq.device)
        lam = torch.complex(Mq[:, p, p], Mq[:, n + p, p])
        b = torch.complex(Mq[:, p, n2], Mq[:, n + p, n2])
        g = torch.complex(Mq[:, n2, p], -Mq[:, n2, n + p])
        L = u.shape[1]
        log_lam = torch.complex(torch.log(lam.abs().clamp(min=1e-12)), torch.angle(lam))
        k = vandermonde_kernel(g * b / 2, log_lam, L - 1)                    # (H, L - 1)
        Kt = torch.cat([Mq[:, n2, n2].unsqueeze(-1), k], -1)                 # (H, L): d first
        ny = fft_conv((u / r).transpose(1, 2), Kt).transpose(1, 2)          # (B, L, H)
        return self._s4d_output(i, ny[:, -1:] if last else ny, None, r, False, exact=True)

    def _track_output(self, i: int, peak: torch.Tensor):
        """Track the full scales of S4D layer i from its output column's peak |value| (H,): the
        state columns keep full scale 1 (times the headroom)."""
        full = torch.ones(self.fs_s4d.shape[1:], dtype=self.fs_s4d.dtype, device=peak.device)
        full[:, -1] = peak.to(full.dtype)
        self._track(self.fs_s4d, full * self.hw.adc_headroom, i)

    def _scan_dither(self, i: int, H: int, n2: int, L: int, dtype):
        """The dithered state rounding's offsets of layer i in the scan's layout (H, L, n2), or
        None without state_dither."""
        if not self.hw.state_dither:
            return None
        return dither_offsets(i, H, n2, 0, L, dtype).transpose(0, 1).contiguous()

    def _s4d_native(self, i, vu, Mq, fs, r, last=False, sparse=False):
        """_s4d's loop over time as one native scan (scan.c) with its own backward; sparse: Mq
        is the quantized block itself (no write noise), zero outside its complex pairs."""
        hw = self.hw
        n2 = Mq.shape[-1] - 1
        dith = self._scan_dither(i, Mq.shape[0], n2, vu.shape[1], vu.dtype)
        digital = hw.recurrence == "digital"
        ny, sat = block_scan(Mq, vu, fs[:, :n2],
                             None if self._calib or dith is not None or digital else hw.adc_bits,
                             hw.state_word_bits,
                             pairs=True,     # Mq's other entries are block_matrix's constant zeros
                             dither=dith, sparse=sparse)
        self.saturations += sat
        return self._s4d_output(i, ny[:, -1:] if last else ny, fs[:, n2], r, True, exact=digital)

    def _s4d_layer(self, i, u, Mq, fs, r, last=False, sparse=False):
        """_s4d_native with the input DAC and the output ADC inside the scan's layout changes
        (``scan.layer_scan``): the same values, one pass fewer each way."""
        hw = self.hw
        n2 = Mq.shape[-1] - 1
        dith = self._scan_dither(i, Mq.shape[0], n2, u.shape[1], u.dtype)
        y, sat, peak = layer_scan(Mq, u, r, fs[:, :n2], fs[:, n2], hw.dac_bits, hw.adc_bits,
                                  None if dith is not None else hw.adc_bits, hw.state_word_bits,
                                  pairs=True, dither=dith, sparse=sparse, t0=u.shape[1] - 1 if last else 0)
        self.saturations += sat
        if self.training:
            self._track_output(i, peak)
        return y

    @torch.no_grad()
    def _calibrate_rho(self, i: int, u: torch.Tensor, r: float):
        """rho (H, N/2): per complex state the largest |Re w|, |Im w| of the float recurrence with
        rho = 1, on u; at least 1/100 of the layer's largest (a state, or a whole channel, that
        barely moves on the calibration data would otherwise get an input coupling that explodes
        once training moves it), 1 for a layer that never moves."""
        s4d = self.blocks[i].s4d
        dA, dB, _ = s4d.discrete()
        sig = dB.abs().clamp(min=_TINY) / torch.sqrt(1 - dA.abs().clamp(max=1 - 1e-6) ** 2)
        x = torch.zeros(u.shape[0], *dA.shape, dtype=dA.dtype, device=dA.device)
        m = torch.zeros(dA.shape, device=dA.device)
        for t in range(u.shape[1]):
            x = dA * x + dB * u[:, t].unsqueeze(-1)
            m = torch.maximum(m, torch.view_as_real(x / (r * sig)).abs().amax(-1).amax(0))
        top = float(m.max())
        self.rho[i] = m.clamp(min=_RHO_FLOOR * top) if top > 1e-6 else torch.ones_like(m)

    # ---- the network -----------------------------------------------------------------------------
    def _block(self, i, b, x, last=False):
        """Block i on x (B, L, H); last: its output at the last token only, (B, 1, H)."""
        z = b._norm(x) if b.prenorm else x
        z = b.dropout(b.act(self._s4d(i, z, last)))
        z = self._mvm(z, b.mix, "r_mix", "fs_mix", i)
        z = F.glu(z, dim=-1) if b.mixing == "glu" else b.act(z)
        z = b.dropout(z)
        if b.residual:
            z = z + (x[:, -1:] if last else x)
        if not b.prenorm:
            z = b._norm(z)
        return z

    def features(self, x, mode=None, last: bool = False):
        """(B, L, d_input) -> the last block's output (B, L, H); last: at the last token only,
        (B, 1, H), when every block computes it alike (``last_token_ok``): the last block's
        output column, activation and mixing run on the last token, and its ranges (ADC full
        scale of the S4D output, DAC range and ADC full scales of the mixing) track that token."""
        check_tensor(x, ndim=3, last=self.config.d_input, name="x", what="(batch, length, d_input)")
        if not self.calibrated:
            self.calibrate(x)
        h = self._mvm(x, self.encoder, "r_enc", "fs_enc")
        n = len(self.blocks)
        for i, b in enumerate(self.blocks):
            h = self._block(i, b, h, last and i == n - 1 and b.last_token_ok())
        return h[:, -1:] if last else h

    def forward(self, x, mode=None):
        """(B, L, d_input) -> logits (B, d_output); with a last-token readout the last block
        computes its last token only (``features(last=True)``)."""
        if self.config.readout == "last":
            return self._mvm(self.features(x, last=True)[:, -1], self.decoder, "r_dec", "fs_dec")
        return self._mvm(self.features(x).mean(1), self.decoder, "r_dec", "fs_dec")

    def forward_tokens(self, x, mode=None):
        h = self.features(x)
        if self.config.readout == "mean":
            h = h.cumsum(1) / torch.arange(1, h.shape[1] + 1, dtype=h.dtype).view(1, -1, 1)
        return self._mvm(h, self.decoder, "r_dec", "fs_dec")

    @torch.no_grad()
    def calibrate(self, X: torch.Tensor, batch_size: int = 128):
        """Set every DAC range, ADC full scale and state gain from inputs X (B, L, d_in)."""
        was = self.training
        self.eval()
        self._calib = True
        try:
            X = X[:batch_size]
            h = self._mvm(X, self.encoder, "r_enc", "fs_enc")
            for i, b in enumerate(self.blocks):
                h = self._block(i, b, h)
            h = h.mean(1) if self.config.readout == "mean" else h[:, -1]
            self._mvm(h, self.decoder, "r_dec", "fs_dec")
        finally:
            self._calib = False
            self.train(was)
        self.calibrated = True
        return self.ranges()

    def init_state(self, batch: int = 1):
        raise ConfigError("HwSequenceModel streams through the crossbar target: "
                          "edgessm.targets.get('crossbar').compile(model).step(...)")

    def step(self, x_t, state):
        return self.init_state()

    def extra_repr(self) -> str:
        return (f"weight_bits={self.hw.weight_bits}, ssm_bits={self.hw.ssm_bits}, "
                f"state_mode={self.hw.state_mode!r}, calibrated={self.calibrated}")


# ---- projection: the noise-free quantized network as plain S4D parameters -----------------------------
@torch.no_grad()
def project(model: HwSequenceModel) -> SequenceModel:
    """A float SequenceModel whose weights ARE the quantized values (linear layers exactly;
    each S4D layer rebuilt from its quantized block, which is still complex diagonal).
    Converters (DAC/ADC) are not part of it. Needs zoh discretization."""
    out = SequenceModel(model.config)
    out.load_state_dict(model.state_dict())
    for lin_m, lin_o in [(model.encoder, out.encoder), (model.decoder, out.decoder)] + \
            [(b.mix, o.mix) for b, o in zip(model.blocks, out.blocks)]:
        q, s = model.qlinear(lin_m)
        lin_o.weight.copy_(q * s.unsqueeze(-1))
    clamped = 0
    for i, (b, o) in enumerate(zip(model.blocks, out.blocks)):
        s4d = b.s4d
        if s4d.discretization != "zoh":
            raise ConfigError("project() rebuilds S4D parameters for zoh discretization only")
        q, s = model.qblock(i)
        M = (q * s.unsqueeze(-1)).double()
        n = s4d.d_state // 2
        i_ = torch.arange(n)
        dA = torch.complex(M[:, i_, i_], M[:, n + i_, i_])
        bq = torch.complex(M[:, i_, 2 * n], M[:, n + i_, 2 * n])
        cq = torch.complex(M[:, 2 * n, i_], -M[:, 2 * n, n + i_])
        dq = M[:, 2 * n, 2 * n]
        mag = dA.abs()
        bad = (mag >= 1 - 1e-6) | (mag < 1e-6)
        clamped += int(bad.sum())
        dA = torch.where(bad, dA / mag.clamp(min=1e-30) * mag.clamp(1e-6, 1 - 1e-6), dA)
        dA = torch.where(mag < 1e-6, torch.full_like(dA, 1e-6), dA)
        r = float(model.r_s4d[i])
        dt = torch.exp(s4d.log_dt.double()).unsqueeze(-1)
        A = torch.log(dA) / dt
        dB = bq / r                                  # state w: w_k = dA w + (b / r) u
        Bp = dB * A / (dA - 1)
        Cp = r * cq / (2 * dA)
        Dp = dq - 2 * (Cp * dB).real.sum(-1)
        o.s4d.log_A_real.copy_(torch.log(-A.real).float())
        o.s4d.A_imag.copy_(A.imag.float())
        o.s4d.B.copy_(torch.view_as_real(Bp.to(torch.complex64)))
        o.s4d.C.copy_(torch.view_as_real(Cp.to(torch.complex64)))
        o.s4d.D.copy_(Dp.float())
    out.projection_clamped = clamped
    out.eval()
    return out


def projected_ranges(model: HwSequenceModel) -> dict:
    """The ranges of `model` for its projection: the state scaling becomes fixed at 1 / r,
    which makes the projected S4D's block matrix the quantized one again."""
    rg = model.ranges()
    rg["norm_fixed"] = [1.0 / max(float(r), _TINY) for r in model.r_s4d]
    return rg


def save_hw(model: HwSequenceModel, path, metrics: dict | None = None, extra: dict | None = None):
    """Save the deployable form: the projected float model (loads anywhere with es.load and
    evaluates the quantized network) plus "hw" metadata (device, precisions, ranges)."""
    from ... import io
    p = project(model)
    meta = model.hw_meta()
    meta["ranges"] = projected_ranges(model)
    meta["projected"] = True
    return io.save(p, path, metrics=metrics, extra={**(extra or {}), "hw": meta})


def hw_wrap(device: str = "default", **overrides):
    """``wrap`` for edgessm.train.train: float model -> HwSequenceModel in train mode.

    device: a preset (default, ideal, pessimistic), a name under configs/crossbar/ or a TOML
    path; overrides: any CrossbarConfig field (weight_bits=2 for ternary, write_noise_sigma_us,
    state_mode, ...). Calibrated on the first training samples of the checkpoint's task when
    known, else on the first batch.
    """
    cfg = load_device(device, **overrides)

    def wrap(model: SequenceModel) -> HwSequenceModel:
        meta = (getattr(model, "checkpoint_meta", {}) or {}).get("hw") or {}
        dev = dict(meta.get("device") or {})
        for k in ("weight_bits", "ssm_bits", "state_mode"):
            if k in meta:
                dev[k] = meta[k]
        hw = parse_options({**{k: v for k, v in dev.items() if k in FIELDS}, **overrides},
                           base=load_device(device)) if dev else cfg
        m = HwSequenceModel.from_float(model, hw)
        if not m.calibrated:
            from ...io import trained_task, trained_task_options
            task = trained_task(model)
            if task:
                from ...data import load_task
                m.calibrate(load_task(task, "train", limit=hw.calibrate, **trained_task_options(model)).x)
        m.train()
        return m
    return wrap


__all__ = ["HwSequenceModel", "hw_wrap", "project", "save_hw", "block_matrix",
           "quant_block", "quant_linear", "fake_converter", "write_noise", "dither_offsets", "InputError"]
