"""S4D sequence classifier: encoder -> n blocks -> readout -> decoder.

Block (pre/post norm optional):
    z = norm(x)            if prenorm
    z = S4D(z) -> activation -> dropout -> mixing [-> batch norm if mix_norm] -> GLU or
        activation -> dropout
    z = z + x              if residual
    z = norm(z)            if postnorm
mixing ``glu``: Linear(H, 2H) then GLU; ``linear``: Linear(H, H) then the activation.
dropout: per element, or with ``tie_dropout`` one draw per (sequence, channel) for all positions
(whole channels of a sequence dropped, as the reference S4 models' tie_dropout).

Presets:
    standard:     GELU, GLU mixing, residual, LayerNorm (pre), mean readout
    neuromorphic: ReLU, Linear mixing, no norm, no residual, last-token readout
                  (what a Loihi-2-class chip runs: every output a graded spike)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError, UnknownNameError
from . import fused
from .layer import S4D
from .validate import all_finite, as_dtype, check_tensor

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}
NORMS = ("none", "layer", "batch")
MIXINGS = ("glu", "linear")
READOUTS = ("mean", "last")


@dataclass
class ModelConfig:
    """Everything needed to rebuild a SequenceModel (saved in checkpoints)."""
    d_input: int = 1
    d_output: int = 10
    d_model: int = 64
    d_state: int = 64
    n_layers: int = 4
    activation: str = "gelu"
    mixing: str = "glu"
    residual: bool = True
    norm: str = "layer"
    prenorm: bool = True
    dropout: float = 0.0
    tie_dropout: bool = False     # one dropout draw per (sequence, channel), the same at every position
    readout: str = "mean"
    init: str = "lin"
    discretization: str = "zoh"
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    learn_B: bool = False
    mix_norm: bool = False
    preset: str = "custom"

    def __post_init__(self):
        for name in ("d_input", "d_output", "d_model", "n_layers"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
        for name, allowed in (("activation", tuple(ACTIVATIONS)), ("norm", NORMS),
                              ("mixing", MIXINGS), ("readout", READOUTS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        for name, hi in (("d_input", 2**20), ("d_output", 2**20), ("d_model", 2**16), ("n_layers", 4096)):
            if getattr(self, name) > hi:
                raise ConfigError(f"{name} must be at most {hi}, got {getattr(self, name)}")
        v = self.d_state
        if not isinstance(v, int) or isinstance(v, bool) or v < 2 or v % 2 or v > 2**16:
            raise ConfigError(f"d_state must be an even integer from 2 to {2**16}, got {v!r}")
        for name in ("dt_min", "dt_max"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
                raise ConfigError(f"{name} must be a positive finite number, got {v!r}")
        if self.dt_min > self.dt_max:
            raise ConfigError(f"dt_min ({self.dt_min}) must not exceed dt_max ({self.dt_max})")
        for name in ("residual", "prenorm", "learn_B", "mix_norm", "tie_dropout"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        H = self.d_model
        params = self.n_layers * (3 * H * H + 2 * H * self.d_state) + H * (self.d_input + self.d_output)
        if params > 2**31:
            raise ConfigError(f"the model would have about {params:.3g} parameters "
                              f"({4 * params / 2**30:.3g} GiB); reduce d_model, d_state or n_layers")

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown model config field(s) {', '.join(unknown)}; "
                              f"known fields: {', '.join(sorted(known))}")
        return cls(**d)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict] = {
    "standard": dict(activation="gelu", mixing="glu", residual=True, norm="layer",
                     prenorm=True, readout="mean"),
    "neuromorphic": dict(activation="relu", mixing="linear", residual=False, norm="none",
                         prenorm=False, readout="last", dropout=0.0),
}


def channel_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A Linear layer on channel-major x (B, in, L) -> (B, out, L), as one batched matrix
    product per sequence (no transposes of the activations, forward or backward)."""
    y = torch.bmm(weight.expand(x.shape[0], *weight.shape), x)
    return y if bias is None else y + bias.unsqueeze(-1)


