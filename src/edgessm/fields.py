"""Typed values of config fields: one converter for run configs (TOML), target options
(`--set KEY=VALUE`) and crossbar device fields, so all three accept and refuse the same things."""
from __future__ import annotations

import math

from .errors import ConfigError

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def coerce(label: str, value, want: type, strings: bool = True):
    """`value` as a `want` (bool, int, float or str), else ConfigError("LABEL must be of type ...").
    A float must be finite (NaN and infinity are refused everywhere).

    Ints pass as floats; integral floats (1e3) as ints; a bool never passes as a number nor a
    number as a bool (except 0/1 from the command line). With `strings` (command-line values)
    strings are parsed: "1e3" -> 1000 for an int, "yes"/"no" for a bool (and 1/0 for an int
    flag). TOML values are already typed, so run configs pass strings=False."""
    def bad():
        return ConfigError(f"{label} must be of type {want.__name__}, got {value!r}")

    if isinstance(value, str) and strings and want is not str:
        s = value.strip().lower()
        if want is bool or (want is int and s in TRUE[1:] + FALSE[1:]):
            if s not in TRUE + FALSE:
                raise bad()
            return want(s in TRUE)
        try:
            f = float(s)
        except ValueError:
            raise bad() from None
        if want is float:
            if not math.isfinite(f):
                raise ConfigError(f"{label} must be a finite number, got {value!r}")
            return f
        if want is int and math.isfinite(f) and f == int(f):
            return int(f)
        raise bad()
    if want is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            f = float(value)
        except OverflowError:
            f = math.inf
        if not math.isfinite(f):
            raise ConfigError(f"{label} must be a finite number, got {value!r}")
        return f
    if want is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
        raise bad()
    return value


def json_text(obj, default=None, **kw) -> str:
    """`obj` as JSON text in which every NaN or infinity is null: JSON has neither, and a
    reader must not get a number that is not one. `default` converts other objects (its
    results are cleaned the same way)."""
    import json

    def clean(o):
        if isinstance(o, float):
            return o if math.isfinite(o) else None
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o
    conv = (lambda o: clean(default(o))) if default is not None else None
    return json.dumps(clean(obj), default=conv, allow_nan=False, **kw)


# ---- declarative rules: one per config field or command-line option ------------------------
class Rule:
    """A field's type and valid range, e.g. ``Rule(float, gt=0)``, ``Rule(int, ge=1, le=1024)``,
    ``Rule(str, choices=("auto", "cpu"))``. Numbers must be finite; `check` converts (as
    :func:`coerce`) and raises ConfigError("LABEL must be ..., got ...")."""

    def __init__(self, type_: type, *, ge=None, gt=None, le=None, lt=None, choices=None, note: str = ""):
        self.type, self.ge, self.gt, self.le, self.lt = type_, ge, gt, le, lt
        self.choices, self.note = choices, note

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        def f(x):
            return str(x) if isinstance(x, int) else f"{x:g}"
        what = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}[self.type]
        ge = self.ge
        if self.type is int and ge in (0, 1):
            what, ge = ("a positive integer" if ge == 1 else "a non-negative integer"), None
        parts = [b for b in (f">= {f(ge)}" if ge is not None else "",
                             f"> {f(self.gt)}" if self.gt is not None else "",
                             f"<= {f(self.le)}" if self.le is not None else "",
                             f"< {f(self.lt)}" if self.lt is not None else "") if b]
        return what + (" " + " and ".join(parts) if parts else "") + (f" ({self.note})" if self.note else "")

    def check(self, label: str, value, strings: bool = True):
        v = coerce(label, value, self.type, strings=strings)
        if self.choices is not None:
            if v not in self.choices:
                raise ConfigError(f"{label} must be {self.describe()}, got {value!r}")
            return v
        if self.type in (int, float):
            ok = (self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt) and \
                 (self.le is None or v <= self.le) and (self.lt is None or v < self.lt)
            if not ok:
                raise ConfigError(f"{label} must be {self.describe()}, got {value!r}")
        return v


def check_section(name: str, values: dict, rules: dict, strings: bool = False) -> dict:
    """Every value of a config section through its rule (a key without one: its type only)."""
    return {k: rules[k].check(f"[{name}] {k}", v, strings) if k in rules else v for k, v in values.items()}
