"""QuantSpec: how each kind of tensor of an S4D network is represented in fixed point.

A spec names, per tensor kind, a bit width and (where it applies) a method, per-channel
scaling, an overflow mode and calibration headroom::

    input        the token fed in (host-side encoding)              bits
    encoder      weights of the input projection (d_in -> H)        bits, method, per_channel, descale_bits
    mixing       weights of each block's H x H Linear               bits, method, per_channel, descale_bits
    decoder      weights of the readout (H -> d_out)                bits, method, per_channel, descale_bits
    activations  every graded spike between layers                  bits, overflow, headroom_bits
    dA, dB, dC   discretized S4D coefficients, real and imaginary   bits, per_channel (default: one
                 parts as mantissas with an exponent per layer      exponent per layer)
    D            the S4D skip term                                  bits, per_channel
    state        each complex S4D state as two integers             bits, overflow, headroom_bits
    bias         biases, added at the output scale                  bits
    accumulator  the synaptic sum  sum_j w_j * s_j  before descale  bits, overflow

Weight methods: ``uniform`` (symmetric, scale = max|w| / (2^(b-1)-1)), ``pow2``
(power-of-two scale: a shift, no multiplier), ``lsq`` (learned step size), ``ternary``
(TWN: threshold 0.7 mean|w|, weights in {-1, 0, 1} times a per-channel scale), ``binary``
({-1, 1} times mean|w|). Every non-power-of-two scale becomes an explicit integer descale
factor of ``descale_bits`` bits and a shift.

Presets: ``loihi2`` (8-bit weights, 24-bit states and graded spikes, 16-bit descale
factors), ``w4`` (4-bit LSQ weights), ``ternary``. A TOML file has one table per kind
(``[mixing] bits = 4``), optionally ``name`` and ``base = "loihi2"`` (start from a preset).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, UnknownNameError
from ..resources import read_toml
from .fixedpoint import OVERFLOW_MODES

WEIGHT_KINDS = ("encoder", "mixing", "decoder")
SSM_KINDS = ("dA", "dB", "dC", "D")
KINDS = ("input",) + WEIGHT_KINDS + ("activations",) + SSM_KINDS + ("state", "bias", "accumulator")
METHODS = ("uniform", "pow2", "lsq", "ternary", "binary")

# which fields each kind accepts, and the allowed bit range
_FIELDS = {
    "input": {"bits", "overflow"},
    "activations": {"bits", "overflow", "headroom_bits"},
    "state": {"bits", "overflow", "headroom_bits"},
    "accumulator": {"bits", "overflow"},
    "bias": {"bits"},
    **{k: {"bits", "method", "per_channel", "descale_bits"} for k in WEIGHT_KINDS},
    **{k: {"bits", "per_channel"} for k in SSM_KINDS},
}
_BITS = {"input": (2, 32), "activations": (2, 32), "state": (2, 32), "accumulator": (8, 62),
         "bias": (2, 32), **{k: (1, 16) for k in WEIGHT_KINDS}, **{k: (2, 24) for k in SSM_KINDS}}


@dataclass
class TensorSpec:
    """Representation of one tensor kind (see the module docstring for which fields apply)."""
    bits: int = 8
    method: str = "uniform"
    per_channel: bool = False
    descale_bits: int = 16
    overflow: str = "saturate"
    headroom_bits: float = 0.0

    @property
    def qmax(self) -> int:
        if self.method == "binary":
            return 1
        return (1 << (self.bits - 1)) - 1


def _default_tensors() -> dict[str, TensorSpec]:
    w = dict(bits=8, method="uniform", per_channel=True, descale_bits=16)
    return {
        "input": TensorSpec(bits=24),
        "encoder": TensorSpec(**w), "mixing": TensorSpec(**w), "decoder": TensorSpec(**w),
        "activations": TensorSpec(bits=24, headroom_bits=1.0),
        "dA": TensorSpec(bits=16), "dB": TensorSpec(bits=8), "dC": TensorSpec(bits=8),
        "D": TensorSpec(bits=8),
        "state": TensorSpec(bits=24, headroom_bits=1.0),
        "bias": TensorSpec(bits=24),
        "accumulator": TensorSpec(bits=48),
    }


PRESETS: dict[str, dict] = {
    # The published Loihi 2 S4D system: 8-bit synaptic weights (encoder, mixing, decoder, and
    # the S4D input/readout synapses dB, C and D), 24-bit neuron states and graded spikes,
    # 16-bit descale factors; dA is a neuron parameter multiplying the 24-bit state (16 bit).
    "loihi2": {},
    "w4": {"encoder": {"bits": 4, "method": "lsq"}, "mixing": {"bits": 4, "method": "lsq"},
           "decoder": {"bits": 4, "method": "lsq"}, "activations": {"bits": 16},
           "input": {"bits": 16}, "bias": {"bits": 16}},
    "ternary": {"encoder": {"bits": 8}, "mixing": {"bits": 2, "method": "ternary"},
                "decoder": {"bits": 8}, "activations": {"bits": 16}, "input": {"bits": 16},
                "bias": {"bits": 16}},
    "binary": {"encoder": {"bits": 8}, "mixing": {"bits": 1, "method": "binary"},
               "decoder": {"bits": 8}, "activations": {"bits": 16}, "input": {"bits": 16},
                "bias": {"bits": 16}},
}


@dataclass
class QuantSpec:
    """Per-kind fixed-point representation of a network; see the module docstring."""
    name: str = "custom"
    tensors: dict[str, TensorSpec] = dataclasses.field(default_factory=_default_tensors)

    def __getitem__(self, kind: str) -> TensorSpec:
        if kind not in self.tensors:
            raise UnknownNameError(f"unknown tensor kind {kind!r}; known: {', '.join(KINDS)}")
        return self.tensors[kind]

    # ---- construction ----------------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> "QuantSpec":
        if name not in PRESETS:
            raise UnknownNameError(f"unknown quantization preset {name!r}; presets: {', '.join(PRESETS)}")
        spec = cls.from_dict({"name": name, **copy.deepcopy(PRESETS[name])})
        return spec

    @classmethod
    def from_dict(cls, d: dict) -> "QuantSpec":
        if not isinstance(d, dict):
            raise ConfigError(f"a quantization spec must be a table/dict, got {type(d).__name__}")
        d = dict(d)
        name = d.pop("name", "custom")
        base = d.pop("base", None)
        d.pop("format", None)
        spec = cls.preset(base) if base else cls(name=str(name))
        spec.name = str(name)
        for kind, fields in d.items():
            if kind not in KINDS:
                raise UnknownNameError(
                    f"quantization spec names an unknown tensor {kind!r}; known tensor kinds: "
                    f"{', '.join(KINDS)}")
            if not isinstance(fields, dict):
                raise ConfigError(f"spec entry {kind!r} must be a table of fields, got {fields!r}")
            bad = sorted(set(fields) - _FIELDS[kind])
            if bad:
                raise ConfigError(f"spec [{kind}] has unknown field(s) {', '.join(bad)}; "
                                  f"{kind} takes {', '.join(sorted(_FIELDS[kind]))}")
            cur = spec.tensors[kind]
            for k, v in fields.items():
                want = type(getattr(TensorSpec(), k))
                if want is float and isinstance(v, int) and not isinstance(v, bool):
                    v = float(v)
                if not isinstance(v, want) or (want is int and isinstance(v, bool)):
                    raise ConfigError(f"spec [{kind}] {k} must be {want.__name__}, got {v!r}")
                setattr(cur, k, v)
            if "method" in fields:  # method implies the bit width of ternary/binary
                if cur.method == "ternary" and "bits" not in fields:
                    cur.bits = 2
                if cur.method == "binary" and "bits" not in fields:
                    cur.bits = 1
        spec.validate()
        return spec

    @classmethod
    def from_toml(cls, path) -> "QuantSpec":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"quantization spec {path} not found")
        d = read_toml(path)
        d.setdefault("name", path.stem)
        return cls.from_dict(d)

    @classmethod
    def load(cls, name_or_path) -> "QuantSpec":
        """A preset name, a TOML path, a dict or a QuantSpec."""
        if isinstance(name_or_path, QuantSpec):
            return name_or_path
        if isinstance(name_or_path, dict):
            return cls.from_dict(name_or_path)
        s = str(name_or_path)
        if s in PRESETS:
            return cls.preset(s)
        p = Path(s)
        if p.suffix == ".toml" or p.exists():
            return cls.from_toml(p)
        from ..resources import preset_file
        cand = preset_file("quant", s)
        if cand is not None:
            return cls.from_toml(cand)
        raise UnknownNameError(f"unknown quantization spec {s!r}: not a preset "
                               f"({', '.join(PRESETS)}) and no such TOML file")

    def to_dict(self) -> dict:
        return {"name": self.name,
                **{k: {f: v for f, v in dataclasses.asdict(t).items() if f in _FIELDS[k]}
                   for k, t in self.tensors.items()}}

    # ---- validation --------------------------------------------------------------------
    def validate(self) -> "QuantSpec":
        """Raise ConfigError for a bit width out of range or widths that cannot work together."""
        for kind in KINDS:
            t = self.tensors[kind]
            lo, hi = _BITS[kind]
            if not lo <= t.bits <= hi:
                raise ConfigError(f"spec [{kind}] bits = {t.bits} is out of range; {kind} takes "
                                  f"{lo} to {hi} bits")
            if kind in WEIGHT_KINDS:
                if t.method not in METHODS:
                    raise ConfigError(f"spec [{kind}] method {t.method!r} unknown; methods: "
                                      f"{', '.join(METHODS)}")
                if t.method == "binary" and t.bits != 1:
                    raise ConfigError(f"spec [{kind}] method binary needs bits = 1, got {t.bits}")
                if t.method == "ternary" and t.bits != 2:
                    raise ConfigError(f"spec [{kind}] method ternary needs bits = 2, got {t.bits}")
                if t.method not in ("binary",) and t.bits < 2:
                    raise ConfigError(f"spec [{kind}] {t.method} weights need at least 2 bits "
                                      f"(1 bit is method = \"binary\")")
                if not 2 <= t.descale_bits <= 16:
                    raise ConfigError(f"spec [{kind}] descale_bits = {t.descale_bits} is out of "
                                      f"range; descale factors take 2 to 16 bits")
            if t.overflow not in OVERFLOW_MODES:
                raise ConfigError(f"spec [{kind}] overflow {t.overflow!r} unknown; use "
                                  f"{' or '.join(OVERFLOW_MODES)}")
            if not 0.0 <= t.headroom_bits <= 8.0:
                raise ConfigError(f"spec [{kind}] headroom_bits must be in [0, 8], got {t.headroom_bits}")
        act, st, acc = self.tensors["activations"], self.tensors["state"], self.tensors["accumulator"]
        if st.bits < act.bits:
            raise ConfigError(
                f"inconsistent bit widths: the state ({st.bits} bits) is narrower than the graded "
                f"spikes that flow into it (activations, {act.bits} bits); use state bits >= "
                f"{act.bits} or narrower activations")
        if st.bits < self.tensors["dB"].bits:
            raise ConfigError(f"inconsistent bit widths: the state ({st.bits} bits) is narrower "
                              f"than dB ({self.tensors['dB'].bits} bits) that scales its input")
        wmax = max(self.tensors[k].bits for k in WEIGHT_KINDS)
        need = max(wmax, self.tensors["input"].bits) + max(act.bits, self.tensors["input"].bits) \
            - (1 if wmax > 1 else 0)
        if acc.bits < need:
            raise ConfigError(
                f"inconsistent bit widths: the accumulator ({acc.bits} bits) cannot hold one "
                f"product of a {wmax}-bit weight and a {max(act.bits, self.tensors['input'].bits)}-bit "
                f"graded spike ({need} bits); widen [accumulator] bits")
        for k in ("dA", "dC"):
            if st.bits + self.tensors[k].bits > 56:
                raise ConfigError(f"state ({st.bits} bits) times {k} ({self.tensors[k].bits} bits) "
                                  f"exceeds the 56-bit product budget of the int64 engine")
        if self.tensors["bias"].bits > act.bits:
            raise ConfigError(f"bias ({self.tensors['bias'].bits} bits) is wider than the activations "
                              f"({act.bits} bits) it is added to")
        return self
