"""The integer network: every number a quantized S4D network computes with, as int64 arrays.

A :class:`~edgessm.quant.QuantSequenceModel` exports one (``model.integer_network()``);
its eval-mode forward (torch) and the integer engine (``targets/fixed``, numpy) both
execute it, so the two can be compared integer for integer. Per token::

    x_m   = sat(round_half_up(x * 2**-e_in))                       host-side encoding
    Dense:  acc = W_m @ a_m                     -> sat/wrap to accumulator bits
            out = sat(rshift_round(acc * g, s) + b)  (ReLU where the layer has one)
            out = sat(out + rshift_round(r_m * h_m, s_r))   mixing with a residual connection:
                                                     h_m the block input, s_r = e_out - e_h
    S4D:    xr' = sat(rshift_round(ar*xr - ai*xi, sA) + rshift_round(br*u, sB))
            xi' = sat(rshift_round(ar*xi + ai*xr, sA) + rshift_round(bi*u, sB))
            y   = sat(rshift_round(sum_n(cr*xr' - ci*xi'), sC) + rshift_round(dm*u, sD))
            a   = ReLU(y)                                                graded spike
    logits = out_m * 2**e_out                      host-side decoding, last-token readout
    total += out_m;  logits = total * 2**e_out / t         host-side decoding, mean readout

with shifts ``sA = -e_A``, ``sB = e_x - e_B - e_u``, ``sC = e_y - e_C - e_x``,
``sD = e_y - e_D - e_u`` (per layer, or per channel) and dense shifts
``s[c] = e_out - f[c] - e_in``. (cr, ci) are the mantissas of 2C, so y = 2 Re(C x) + D u.

The decoder runs at every token (the readout per token). With a mean readout the host keeps
the running sum of its integer outputs (``IntState.total``, exact in int64) and divides by the
token count when it decodes: the decoder is linear, so the sum's argmax is the mean's, and no
division happens inside the network (:func:`mean_readout` and its torch twin in
``QuantSequenceModel``).

:class:`IntState` is the streaming state of every executor of an integer network (the
integer engine's numpy and C backends, ``QuantSequenceModel.step``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class DenseInt:
    name: str
    W: np.ndarray          # (C, K) int64 weight mantissas
    g: np.ndarray          # (C,) descale factors
    shift: np.ndarray      # (C,) right shift (round half up) after descale
    bias: np.ndarray       # (C,) at the output scale
    relu: bool
    out_exp: int
    out_bits: int
    out_mode: str
    acc_bits: int
    acc_mode: str
    res_w: np.ndarray | None = None       # (C,) residual weight mantissas (a mixing layer with a
    res_shift: np.ndarray | None = None   # residual connection; None without), and their shifts

    @property
    def fan_out(self) -> np.ndarray:
        """Synapses (non-zero weights) driven by each input (K,)."""
        return np.count_nonzero(self.W, axis=0).astype(np.int64)

    @property
    def res_fan_out(self) -> np.ndarray | int:
        """Residual synapses driven by each neuron of the block input (C,), 0 without."""
        return 0 if self.res_w is None else (self.res_w != 0).astype(np.int64)


@dataclass
class S4DInt:
    name: str
    ar: np.ndarray; ai: np.ndarray      # (H, n) dA mantissas
    br: np.ndarray; bi: np.ndarray      # (H, n) dB mantissas
    cr: np.ndarray; ci: np.ndarray      # (H, n) 2C mantissas
    dm: np.ndarray                      # (H,) D mantissas
    sA: np.ndarray; sB: np.ndarray      # (H, 1) shifts into the state
    sC: np.ndarray; sD: np.ndarray      # (H,) shifts into the output
    state_exp: np.ndarray               # (H, 1) (equal entries: one exponent per layer)
    state_bits: int
    state_mode: str
    out_exp: int
    out_bits: int
    out_mode: str

    @property
    def d_model(self) -> int:
        return self.ar.shape[0]

    @property
    def n(self) -> int:
        return self.ar.shape[1]


@dataclass
class IntNet:
    in_exp: int
    in_bits: int
    in_mode: str
    encoder: DenseInt
    layers: list = field(default_factory=list)     # [(S4DInt, DenseInt mixing)]
    decoder: DenseInt | None = None
    spec_name: str = "?"
    compile_overflows: dict = field(default_factory=dict)   # e.g. biases that did not fit
    readout: str = "last"       # "last" or "mean": how the host reduces the per-token outputs

    @property
    def d_input(self) -> int:
        return self.encoder.W.shape[1]

    @property
    def d_output(self) -> int:
        return self.decoder.W.shape[0]

    @property
    def d_model(self) -> int:
        return self.encoder.W.shape[0]

    @property
    def out_exp(self) -> int:
        return self.decoder.out_exp


@dataclass
class IntState:
    """Streaming state of an integer network, the same for every executor of it.

    layers: per S4D layer the mantissas of its states (xr, xi), each (B, H, n) int64: numpy
    arrays in the integer engine (``targets/fixed``, numpy and C backends), torch tensors in
    ``QuantSequenceModel.step`` (:meth:`to_numpy`, :meth:`to_torch` convert, so a stream can
    move between them). refs: with sigma-delta messaging, per graded population the last
    value it sent, (B, size) int64; empty otherwise. t: tokens seen. total: with a mean
    readout, the host's running sum of the decoder's integer outputs, (B, d_out) int64 (None
    with a last-token readout; the engines carry it through, the host boundary updates it).
    Treat as immutable: a step returns a new IntState."""
    layers: list
    refs: dict = field(default_factory=dict)
    t: int = 0
    total: object = None

    @property
    def batch(self) -> int:
        return self.layers[0][0].shape[0]

    def readout_fits(self, readout: str, d_output: int) -> bool:
        """Whether `total` fits a network with this readout: (batch, d_output) int64 of the
        same kind as the layer states (numpy or torch) for a mean readout, None otherwise."""
        if readout != "mean":
            return self.total is None
        t, ref = self.total, self.layers[0][0]
        return type(t) is type(ref) and str(t.dtype) == str(ref.dtype) and str(t.dtype).endswith("int64") \
            and tuple(t.shape) == (self.batch, d_output)

    def to_numpy(self) -> "IntState":
        """The same state with numpy arrays (copies of torch tensors)."""
        def arr(a):
            return a if isinstance(a, np.ndarray) else a.detach().cpu().numpy().astype(np.int64, copy=True)
        return IntState([(arr(xr), arr(xi)) for xr, xi in self.layers],
                        {k: arr(v) for k, v in self.refs.items()}, self.t,
                        None if self.total is None else arr(self.total))

    def to_torch(self, device=None) -> "IntState":
        """The same state with torch int64 tensors (on `device`)."""
        import torch

        def ten(a):
            return torch.as_tensor(np.asarray(a) if isinstance(a, np.ndarray) else a, dtype=torch.int64,
                                   device=device).clone()
        return IntState([(ten(xr), ten(xi)) for xr, xi in self.layers],
                        {k: ten(v) for k, v in self.refs.items()}, self.t,
                        None if self.total is None else ten(self.total))


def mean_readout(out: np.ndarray, total: np.ndarray | None = None, t: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The mean readout of per-token decoder outputs `out` (B, L, d_out) int64, continuing a
    stream that has seen `t` tokens with running sum `total` (B, d_out) (None: a new stream):
    (the readout after every token in mantissa units, float64 (B, L, d_out); the running sum
    after the last token, int64). The sums are exact; the division is the host's."""
    s = np.cumsum(out, axis=1, dtype=np.int64)
    if total is not None:
        s += total[:, None]
    count = np.arange(t + 1, t + out.shape[1] + 1, dtype=np.float64).reshape(1, -1, 1)
    return s / count, s[:, -1].copy()
