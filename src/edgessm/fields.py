"""Typed values of config fields: one converter for run configs (TOML), target options
(`--set KEY=VALUE`) and crossbar device fields, so all three accept and refuse the same things."""
from __future__ import annotations

import math

from .errors import ConfigError

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def coerce(label: str, value, want: type, strings: bool = True):
    """`value` as a `want` (bool, int, float or str), else ConfigError("LABEL must be of type ...").

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
            return f
        if want is int and math.isfinite(f) and f == int(f):
            return int(f)
        raise bad()
    if want is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if want is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
        raise bad()
    return value
