"""What a target declares: its typed options (a :class:`TargetConfig` dataclass) and its
:class:`Capabilities`.

Options are parsed once, at the boundary: ``Config.from_sets(["max_chips=2", ...])`` for
command-line ``--set KEY=VALUE`` strings, ``Config.from_dict(d)`` for typed values (TOML, Python).
Inside the library a config is only copied with typed values (``cfg.replace(seed=3)``, or
``dataclasses.replace``); every construction checks every field, so a config object is always
valid. Unknown keys and bad values raise ConfigError naming the key and the valid ones.

A field's rule comes from its metadata: ``{"rule": Rule(...)}`` for a scalar (default: the type
of its default value, any value), or ``{"parse": fn(label, value)}`` for a field holding an
object (a quantization spec, a crossbar device) that a name or path is loaded into.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Mapping

from ..errors import ConfigError
from ..fields import Rule


@dataclass(frozen=True)
class Capabilities:
    """What the deploy pipeline may ask of a target's programs, declared by the target.

    needs_calibration: compiling a model that is not already quantized for the target takes
        training inputs (``calibration=X``) to set its ranges (PTQ, DAC/ADC ranges).
    stochastic: every compile is one random device instance, chosen by the config's ``seed``;
        ``deploy --trials K`` compiles K of them (seed 0..K-1 unless a seed is given).
    supports_check: programs have ``check(X, batch_size, labels)``: integer outputs compared
        with the quantized PyTorch model (``deploy --check``).
    cost_modes: the ``mode`` values ``program.cost(tokens, mode=...)`` takes; the first is the
        default (a target without a ``mode`` parameter declares only ``("token",)``).
    hw_training: the target has a hardware-aware training wrapper (``train --hw NAME``):
        :meth:`Target.hw_wrap`.
    """
    needs_calibration: bool = False
    stochastic: bool = False
    supports_check: bool = False
    cost_modes: tuple[str, ...] = ("token",)
    hw_training: bool = False


def parse_sets(pairs: Iterable[str] | None) -> dict[str, str]:
    """--set / --hw-set KEY=VALUE pairs -> {key: value string} (dashes in keys become underscores)."""
    out = {}
    for s in pairs or []:
        if "=" not in s:
            raise ConfigError(f"--set/--hw-set takes KEY=VALUE, got {s!r}")
        k, v = s.split("=", 1)
        k = k.strip().replace("-", "_")
        if not k:
            raise ConfigError(f"--set/--hw-set takes KEY=VALUE, got {s!r}")
        out[k] = v.strip()
    return out


@dataclass
class TargetConfig:
    """Base of every target's options. Subclasses are dataclasses; see the module docstring."""

    TARGET: ClassVar[str] = "?"
    # the field ``deploy --spec`` sets (what a spec means on this target), or None
    SPEC_FIELD: ClassVar[str | None] = None

    def __post_init__(self):
        # every construction (the constructor, dataclasses.replace, from_dict) checks every field
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, type(self).convert(f.name, self.__dict__[f.name]))
        self.validate()

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def convert(cls, key: str, value: Any, strings: bool = False) -> Any:
        """`value` for field `key`, checked (and, with `strings`, parsed from command-line text)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        f = fields.get(key)
        if f is None:
            raise ConfigError(f"unknown option {key!r} for the {cls.TARGET} target; known: "
                              f"{', '.join(sorted(fields))}")
        label = f"option {key}"
        if value is None and f.default is None:
            return None
        parse = f.metadata.get("parse")
        if parse is not None:
            return parse(label, value)
        rule = f.metadata.get("rule") or Rule(type(f.default))
        return rule.check(label, value, strings=strings)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None, base: "TargetConfig | None" = None,
                  strings: bool = False):
        """A validated config: `base` (default: the defaults) updated by `values`."""
        cfg = base if base is not None else cls()
        upd = {str(k).replace("-", "_"): v for k, v in (values or {}).items()}
        upd = {k: cls.convert(k, v, strings) for k, v in upd.items()}
        return dataclasses.replace(cfg, **upd)

    @classmethod
    def from_sets(cls, pairs: Iterable[str] | None, base: "TargetConfig | None" = None):
        """A validated config from command-line ``KEY=VALUE`` strings."""
        return cls.from_dict(parse_sets(pairs), base=base, strings=True)

    def replace(self, **values):
        """A copy with typed `values` changed (checked like :meth:`from_dict`)."""
        return type(self).from_dict(values, base=self)

    def with_spec(self, spec):
        """A copy whose :attr:`SPEC_FIELD` is `spec` (a name, a path or a loaded object)."""
        if spec is None:
            return self
        if self.SPEC_FIELD is None:
            raise ConfigError(f"the {self.TARGET} target takes no spec (--spec)")
        return self.replace(**{self.SPEC_FIELD: spec})

    @property
    def spec_value(self):
        """The value of :attr:`SPEC_FIELD` (None: the target's default, or no spec field)."""
        return self.__dict__[self.SPEC_FIELD] if self.SPEC_FIELD is not None else None

    def instance(self, k: int):
        """The config of random device instance k (``capabilities.stochastic``); a deterministic
        target has one instance."""
        return self

    def validate(self):
        """Cross-field checks; returns self. Subclasses add theirs."""
        return self

    def to_dict(self) -> dict:
        return {f.name: self.__dict__[f.name] for f in dataclasses.fields(self)}
