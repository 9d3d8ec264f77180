"""What the generated code is made of: its compile flags and limits, C integer literals, and
the tensors of a model as ``static const`` arrays of the narrowest ``<stdint.h>`` type."""
from __future__ import annotations

import numpy as np

from ....errors import ConfigError
from ....quant.fixedpoint import int_range

CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-O2"]     # the code compiles with these
TARGET = "C-export"
OVERFLOW_KINDS = ("input", "accumulator", "activations", "state")
MAX_SHIFT = 62          # |shift| the generated code accepts (int64 arithmetic)

# (type, bytes, lo, hi) in order of preference: the first that holds a tensor is used
CTYPES = [("int8_t", 1, -(1 << 7), (1 << 7) - 1), ("uint8_t", 1, 0, (1 << 8) - 1),
          ("int16_t", 2, -(1 << 15), (1 << 15) - 1), ("uint16_t", 2, 0, (1 << 16) - 1),
          ("int32_t", 4, -(1 << 31), (1 << 31) - 1), ("uint32_t", 4, 0, (1 << 32) - 1),
          ("int64_t", 8, -(1 << 63), (1 << 63) - 1)]



def ctype_of(a: np.ndarray) -> tuple[str, int]:
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    for t, size, tlo, thi in CTYPES:
        if tlo <= lo and hi <= thi:
            return t, size
    raise ConfigError(f"a tensor with values {lo}..{hi} does not fit int64_t")


def lit(v: int) -> str:
    """A C integer constant of value v, usable in int64_t arithmetic."""
    v = int(v)
    if -(1 << 31) < v < (1 << 31):
        return str(v) if v >= 0 else f"({v})"
    return f"INT64_C({v})" if v > 0 else f"(-INT64_C({-v - 1}) - 1)"


def _init_lit(v: int, ctype: str) -> str:
    v = int(v)
    if ctype == "int64_t" and not -(1 << 31) < v < (1 << 31):
        return f"INT64_C({v})" if v > 0 else f"-INT64_C({-v - 1}) - 1"
    if v == -(1 << 31):
        return "(-2147483647 - 1)"
    return f"{v}u" if ctype == "uint32_t" and v > (1 << 31) - 1 else str(v)


class Arrays:
    """Accumulates the const arrays of the .c file; each tensor is a literal or an array."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.arrays: list[str] = []
        self.data_bytes = 0
        self.n_arrays = 0

    def tensor(self, name: str, a: np.ndarray, force_array: bool = False, ctype: str | None = None):
        """A function idx -> C expression for entry idx of tensor `a` (ctype: a wider type than
        the narrowest, e.g. int16_t for int16 dot products)."""
        a = np.asarray(a, dtype=np.int64)
        if a.size and not force_array and int(a.min()) == int(a.max()):
            v = lit(int(a.flat[0]))
            return lambda *idx: v
        if ctype is not None:
            size = {t: sz for t, sz, _, _ in CTYPES}[ctype]
        else:
            ctype, size = ctype_of(a)
        cname = f"{self.prefix}_{name}"
        dims = "".join(f"[{d}]" for d in a.shape)
        self.arrays.append(f"static const {ctype} {cname}{dims} = {self._init(a, ctype)};")
        self.data_bytes += size * a.size
        self.n_arrays += 1
        return lambda *idx: cname + "".join(f"[{i}]" for i in idx)

    def _init(self, a: np.ndarray, ctype: str) -> str:
        if a.ndim == 1:
            vals = [_init_lit(v, ctype) for v in a.tolist()]
            lines, cur = [], []
            for v in vals:
                cur.append(v)
                if sum(len(x) + 2 for x in cur) > 92:
                    lines.append(", ".join(cur))
                    cur = []
            if cur:
                lines.append(", ".join(cur))
            return "{\n    " + ",\n    ".join(lines) + "\n}"
        rows = [self._init(r, ctype).replace("\n", "\n    ") for r in a]
        return "{\n    " + ",\n    ".join(rows) + "\n}"


def range_args(bits: int, mode: str) -> str:
    lo, hi = int_range(bits)
    return f"{lit(lo)}, {lit(hi)}, {1 if mode == 'wrap' else 0}"