def _batch_norm_ch(n: nn.BatchNorm1d, z: torch.Tensor, dim: int) -> torch.Tensor:
    """BatchNorm `n` over the channels of z, which are axis `dim` (-1: (B, L, C) or (B, C); 1:
    channel-major (B, C, L)). One token (B, C) uses the running statistics: a per-token
    statistic is meaningless."""
    if z.dim() == 2:
        return F.batch_norm(z, n.running_mean, n.running_var, n.weight, n.bias, False, 0.0, n.eps)
    return n(z) if dim == 1 else n(z.transpose(1, 2)).transpose(1, 2)


class TiedDropout(nn.Module):
    """Dropout of whole channels of a sequence: one keep draw per (sequence, channel), the same
    at every position, kept values scaled by 1 / (1 - p) (the reference S4 models' tie_dropout).
    The channels are axis `dim` of a (B, L, H) (dim -1) or (B, H, L) (dim 1) tensor; a single
    token (B, H) has no positions to tie along and draws per element. Identity in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {p!r}")
        self.p = float(p)

    def forward(self, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if dim not in (-1, 1):
            raise InputError(f"TiedDropout: the channels are axis -1 or 1, got {dim!r}")
        shape = list(x.shape)
        if x.dim() == 3:
            shape[2 if dim == 1 else 1] = 1          # the positions' axis
        keep = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1.0 - self.p)
        return x * keep * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """One S4D block; (B, L, H) -> (B, L, H), with init_state/step for streaming."""

    def __init__(self, d_model: int, d_state: int = 64, activation: str = "gelu",
                 mixing: str = "glu", residual: bool = True, norm: str = "layer",
                 prenorm: bool = True, dropout: float = 0.0, mix_norm: bool = False,
                 tie_dropout: bool = False, **s4d_kwargs):
        super().__init__()
        self.s4d = S4D(d_model, d_state, **s4d_kwargs)
        self.act = ACTIVATIONS[activation]()
        self.mixing, self.residual, self.prenorm = mixing, residual, prenorm
        self.mix = nn.Linear(d_model, 2 * d_model if mixing == "glu" else d_model)
        self.drop = (nn.Identity() if dropout == 0 else TiedDropout(dropout) if tie_dropout
                     else nn.Dropout(dropout))
        # batch norm of the mixing product, before its GLU or activation: an affine map per
        # channel at inference, so it folds into the mixing weights and bias (integer targets)
        self.mix_norm = nn.BatchNorm1d(self.mix.out_features) if mix_norm else None
        self.norm_kind = norm
        if norm == "layer":
            self.norm = nn.LayerNorm(d_model)
        elif norm == "batch":
            self.norm = nn.BatchNorm1d(d_model)
        else:
            self.norm = None

    def _norm(self, z: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """The block's norm over the channels, which are axis `dim` (-1: (B, L, H) or (B, H);
        1: channel-major (B, H, L))."""
        if self.norm is None:
            return z
        n = self.norm
        if self.norm_kind == "batch":
            return _batch_norm_ch(n, z, dim)
        if dim == -1:
            return n(z)
        if fused.usable(z):
            return fused.layer_norm_ch(z, n.weight, n.bias, n.eps)
        # LayerNorm over axis 1, written out so that a compiled step fuses it into one pass
        mu = z.mean(1, keepdim=True)
        zc = z - mu
        var = zc.square().mean(1, keepdim=True)
        return zc * torch.rsqrt(var + n.eps) * n.weight.unsqueeze(-1) + n.bias.unsqueeze(-1)

    def _after_ssm(self, z: torch.Tensor, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """activation -> dropout -> mixing -> GLU or activation -> dropout -> residual -> post-norm,
        with the channels on axis `dim` (-1 or 1, as in ``_norm``)."""
        if dim == 1 and fused.usable(z):
            kind = self._fused_kind()
            if kind is not None:
                return self._after_ssm_fused(z, x, *kind)
        z = self.dropout(self.act(z), dim)
        if dim == -1:
            z = self.mix(z)
        else:
            z = channel_linear(z, self.mix.weight, self.mix.bias)
        z = self._mix_bn(z, dim)
        z = F.glu(z, dim=dim) if self.mixing == "glu" else self.act(z)
        z = self.dropout(z, dim)
        if self.residual:
            z = z + x
        if not self.prenorm:
            z = self._norm(z, dim)
        return z

    def dropout(self, z: torch.Tensor, dim: int = -1) -> torch.Tensor:
        """The block's dropout of z with its channels on axis `dim` (-1 or 1, as in ``_norm``)."""
        return self.drop(z, dim) if isinstance(self.drop, TiedDropout) else self.drop(z)

    def _mix_bn(self, z: torch.Tensor, dim: int) -> torch.Tensor:
        """The batch norm of the mixing product (identity without ``mix_norm``); channels on
        axis `dim`. One token (B, C) uses the running statistics, as does eval mode."""
        return z if self.mix_norm is None else _batch_norm_ch(self.mix_norm, z, dim)

    def _fused_kind(self) -> tuple[str, float, bool] | None:
        """(activation, dropout p in force, tied) for the fused tail, None when a module was
        replaced by one the kernels do not know (then the torch ops run)."""
        if isinstance(self.act, nn.GELU) and self.act.approximate == "none":
            act = "gelu"
        elif isinstance(self.act, nn.ReLU):
            act = "relu"
        else:
            return None
        if isinstance(self.drop, nn.Identity):
            return act, 0.0, False
        if type(self.drop) in (nn.Dropout, TiedDropout):
            return act, (self.drop.p if self.drop.training else 0.0), type(self.drop) is TiedDropout
        return None

    def _after_ssm_fused(self, z: torch.Tensor, x: torch.Tensor, act: str, p: float, tied: bool,
                         activated: bool = False) -> torch.Tensor:
        """``_after_ssm`` on channel-major (B, H, L) by the native kernels (``ssm.fused``):
        activation and dropout in one pass (`activated`: done already, as the convolution's
        epilogue), the mixing product, then its bias (or, training with ``mix_norm``, the batch
        norm from the product's statistics), GLU or the activation, dropout and the residual in
        one pass."""
        if not activated:
            z = fused.act_dropout(z, act, p, tied=tied)
        m = channel_linear(z, self.mix.weight, None)
        bias, n = self.mix.bias, self.mix_norm
        res, glu = (x if self.residual else None), self.mixing == "glu"
        if n is not None and n.training and n.track_running_stats and type(n) is nn.BatchNorm1d:
            z = fused.norm_mix_tail(m, bias, n, res, glu=glu, act=act, p=p, tied=tied)
        else:
            if n is not None:
                m, bias = n(m + bias.unsqueeze(-1)), None
            z = fused.mix_tail(m, bias, res, glu=glu, act=act, p=p, tied=tied)
        if not self.prenorm:
            z = self._norm(z, 1)
        return z

    def forward(self, x: torch.Tensor, mode: str = "conv") -> torch.Tensor:
        z = self._norm(x) if self.prenorm else x
        return self._after_ssm(self.s4d(z, mode=mode), x)

    def forward_hl(self, x: torch.Tensor) -> torch.Tensor:
        """The block on channel-major activations, (B, H, L) -> (B, H, L), by FFT convolution.

        The training path: no transposes between layers, the FFTs along the contiguous axis.
        """
        z = self._norm(x, 1) if self.prenorm else x
        kind = self._fused_kind() if fused.usable(z) and z.dtype == self.s4d.D.dtype else None
        if kind is not None:             # activation and dropout inside the convolution
            act, p, tied = kind
            y = self.s4d.conv_hl(z, epilogue=fused.ActDrop(act, p, tied=tied))
            return self._after_ssm_fused(y, x, *kind, activated=True)
        return self._after_ssm(self.s4d.conv_hl(z), x, 1)

    def forward_last_hl(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output at the last position only, x (B, H, L) -> (B, H): the last output
        of the convolution (one pass over its input), then the rest of the block on that token.
        Equal to ``forward_hl(x)[..., -1]`` unless a batch norm after the convolution trains on
        batch statistics (``last_token_ok``)."""
        z = self._norm(x, 1) if self.prenorm else x
        return self._after_ssm(self.s4d.conv_last_hl(z), x[..., -1])

    def last_token_ok(self) -> bool:
        """Whether ``forward_last_hl`` equals the last position of ``forward_hl``: not when a
        batch norm after the convolution (``mix_norm``, a post-norm batch norm) trains on the
        statistics of every position."""
        return not (self.training and (self.mix_norm is not None
                                       or (self.norm_kind == "batch" and not self.prenorm)))

    def init_state(self, batch: int = 1) -> torch.Tensor:
        return self.s4d.init_state(batch)

    def step(self, x_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t (B, H) -> (y_t (B, H), new state)."""
        z = self._norm(x_t) if self.prenorm else x_t
        z, state = self.s4d.step(z, state)
        return self._after_ssm(z, x_t), state


@dataclass
class NetState:
    """Streaming state of a SequenceModel: one S4D state per layer, plus the readout's.

    ``t`` counts the tokens seen; ``sum`` is the running sum of the last block's output
    (used by a mean readout). Treat as immutable: ``step`` returns a new NetState.
    """
    layers: list[torch.Tensor]
    t: int = 0
    sum: torch.Tensor | None = field(default=None)

    @property
    def batch(self) -> int:
        return self.layers[0].shape[0]


class SequenceModel(nn.Module):
    """S4D classifier (B, L, d_input) -> (B, d_output), streamable token by token."""

    def __init__(self, config: ModelConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = ModelConfig(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        self.config = c = config
        self.encoder = nn.Linear(c.d_input, c.d_model)
        self.blocks = nn.ModuleList(
            Block(c.d_model, c.d_state, activation=c.activation, mixing=c.mixing,
                  residual=c.residual, norm=c.norm, prenorm=c.prenorm, dropout=c.dropout,
                  tie_dropout=c.tie_dropout,
                  init=c.init, discretization=c.discretization, dt_min=c.dt_min,
                  dt_max=c.dt_max, learn_B=c.learn_B, mix_norm=c.mix_norm)
            for _ in range(c.n_layers))
        self.decoder = nn.Linear(c.d_model, c.d_output)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "SequenceModel":
        if name not in PRESETS:
            raise UnknownNameError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
        return cls(ModelConfig(**{**PRESETS[name], "preset": name, **overrides}))

    def fold_norms(self) -> "SequenceModel":
        """An equivalent inference model with each block's ``mix_norm`` (batch norm of the
        mixing product, running statistics) folded into its mixing layer: W' = a W,
        b' = a (b - mean) + beta with a = gamma / sqrt(var + eps). ``self`` when there is none;
        otherwise a copy in eval mode (the same outputs as ``self.eval()``, to rounding), with
        ``mix_norm=False``, the metrics and checkpoint metadata carried over. What integer,
        analog and C targets lower."""
        if not self.config.mix_norm:
            return self
        out = SequenceModel(dataclasses.replace(self.config, mix_norm=False)).to(self.encoder.weight)
        sd = {k: v for k, v in self.state_dict().items() if ".mix_norm." not in k}
        with torch.no_grad():
            for i, b in enumerate(self.blocks):
                n = b.mix_norm
                a = n.weight / torch.sqrt(n.running_var + n.eps)
                sd[f"blocks.{i}.mix.weight"] = b.mix.weight * a.unsqueeze(-1)
                sd[f"blocks.{i}.mix.bias"] = (b.mix.bias - n.running_mean) * a + n.bias
        out.load_state_dict(sd)
        out.eval()
        for attr in ("metrics", "checkpoint_meta"):
            if hasattr(self, attr):
                setattr(out, attr, dict(getattr(self, attr) or {}))
        return out

    def ssm_parameters(self) -> list[nn.Parameter]:
        return [p for b in self.blocks for p in b.s4d.ssm_parameters()]

    # ---- whole sequences ---------------------------------------------------------------
    def features(self, x: torch.Tensor, mode: str = "conv") -> torch.Tensor:
        """(B, L, d_input) -> last block's output (B, L, H)."""
        x = self._input(x)
        if mode == "conv":
            return self._features_hl(x).transpose(1, 2)
        h = self.encoder(x)
        for block in self.blocks:
            h = block(h, mode=mode)
        return h

    def _input(self, x) -> torch.Tensor:
        """x checked as a whole-sequence input (B, L, d_input), in the model's dtype."""
        check_tensor(x, ndim=3, last=self.config.d_input, name="x", what="(batch, length, d_input)")
        return as_dtype(x, self.encoder.weight.dtype, "x")

    def _features_hl(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """(B, L, d_input) -> last block's output, channel-major (B, H, L), by FFT convolution
        (`upto`: the output of ``blocks[:upto]`` instead)."""
        h = channel_linear(x.transpose(1, 2), self.encoder.weight, self.encoder.bias)
        for block in self.blocks[:upto]:
            h = block.forward_hl(h)
        return h

    def forward(self, x: torch.Tensor, mode: str = "conv") -> torch.Tensor:
        """(B, L, d_input) -> logits (B, d_output) after the last token.

        With a last-token readout the last block computes its last position only (one pass
        over its input instead of an FFT convolution, its tail on one token), unless its batch
        norm trains on the statistics of every position."""
        if mode == "conv":
            x = self._input(x)
            last = self.blocks[-1] if self.config.readout == "last" and len(self.blocks) else None
            if last is not None and last.last_token_ok():
                return self.decoder(last.forward_last_hl(self._features_hl(x, -1)))
            h = self._features_hl(x)
            h = h.mean(-1) if self.config.readout == "mean" else h[..., -1]
            return self.decoder(h)
        h = self.features(x, mode)
        h = h.mean(1) if self.config.readout == "mean" else h[:, -1]
        return self.decoder(h)

    def forward_tokens(self, x: torch.Tensor, mode: str = "conv") -> torch.Tensor:
        """(B, L, d_input) -> logits after every token (B, L, d_output) (streaming readout)."""
        h = self.features(x, mode)
        if self.config.readout == "mean":
            h = h.cumsum(1) / torch.arange(1, h.shape[1] + 1, dtype=h.dtype, device=h.device).view(1, -1, 1)
        return self.decoder(h)

    # ---- streaming ---------------------------------------------------------------------
    @staticmethod
    def _overflow(x_t, where: str) -> str:
        return (f"x_t is too large (largest magnitude {x_t.abs().max().item():.3g}): {where} would "
                f"overflow to infinity; scale the input; the state was not changed")

    def init_state(self, batch: int = 1) -> NetState:
        if not isinstance(batch, int) or batch < 1:
            raise InputError(f"batch must be a positive integer, got {batch!r}")
        return NetState([b.init_state(batch) for b in self.blocks], 0, None)

    def step(self, x_t: torch.Tensor, state: NetState) -> tuple[torch.Tensor, NetState]:
        """One token x_t (B, d_input) -> (logits (B, d_output), new state).

        The logits are the prediction after this token; after the last token of a sequence
        they equal ``forward`` on the whole sequence. ``state`` is left unchanged.
        """
        check_tensor(x_t, ndim=2, last=self.config.d_input, name="x_t", what="(batch, d_input)")
        if not isinstance(state, NetState) or len(state.layers) != len(self.blocks) \
                or state.batch != x_t.shape[0]:
            raise InputError(f"state does not belong to this model and batch {x_t.shape[0]}; "
                             f"create it with init_state({x_t.shape[0]})")
        h = self.encoder(as_dtype(x_t, self.encoder.weight.dtype, "x_t"))
        new_layers = []
        for i, (block, s) in enumerate(zip(self.blocks, state.layers)):
            if not all_finite(h):
                raise InputError(self._overflow(x_t, f"the input of layer {i}"))
            try:
                h, s = block.step(h, s)
            except InputError as e:
                if "NaN or infinite" not in str(e):
                    raise
                raise InputError(self._overflow(x_t, f"layer {i}")) from None
            if not all_finite(s):
                raise InputError(self._overflow(x_t, f"the state of layer {i}"))
            new_layers.append(s)
        t = state.t + 1
        if self.config.readout == "mean":
            total = h if state.sum is None else state.sum + h
            return self.decoder(total / t), NetState(new_layers, t, total)
        return self.decoder(h), NetState(new_layers, t, None)
