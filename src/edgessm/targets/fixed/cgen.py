"""C99 generated from the integer network: the code of ``edgessm export-c`` (``export/c.py``,
portable, for microcontrollers) and of the integer engine's compiled backend (``cengine.py``).

    code = generate(net, "smnist")                 # {"h": ..., "c": ..., "data_bytes": ...}
    verify_c(net, "out/", "smnist", X_test)        # compile with a harness, compare with Engine

The C code executes exactly the per-token arithmetic of the integer engine
(``targets/fixed/engine.py``, documented in ``quant/intnet.py``): the same int64
products and sums, the same round-half-up shifts (``s <= 0``: exact left shifts), the
same saturation or wrap-around per tensor kind, with the overflows counted per kind in
the state struct (``overflow_input``, ``overflow_accumulator``, ``overflow_activations``,
``overflow_state``, as ``Engine.overflows``). Graded spikes are sent densely: the C step
is the engine with its default messaging (``sigma_delta_threshold = -1``; ``T = 0`` gives
the same outputs).

What is generated, per model ``<name>``:

* ``<name>.h``: sizes and exponents as ``#define`` (``<NAME>_D_INPUT``, ``<NAME>_D_OUTPUT``,
  ``<NAME>_INPUT_EXP``, ``<NAME>_INPUT_BITS``, ``<NAME>_OUTPUT_EXP``, ...), the state struct
  ``<name>_state`` (fixed-size arrays, no pointers), ``<name>_init``, ``<name>_step`` and
  ``<name>_argmax``; float helpers for the host (``<name>_encode``, ``<name>_decode``) only
  when ``<NAME>_FLOAT_HELPERS`` or ``EDGESSM_FLOAT_HELPERS`` is defined.
* ``<name>.c``: every tensor as a ``static const`` array of the narrowest ``<stdint.h>`` type
  that holds it (a tensor whose entries are all equal becomes a literal), one static
  function per layer, no ``malloc``, no float in the integer step, ``int64_t``
  arithmetic, or ``int32_t`` where the value ranges prove it exact (the range-specialized
  layer code below: a round-half-up shift by a positive constant is then an offset, an
  unsigned shift and a subtraction). Right shifts of negative numbers use a floor shift that
  C99 defines (``~(~x >> s)``, the exact-width types being two's complement), or shift an
  unsigned value; a left shift is a multiplication, so nothing depends on
  implementation-defined or undefined behaviour.

The code compiles with ``cc -std=c99 -Wall -Wextra -pedantic -Werror -O2`` (:data:`CFLAGS`).
:func:`verify_c` compiles it with a small harness, runs test sequences through it and
compares every token's integer logits (and the overflow counters) with the Python
engine, and times the C step on this CPU.

The same generator builds the integer engine's C backend (``targets/fixed/cengine.py``):
``generate(net, name, engine_pops=engine.pops)`` keeps the layer functions, counts overflows
per tensor (``uint64_t engine_overflow[]`` in the state) and appends ``<name>_engine_run``,
which runs a batch of sequences with the engine's message, synop and sigma-delta
bookkeeping; :func:`build_engine` compiles it into a cached shared library.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ...errors import ConfigError, EdgessmError, InputError
from ...quant.fixedpoint import int_range, quantize_input_np
from ...quant.intnet import DenseInt, IntNet, S4DInt

CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-O2"]
TARGET = "C-export"
OVERFLOW_KINDS = ("input", "accumulator", "activations", "state")
MAX_SHIFT = 62          # |shift| the generated code accepts (int64 arithmetic)

C_KEYWORDS = frozenset("""auto break case char const continue default do double else enum extern
float for goto if inline int long register restrict return short signed sizeof static struct
switch typedef union unsigned void volatile while _Bool _Complex _Imaginary""".split())

# (type, bytes, lo, hi) in order of preference: the first that holds a tensor is used
_CTYPES = [("int8_t", 1, -(1 << 7), (1 << 7) - 1), ("uint8_t", 1, 0, (1 << 8) - 1),
           ("int16_t", 2, -(1 << 15), (1 << 15) - 1), ("uint16_t", 2, 0, (1 << 16) - 1),
           ("int32_t", 4, -(1 << 31), (1 << 31) - 1), ("uint32_t", 4, 0, (1 << 32) - 1),
           ("int64_t", 8, -(1 << 63), (1 << 63) - 1)]


class CCompilerError(EdgessmError):
    """No C compiler was found, or the generated C did not compile or run."""


# ---- names --------------------------------------------------------------------------------------
def c_identifier(text) -> str:
    """A C identifier derived from any text: lower case, [a-z0-9_], not starting with a digit."""
    s = re.sub(r"[^0-9a-zA-Z]+", "_", str(text)).strip("_").lower()
    if not s:
        s = "model"
    if s[0].isdigit():
        s = "m_" + s
    if s in C_KEYWORDS:
        s += "_model"
    return s


def check_name(name) -> str:
    """Reject a name that is not a usable C identifier prefix."""
    s = str(name)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,47}", s) or s in C_KEYWORDS:
        raise ConfigError(f"--name {s!r} is not a usable C identifier (a letter, then letters, digits "
                          f"or '_', at most 48 characters, not a C keyword); e.g. {c_identifier(s)!r}")
    return s


# ---- the compiler -------------------------------------------------------------------------------
def find_compiler() -> str:
    """$CC, else cc, gcc or clang on PATH; a clear error naming what to install otherwise."""
    env = os.environ.get("CC")
    if env:
        cc = shutil.which(env)
        if not cc:
            raise CCompilerError(f"CC={env!r} is not an executable C compiler; unset CC or point it at "
                                 f"one (install gcc or clang, e.g. `apt-get install gcc`)")
        return cc
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise CCompilerError("verifying the C export needs a C99 compiler (cc, gcc or clang) on PATH, "
                             "or CC set; install one (e.g. `apt-get install gcc`, `dnf install gcc`, "
                             "`xcode-select --install`), or export without --verify")
    return cc


def _check_net(net: IntNet) -> None:
    if net.decoder is None:
        raise ConfigError("the integer network has no decoder; nothing to export")
    dense = [net.encoder] + [m for _, m in net.layers] + [net.decoder]
    for d in dense:
        if d.out_bits > 32:
            raise ConfigError(f"{d.name}: {d.out_bits}-bit activations do not fit the int32_t API")
    for s, _ in net.layers:
        if s.state_bits > 32:
            raise ConfigError(f"{s.name}: {s.state_bits}-bit states do not fit int32_t")
    if net.in_bits > 32:
        raise ConfigError(f"{net.in_bits}-bit inputs do not fit the int32_t API")
    shifts = [(d.name, d.shift) for d in dense] + \
        [(f"{s.name}.{k}", getattr(s, k)) for s, _ in net.layers for k in ("sA", "sB", "sC", "sD")]
    for where, a in shifts:
        if a.size and (int(a.min()) < -MAX_SHIFT or int(a.max()) > MAX_SHIFT):
            raise ConfigError(f"{where}: a shift of {int(a.min())}..{int(a.max())} bits is outside "
                              f"+-{MAX_SHIFT}; the exponents of the spec are too far apart for int64")


# ---- code generation ----------------------------------------------------------------------------
def _ctype(a: np.ndarray) -> tuple[str, int]:
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    for t, size, tlo, thi in _CTYPES:
        if tlo <= lo and hi <= thi:
            return t, size
    raise ConfigError(f"a tensor with values {lo}..{hi} does not fit int64_t")


def _lit(v: int) -> str:
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


class _Gen:
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
            v = _lit(int(a.flat[0]))
            return lambda *idx: v
        if ctype is not None:
            size = {t: sz for t, sz, _, _ in _CTYPES}[ctype]
        else:
            ctype, size = _ctype(a)
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


def _range_args(bits: int, mode: str) -> str:
    lo, hi = int_range(bits)
    return f"{_lit(lo)}, {_lit(hi)}, {1 if mode == 'wrap' else 0}"


def _export_counter(kind: str) -> str:
    """The overflow counter of the export: one per kind in the state struct."""
    return f"&s->overflow_{kind}"


def _dense_fn(g: _Gen, p: str, d: DenseInt, over=_export_counter) -> str:
    """A dense layer's function; over(kind) is the C pointer its overflows of `kind` count into."""
    C, K = d.W.shape
    W = g.tensor(f"{d.name}_W", d.W, force_array=True)
    gg = g.tensor(f"{d.name}_g", d.g)
    sh = g.tensor(f"{d.name}_shift", d.shift)
    b = g.tensor(f"{d.name}_bias", d.bias)
    bias = "" if b("c") == "0" else f" + {b('c')}"
    relu = "\n        if (v < 0) v = 0;                                  /* ReLU */" if d.relu else ""
    return f"""/* {d.name}: {K} -> {C}, {d.acc_bits}-bit accumulator ({d.acc_mode}), {d.out_bits}-bit output \
({d.out_mode}){', ReLU' if d.relu else ''} */
static void {p}_{d.name}({p}_state *s, const int32_t *in, int32_t *out)
{{
    int c, k;
    for (c = 0; c < {C}; ++c) {{
        int64_t acc = 0, v;
        for (k = 0; k < {K}; ++k)
            acc += (int64_t){W('c', 'k')} * in[k];
        acc = {p}_fit(acc, {_range_args(d.acc_bits, d.acc_mode)}, {over('accumulator')});
        v = {p}_rsr(acc * {gg('c')}, {sh('c')}){bias};
        v = {p}_fit(v, {_range_args(d.out_bits, d.out_mode)}, {over('activations')});{relu}
        out[c] = (int32_t)v;
    }}
}}
"""


def _s4d_fn(g: _Gen, p: str, s: S4DInt, over=_export_counter) -> str:
    H, N = s.ar.shape
    T = {k: g.tensor(f"{s.name}_{k}", getattr(s, k), force_array=k in ("ar", "ai", "br", "bi", "cr", "ci"))
         for k in ("ar", "ai", "br", "bi", "cr", "ci", "dm")}
    S = {k: g.tensor(f"{s.name}_{k}", getattr(s, k).reshape(-1)) for k in ("sA", "sB", "sC", "sD")}
    st = _range_args(s.state_bits, s.state_mode)
    ar, ai, br, bi, cr, ci = (T[k]("h", "n") for k in ("ar", "ai", "br", "bi", "cr", "ci"))
    return f"""/* {s.name}: S4D, H = {H} channels x {N} complex states ({s.state_bits}-bit, {s.state_mode}), \
{s.out_bits}-bit output ({s.out_mode}), ReLU graded spike */
static void {p}_{s.name}({p}_state *s, const int32_t *u, int32_t *a)
{{
    int h, n;
    for (h = 0; h < {H}; ++h) {{
        const int64_t uh = u[h];
        int64_t yc = 0, y;
        for (n = 0; n < {N}; ++n) {{
            const int64_t xr = s->{s.name}_xr[h][n], xi = s->{s.name}_xi[h][n];
            int64_t nr = {p}_rsr((int64_t){ar} * xr - (int64_t){ai} * xi, {S['sA']('h')})
                       + {p}_rsr((int64_t){br} * uh, {S['sB']('h')});
            int64_t ni = {p}_rsr((int64_t){ar} * xi + (int64_t){ai} * xr, {S['sA']('h')})
                       + {p}_rsr((int64_t){bi} * uh, {S['sB']('h')});
            nr = {p}_fit(nr, {st}, {over('state')});
            ni = {p}_fit(ni, {st}, {over('state')});
            s->{s.name}_xr[h][n] = ({_state_type(s)})nr;
            s->{s.name}_xi[h][n] = ({_state_type(s)})ni;
            yc += (int64_t){cr} * nr - (int64_t){ci} * ni;
        }}
        y = {p}_rsr(yc, {S['sC']('h')}) + {p}_rsr((int64_t){T['dm']('h')} * uh, {S['sD']('h')});
        y = {p}_fit(y, {_range_args(s.out_bits, s.out_mode)}, {over('activations')});
        a[h] = (int32_t)(y > 0 ? y : 0);
    }}
}}
"""


def _state_type(s: S4DInt) -> str:
    return "int8_t" if s.state_bits <= 8 else "int16_t" if s.state_bits <= 16 else "int32_t"


def _state_bytes(net: IntNet) -> int:
    n = 4 * (len(OVERFLOW_KINDS) + 1)                         # counters and token count first
    for s, _ in net.layers:
        n += 2 * s.d_model * s.n * {"int8_t": 1, "int16_t": 2, "int32_t": 4}[_state_type(s)]
    return (n + 3) // 4 * 4                                    # struct alignment: uint32_t


def generate(net: IntNet, name: str, source: str = "", *, engine_pops: list | None = None,
             specialize: bool = True, branchless: bool | None = None) -> dict:
    """The C code of `net`: {"h": text, "c": text, "data_bytes", "state_bytes", "scratch_bytes"}.

    engine_pops: the populations of an integer engine (``Engine.pops``) to generate, in
    addition, the batched host-side entry point of the engine's C backend (see
    :func:`_engine_section`; ``targets/fixed/cengine.py``); the result then has an "engine"
    entry. Without it the export is generated (and unchanged by this option).
    specialize: emit the range-specialized layer code where it applies (the same integers,
    fewer and narrower operations; see "range-specialized layer code"); False: the general
    form everywhere. branchless: the form a vectorizing host compiler wants (int32 values
    saturated with selects and counted with adds; each S4D coefficient its own array) instead
    of the one an in-order 32-bit core wants (a rarely taken branch per fit; the coefficients
    of a state side by side, two arrays instead of six); default: branchless for the engine
    backend (engine_pops), not for the export. Both compute the same integers."""
    _check_net(net)
    _BRANCHLESS[0] = engine_pops is not None if branchless is None else bool(branchless)
    p, P = name, name.upper()
    g = _Gen(p)
    widths = [net.d_model, net.d_output] + [m.W.shape[0] for _, m in net.layers] + \
             [s.d_model for s, _ in net.layers]
    W = max(widths)
    slots: list[tuple[str, str]] = []          # engine: (tensor, overflow kind) per counter

    def counters(where: str):
        if engine_pops is None:
            return _export_counter

        def over(kind: str) -> str:
            if (where, kind) not in slots:
                slots.append((where, kind))
            return f"&s->engine_overflow[{slots.index((where, kind))}]"
        return over
    in_lo, in_hi = int_range(min(net.in_bits, 32))
    rng = _R(in_lo, in_hi)

    def dense(d):
        nonlocal rng
        fast = _dense_fast(g, p, d, rng, counters(d.name)) if specialize else None
        if fast is None:
            lo, hi = int_range(d.out_bits)
            rng = _R(0 if d.relu else lo, hi)
            return _dense_fn(g, p, d, counters(d.name))
        code, rng = fast
        return code

    def s4d(s):
        nonlocal rng
        fast = _s4d_fast(g, p, s, rng, counters(s.name)) if specialize else None
        if fast is None:
            rng = _R(0, int_range(s.out_bits)[1])
            return _s4d_fn(g, p, s, counters(s.name))
        code, rng = fast
        return code
    fns = [dense(net.encoder)]
    for s, m in net.layers:
        fns.append(s4d(s))
        fns.append(dense(m))
    fns.append(dense(net.decoder))
    engine = _engine_section(g, p, net, engine_pops, slots, W) if engine_pops is not None else None
    in_lo, in_hi = int_range(net.in_bits)
    from ... import __version__
    layers_desc = ", ".join(f"{s.name} (H={s.d_model}, N={s.n})" for s, _ in net.layers)
    state_fields = "\n".join(
        f"    {_state_type(s)} {s.name}_xr[{s.d_model}][{s.n}];   /* S4D state, real part ({s.state_bits} bit) */\n"
        f"    {_state_type(s)} {s.name}_xi[{s.d_model}][{s.n}];   /* imaginary part */"
        for s, _ in net.layers)
    fit_counter, fit_count = "uint32_t", "    if (*over != UINT32_MAX)\n        ++*over;"
    if engine is not None:
        state_fields += (f"\n    uint64_t engine_overflow[{len(slots)}];   /* integer engine backend: "
                         f"overflows per tensor and kind */")
        fit_counter, fit_count = "uint64_t", "    ++*over;"
    origin = f" from {source}" if source else ""
    h = f"""/* {name}.h: S4D network{origin}, quantized with spec {net.spec_name!r}, as portable C99.
 * Generated by edgessm {__version__} (edgessm export-c); do not edit.
 *
 * Integer only: inputs and logits are fixed-point mantissas, value = mantissa * 2^exponent.
 *   {p}_state s;  {p}_init(&s);   one state per stream (no malloc, no pointers)
 *   {p}_step(&s, x_in, logits);   one token: {P}_D_INPUT mantissas in, {P}_D_OUTPUT out
 *   x_in[i]   = round_half_up(x[i] * 2^-{P}_INPUT_EXP), saturated to {P}_INPUT_BITS bits
 *   logits[j] * 2^{P}_OUTPUT_EXP is the model's output after this token
 * Overflows (values that did not fit their bit width and were saturated or wrapped) are
 * counted per kind in the state, as the Python integer engine counts them.
 * Layers: encoder, {layers_desc}, decoder.
 */
#ifndef {P}_H
#define {P}_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define {P}_D_INPUT {net.d_input}
#define {P}_D_OUTPUT {net.d_output}
#define {P}_D_MODEL {net.d_model}
#define {P}_N_LAYERS {len(net.layers)}
#define {P}_INPUT_EXP ({net.in_exp})       /* input value = mantissa * 2^{P}_INPUT_EXP */
#define {P}_INPUT_BITS {net.in_bits}
#define {P}_INPUT_MIN {_lit(in_lo)}
#define {P}_INPUT_MAX {_lit(in_hi)}
#define {P}_OUTPUT_EXP ({net.out_exp})      /* logit value = mantissa * 2^{P}_OUTPUT_EXP */
#define {P}_OUTPUT_BITS {net.decoder.out_bits}

typedef struct {{
    uint32_t overflow_input;        /* inputs out of range (saturated), in {p}_step or {p}_encode */
    uint32_t overflow_accumulator;  /* synaptic sums out of accumulator range */
    uint32_t overflow_activations;  /* graded spikes / logits out of range */
    uint32_t overflow_state;        /* S4D states out of range (real and imaginary counted apart) */
    uint32_t tokens;                /* tokens since {p}_init (modulo 2^32) */
{state_fields}
}} {p}_state;
/* The overflow counters stop at UINT32_MAX. */

/* Reset a stream: zero states and counters. */
void {p}_init({p}_state *s);

/* One token: x_in[{P}_D_INPUT] encoded input mantissas -> logits[{P}_D_OUTPUT] output mantissas.
 * An x_in outside [{P}_INPUT_MIN, {P}_INPUT_MAX] is saturated and counted in overflow_input. */
void {p}_step({p}_state *s, const int32_t *x_in /* encoded input mantissas */,
              int32_t *logits /* output mantissas */);

/* The predicted class: index of the largest logit (the first one on ties). */
int {p}_argmax(const int32_t *logits);

/* ---- optional float helpers for the host (not needed on the device) --------------------------
 * Compiled only with -D{P}_FLOAT_HELPERS or -DEDGESSM_FLOAT_HELPERS. They use double
 * arithmetic (exact for the power-of-two scales, as the Python encoder). */
#if defined({P}_FLOAT_HELPERS) || defined(EDGESSM_FLOAT_HELPERS)
/* x[{P}_D_INPUT] -> x_in: round_half_up(x * 2^-{P}_INPUT_EXP), saturated to {P}_INPUT_BITS bits;
 * values that did not fit (and NaN, encoded as 0) are counted in s->overflow_input. */
void {p}_encode({p}_state *s, const float *x, int32_t *x_in);
/* logits[{P}_D_OUTPUT] mantissas -> y = logits * 2^{P}_OUTPUT_EXP. */
void {p}_decode(const int32_t *logits, float *y);
#endif

#ifdef __cplusplus
}}
#endif

#endif /* {P}_H */
"""
    in_check = ""
    if net.in_bits < 32:
        in_check = f"""        if (v < {P}_INPUT_MIN || v > {P}_INPUT_MAX) {{
            v = v < {P}_INPUT_MIN ? {P}_INPUT_MIN : {P}_INPUT_MAX;
            if (s->overflow_input != UINT32_MAX) ++s->overflow_input;
        }}
"""
    steps = []
    steps.append(f"    {p}_encoder(s, xin, buf0);")
    cur = "buf0"
    for s, m in net.layers:
        other = "buf1" if cur == "buf0" else "buf0"
        steps.append(f"    {p}_{s.name}(s, {cur}, {other});")
        steps.append(f"    {p}_{m.name}(s, {other}, {cur});")
    steps.append(f"    {p}_decoder(s, {cur}, logits);")
    body = "\n".join(steps)
    body_fns = "".join(fns)
    helper_parts = []
    if f"{p}_rsr(" in body_fns:
        helper_parts.append(f"""/* floor(x / 2^s) for 0 <= s <= 62, defined for negative x too (C99 leaves >> of negative
 * values implementation-defined; int64_t is two's complement, so ~x = -x - 1 >= 0). */
static int64_t {p}_floor_shift(int64_t x, int s)
{{
    return x >= 0 ? x >> s : ~(~x >> s);
}}

/* Round-half-up right shift by s > 0; exact left shift (a multiplication) by -s for s <= 0. */
static int64_t {p}_rsr(int64_t x, int s)
{{
    if (s > 0)
        return {p}_floor_shift(x + ((int64_t)1 << (s - 1)), s);
    return x * ((int64_t)1 << -s);
}}
""")
    if f"{p}_fit(" in body_fns:
        helper_parts.append(f"""/* Fit x into [lo, hi] (a signed bit width): saturate, or wrap around (two's complement) when
 * `wrap`; a value that did not fit is counted in *over{' (which stops at UINT32_MAX)' if engine is None else ''}. */
static int64_t {p}_fit(int64_t x, int64_t lo, int64_t hi, int wrap, {fit_counter} *over)
{{
    if (x >= lo && x <= hi)
        return x;
{fit_count}
    if (wrap)
        return (int64_t)(((uint64_t)x - (uint64_t)lo) & ((uint64_t)hi - (uint64_t)lo)) + lo;
    return x < lo ? lo : hi;
}}
""")
    if f"{p}_count(" in body_fns:
        add = ("*over += n;" if engine is not None else
               "*over = n > UINT32_MAX - *over ? UINT32_MAX : *over + n;   /* stops at UINT32_MAX */")
        helper_parts.append(f"""/* Add the n overflows a layer counted to *over. */
static void {p}_count({fit_counter} *over, uint32_t n)
{{
    {add}
}}
""")
    helpers = "\n".join(helper_parts)
    c = f"""/* {name}.c: S4D network{origin}, quantized with spec {net.spec_name!r}, as portable C99.
 * Generated by edgessm {__version__} (edgessm export-c); do not edit. See {name}.h.
 *
 * Per token (quant/intnet.py), every intermediate in int64_t:
 *   Dense: acc = W a -> fit(acc bits); v = rsr(acc * g, shift) + bias -> fit(out bits) [ReLU]
 *   S4D:   xr' = fit(rsr(ar xr - ai xi, sA) + rsr(br u, sB)),  xi' = fit(rsr(ar xi + ai xr, sA) + rsr(bi u, sB))
 *          y = fit(rsr(sum_n cr xr' - ci xi', sC) + rsr(dm u, sD));  a = ReLU(y)
 * rsr(x, s) = floor((x + 2^(s-1)) / 2^s) for s > 0 (round half up), x * 2^-s for s <= 0;
 * fit() saturates (or wraps, where the spec says so) to a signed bit width and counts.
 */
#include <string.h>
#include "{name}.h"

{helpers}
/* ---- weights and coefficients (mantissas), descale factors and shifts ------------------------- */
{chr(10).join(g.arrays)}

/* ---- layers ------------------------------------------------------------------------------------ */
{chr(10).join(fns)}
/* ---- API --------------------------------------------------------------------------------------- */
void {p}_init({p}_state *s)
{{
    memset(s, 0, sizeof *s);
}}

void {p}_step({p}_state *s, const int32_t *x_in, int32_t *logits)
{{
    int32_t xin[{P}_D_INPUT];
    int32_t buf0[{W}], buf1[{W}];
    int i;
    for (i = 0; i < {P}_D_INPUT; ++i) {{
        int32_t v = x_in[i];
{in_check}        xin[i] = v;
    }}
{body}
    ++s->tokens;
    (void)buf1;
}}

int {p}_argmax(const int32_t *logits)
{{
    int j, best = 0;
    for (j = 1; j < {P}_D_OUTPUT; ++j)
        if (logits[j] > logits[best])
            best = j;
    return best;
}}

#if defined({P}_FLOAT_HELPERS) || defined(EDGESSM_FLOAT_HELPERS)
/* ---- float helpers (host side) ----------------------------------------------------------------- */
void {p}_encode({p}_state *s, const float *x, int32_t *x_in)
{{
    int i;
    for (i = 0; i < {P}_D_INPUT; ++i) {{
        const double v = (double)x[i] * {2.0 ** -net.in_exp!r} + 0.5;   /* x * 2^-INPUT_EXP, exact */
        int64_t m;
        if (v != v) {{                                   /* NaN */
            m = 0;
            if (s->overflow_input != UINT32_MAX) ++s->overflow_input;
        }} else if (v < (double){P}_INPUT_MIN || v >= (double){P}_INPUT_MAX + 1.0) {{
            m = v < (double){P}_INPUT_MIN ? {P}_INPUT_MIN : {P}_INPUT_MAX;
            if (s->overflow_input != UINT32_MAX) ++s->overflow_input;
        }} else {{
            m = (int64_t)v;                              /* truncation, then floor */
            if ((double)m > v)
                --m;
        }}
        x_in[i] = (int32_t)m;
    }}
}}

void {p}_decode(const int32_t *logits, float *y)
{{
    int j;
    for (j = 0; j < {P}_D_OUTPUT; ++j)
        y[j] = (float)((double)logits[j] * {2.0 ** net.out_exp!r});
}}
#endif
"""
    scratch = 4 * (2 * W + net.d_input)
    res = {"h": h, "c": c, "data_bytes": g.data_bytes, "const_arrays": g.n_arrays,
           "state_bytes": _state_bytes(net), "scratch_bytes": scratch}
    if engine is not None:
        res["c"] = c + engine.pop("c")
        res["engine"] = engine
    return res


# ---- the integer engine's C backend (host side; targets/fixed/cengine.py) ---------------------------
def _send_code(g: _Gen, j: int, pop: dict, buf: str, off: int, keep: bool) -> str:
    """Count the graded spikes of population j in `buf` as ``Engine._send`` does: messages,
    synops (the fan-out of each sender); with T >= 0 (sigma-delta) send only changes > T
    since the last message and let the receivers see the last sent value (`buf` becomes
    it, unless `keep`: the logits leave the network as computed)."""
    n = int(pop["size"])
    F = g.tensor(f"engine_fanout{j}", np.asarray(pop["fan_out"], np.int64))
    seen = "" if keep else f"""
            }} else {{
                {buf}[i] = r[i];"""
    return f"""    /* {pop['name']}: {n} neurons */
    if (T < 0) {{
        for (i = 0; i < {n}; ++i)
            if ({buf}[i] != 0) {{
                ++msg[{j}];
                syn[{j}] += (uint64_t){F('i')};
            }}
    }} else {{
        int32_t *r = ref + {off};
        for (i = 0; i < {n}; ++i) {{
            const int64_t d = (int64_t){buf}[i] - r[i];
            if (d > T || d < -T) {{
                ++msg[{j}];
                syn[{j}] += (uint64_t){F('i')};
                r[i] = {buf}[i];{seen}
            }}
        }}
    }}
"""


def _engine_section(g: _Gen, p: str, net: IntNet, pops: list, slots: list, W: int) -> dict:
    """C of the integer engine's batched entry point ``<p>_engine_run``: B streams x L tokens
    in one call, each stream's S4D states loaded from and stored to int64 arrays, graded
    spikes counted per population and overflows per tensor (``engine_overflow``), with
    optional sigma-delta messaging; it calls the export's layer functions, so the
    arithmetic is the export's, token for token."""
    P = p.upper()
    graded = [q for q in pops if q["kind"] != "state"]
    order = ["input", net.encoder.name] + [x for s, m in net.layers for x in (s.name, m.name)] + \
        [net.decoder.name]
    if [q["name"] for q in graded] != order:
        raise ConfigError(f"engine populations {[q['name'] for q in graded]} do not follow the network {order}")
    offs = np.cumsum([0] + [int(q["size"]) for q in graded]).tolist()
    R = offs[-1]
    steps = [_send_code(g, 0, graded[0], "xin", offs[0], False),
             f"    {p}_{net.encoder.name}(s, xin, buf0);\n",
             _send_code(g, 1, graded[1], "buf0", offs[1], False)]
    cur, j = "buf0", 2
    for s, m in net.layers:
        other = "buf1" if cur == "buf0" else "buf0"
        steps.append(f"    {p}_{s.name}(s, {cur}, {other});\n")
        steps.append(_send_code(g, j, graded[j], other, offs[j], False))
        steps.append(f"    {p}_{m.name}(s, {other}, {cur});\n")
        steps.append(_send_code(g, j + 1, graded[j + 1], cur, offs[j + 1], False))
        j += 2
    steps.append(f"    {p}_{net.decoder.name}(s, {cur}, lg);\n")
    steps.append(_send_code(g, j, graded[j], "lg", offs[j], True))
    load, store = [], []
    for li, (s, _) in enumerate(net.layers):
        H, N, t = s.d_model, s.n, _state_type(s)
        for k, part in ((2 * li, "xr"), (2 * li + 1, "xi")):
            load.append(f"""        for (h = 0; h < {H}; ++h)
            for (n = 0; n < {N}; ++n)
                s->{s.name}_{part}[h][n] = ({t})st_in[{k}][((size_t)b * {H} + (size_t)h) * {N} + (size_t)n];""")
            store.append(f"""        for (h = 0; h < {H}; ++h)
            for (n = 0; n < {N}; ++n)
                st_out[{k}][((size_t)b * {H} + (size_t)h) * {N} + (size_t)n] = s->{s.name}_{part}[h][n];""")
    ref_load = "\n".join(f"""            for (i = 0; i < {int(q['size'])}; ++i)
                ref[{offs[k]} + i] = (int32_t)ref_in[{k}][(size_t)b * {int(q['size'])} + (size_t)i];"""
                          for k, q in enumerate(graded))
    ref_store = "\n".join(f"""            for (i = 0; i < {int(q['size'])}; ++i)
                ref_out[{k}][(size_t)b * {int(q['size'])} + (size_t)i] = ref[{offs[k]} + i];"""
                           for k, q in enumerate(graded))
    c = f"""
/* ---- integer engine backend (edgessm targets/fixed/cengine.py; host only, not the export's API) ---- */
#include <stdlib.h>

#define {P}_ENGINE_POPULATIONS {len(graded)}
#define {P}_ENGINE_OVERFLOWS {len(slots)}

/* One token of one stream, as Engine.step_int: x[{P}_D_INPUT] -> y[{P}_D_OUTPUT] (int64 mantissas),
 * graded spikes counted per population in msg[], syn[] (messages; synops = the fan-out of each
 * sender), sigma-delta messaging against the references ref[{R}] when T >= 0. */
static void {p}_engine_step({p}_state *s, const int64_t *x, int64_t *y, int32_t *ref, int64_t T,
                            uint64_t *msg, uint64_t *syn)
{{
    int32_t xin[{P}_D_INPUT], buf0[{W}], buf1[{W}], lg[{P}_D_OUTPUT];
    int i;
    for (i = 0; i < {P}_D_INPUT; ++i)
        xin[i] = (int32_t)x[i];
{"".join(steps)}    for (i = 0; i < {P}_D_OUTPUT; ++i)
        y[i] = lg[i];
    ++s->tokens;
    (void)buf1;
}}

/* The size of one stream's state (the export's {p}_state with the engine's counters), for a
 * host that steps a stream with {p}_init / {p}_step. */
size_t {p}_engine_state_size(void)
{{
    return sizeof({p}_state);
}}

/* B streams of L tokens: x[B][L][{P}_D_INPUT] -> y[B][L][{P}_D_OUTPUT], int64 mantissas (inputs
 * within {P}_INPUT_MIN..{P}_INPUT_MAX). Stream b starts from the states st_in[2l], st_in[2l+1]
 * (layer l's real and imaginary parts, int64 [B][H][N], within the state bit width) and ends in
 * st_out[2l], st_out[2l+1] (which may be st_in); with T >= 0 the sigma-delta references likewise
 * (ref_in[j], ref_out[j]: int64 [B][size of population j]). Adds the counts to msg[j], syn[j]
 * ({P}_ENGINE_POPULATIONS) and ovf[k] ({P}_ENGINE_OVERFLOWS). Returns 0, or -1 out of memory. */
int {p}_engine_run(int64_t B, int64_t L, const int64_t *x, int64_t *y,
                   const int64_t *const *st_in, int64_t *const *st_out,
                   const int64_t *const *ref_in, int64_t *const *ref_out, int64_t T,
                   uint64_t *msg, uint64_t *syn, uint64_t *ovf)
{{
    int32_t ref[{R}] = {{0}};
    {p}_state *s = ({p}_state *)malloc(sizeof *s);
    int64_t b, t;
    int h, n, i, k;
    if (!s)
        return -1;
    for (b = 0; b < B; ++b) {{
        memset(s, 0, sizeof *s);
{chr(10).join(load)}
        if (T >= 0) {{
{ref_load}
        }}
        for (t = 0; t < L; ++t)
            {p}_engine_step(s, x + ((size_t)b * (size_t)L + (size_t)t) * {P}_D_INPUT,
                            y + ((size_t)b * (size_t)L + (size_t)t) * {P}_D_OUTPUT, ref, T, msg, syn);
{chr(10).join(store)}
        if (T >= 0) {{
{ref_store}
        }}
        for (k = 0; k < {P}_ENGINE_OVERFLOWS; ++k)
            ovf[k] += s->engine_overflow[k];
    }}
    free(s);
    (void)h; (void)n; (void)st_in; (void)st_out;
    return 0;
}}
"""
    return {"c": c, "populations": [q["name"] for q in graded], "sizes": [int(q["size"]) for q in graded],
            "overflow_slots": list(slots), "run": f"{p}_engine_run", "state_size": f"{p}_engine_state_size",
            "init": f"{p}_init", "step": f"{p}_step"}


ENGINE_CFLAGS = ["-O3", "-fPIC", "-shared"]    # the engine backend: a shared library, CFLAGS (-O3 after -O2 wins) +
ENGINE_NATIVE = ["-march=native"]             # tuned to this CPU where the compiler can (~20 % faster)


def build_engine(code: dict, name: str, cc: str | None = None) -> Path:
    """Compile generated engine code (``generate(..., engine_pops=...)``) into a shared library
    with :data:`CFLAGS` (and -march=native on x86-64 and arm64, else or if that fails without),
    cached in ``~/.cache/edgessm/build/engine`` by the hash of the sources, compiler, flags and
    CPU kind. Returns the library's path."""
    import platform
    cc = cc or find_compiler()
    native = platform.machine().lower() in ("x86_64", "amd64", "aarch64", "arm64")
    err = None
    for extra in ([ENGINE_NATIVE, []] if native else [[]]):
        args = ENGINE_CFLAGS + extra
        from ..cpu.build import cache_key
        key = cache_key(code["h"], code["c"], cc=cc, flags=CFLAGS + args, native=bool(extra))
        lib = _cache_dir().parent / "engine" / f"{name}-{key}.so"
        if lib.is_file():
            return lib
        with tempfile.TemporaryDirectory(prefix="edgessm-engine-") as td:
            (Path(td) / f"{name}.h").write_text(code["h"])
            (Path(td) / f"{name}.c").write_text(code["c"])
            try:
                _compile(cc, [*args, "-I", td, str(Path(td) / f"{name}.c")], lib,
                         f"the integer engine's C backend ({name}.c)")
                return lib
            except CCompilerError as e:
                err = e
    raise err


# ---- export ---------------------------------------------------------------------------------------
def _as_inputs(X, d_input: int) -> np.ndarray:
    try:
        import torch
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    X = np.asarray(X)
    if X.ndim != 3 or X.shape[2] != d_input or X.shape[0] < 1 or X.shape[1] < 1:
        raise InputError(f"verification inputs must be (batch, length, {d_input}) with batch, length >= 1, "
                         f"got shape {tuple(X.shape)}")
    if not np.issubdtype(X.dtype, np.number) or not np.all(np.isfinite(X)):
        raise InputError("verification inputs must be finite numbers (no NaN or inf)")
    return np.ascontiguousarray(X, dtype=np.float32)


# ---- verification ---------------------------------------------------------------------------------
_HARNESS = r"""/* Test harness of the edgessm C export (generated; host only). */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "@NAME@.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int fail(const char *msg)
{
    fprintf(stderr, "harness: %s\n", msg);
    return 1;
}

/* harness IN OUT MIN_SECONDS
 * IN:  int32 n, L, d_in; float32 x[n][L][d_in]; int32 x_in[n][L][d_in] (encoded by Python)
 * OUT: int32 logits[n][L][d_out]; stdout: one JSON object of counters and timing */
int main(int argc, char **argv)
{
    FILE *f;
    int32_t hdr[3];
    long n, L, i, t, k, reps = 0;
    size_t nin, nout;
    float *xf;
    int32_t *xm, *y;
    int32_t yb[@P@_D_OUTPUT];
    @NAME@_state s;
    unsigned long long over[4] = {0, 0, 0, 0}, enc_mism = 0;
    double t0, el, min_s;
    clock_t c0;
    volatile int32_t sink = 0;
    if (argc != 4)
        return fail("usage: harness IN OUT MIN_SECONDS");
    min_s = atof(argv[3]);
    f = fopen(argv[1], "rb");
    if (!f)
        return fail("cannot open the input file");
    if (fread(hdr, sizeof hdr[0], 3, f) != 3)
        return fail("short header");
    n = hdr[0];
    L = hdr[1];
    if (hdr[2] != @P@_D_INPUT || n < 1 || L < 1)
        return fail("bad header");
    nin = (size_t)n * (size_t)L * @P@_D_INPUT;
    nout = (size_t)n * (size_t)L * @P@_D_OUTPUT;
    xf = (float *)malloc(nin * sizeof *xf);
    xm = (int32_t *)malloc(nin * sizeof *xm);
    y = (int32_t *)malloc(nout * sizeof *y);
    if (!xf || !xm || !y)
        return fail("out of memory");
    if (fread(xf, sizeof *xf, nin, f) != nin || fread(xm, sizeof *xm, nin, f) != nin)
        return fail("short input");
    fclose(f);
    for (i = 0; i < n; ++i) {
        @NAME@_init(&s);
        for (t = 0; t < L; ++t) {
            size_t off = (size_t)i * (size_t)L + (size_t)t;
            int32_t e[@P@_D_INPUT];
            @NAME@_encode(&s, xf + off * @P@_D_INPUT, e);
            for (k = 0; k < @P@_D_INPUT; ++k)
                if (e[k] != xm[off * @P@_D_INPUT + k])
                    ++enc_mism;
            @NAME@_step(&s, xm + off * @P@_D_INPUT, y + off * @P@_D_OUTPUT);
        }
        over[0] += s.overflow_input;
        over[1] += s.overflow_accumulator;
        over[2] += s.overflow_activations;
        over[3] += s.overflow_state;
    }
    f = fopen(argv[2], "wb");
    if (!f || fwrite(y, sizeof *y, nout, f) != nout)
        return fail("cannot write the output file");
    fclose(f);
    t0 = now_s();
    c0 = clock();
    do {
        for (i = 0; i < n; ++i) {
            @NAME@_init(&s);
            for (t = 0; t < L; ++t) {
                @NAME@_step(&s, xm + ((size_t)i * (size_t)L + (size_t)t) * @P@_D_INPUT, yb);
                sink ^= yb[0];
            }
        }
        ++reps;
        el = now_s() - t0;
    } while (el < min_s);
    printf("{\"encode_mismatches\": %llu, \"input\": %llu, \"accumulator\": %llu, \"activations\": %llu, "
           "\"state\": %llu, \"sizeof_state\": %lu, \"timed_tokens\": %ld, \"seconds\": %.9f, \"cpu_seconds\": %.9f, \"sink\": %ld}\n",
           enc_mism, over[0], over[1], over[2], over[3], (unsigned long)sizeof(@NAME@_state),
           reps * n * L, el, (double)(clock() - c0) / CLOCKS_PER_SEC, (long)sink);
    free(xf);
    free(xm);
    free(y);
    return 0;
}
"""


def _cache_dir() -> Path:
    from ..cpu.build import cache_dir
    return cache_dir() / "export-c"


def _compile(cc: str, args: list[str], out: Path, what: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=out.suffix or ".bin", dir=out.parent)
    os.close(fd)
    try:
        r = subprocess.run([cc, *CFLAGS, *args, "-o", tmp], capture_output=True, text=True, check=False)
    except OSError as e:
        os.unlink(tmp)
        raise CCompilerError(f"could not run the C compiler {cc}: {e}") from None
    if r.returncode:
        os.unlink(tmp)
        raise CCompilerError(f"compiling {what} with {cc} {' '.join(CFLAGS)} failed:\n{r.stderr.strip()[:3000]}")
    os.replace(tmp, out)


def build(out_dir, name: str, cc: str | None = None) -> dict:
    """Compile the export (object, for its size) and the harness (executable), cached in
    ``~/.cache/edgessm/build/export-c`` by the hash of the sources, compiler and flags."""
    cc = cc or find_compiler()
    out = Path(out_dir)
    hdr, src = out / f"{name}.h", out / f"{name}.c"
    harness = _HARNESS.replace("@NAME@", name).replace("@P@", name.upper())
    from ..cpu.build import cache_key
    key = cache_key(hdr.read_bytes(), src.read_bytes(), harness, cc=cc, flags=CFLAGS, native=False)
    d = _cache_dir()
    obj, exe, hsrc = d / f"{name}-{key}.o", d / f"{name}-{key}-harness", d / f"{name}-{key}-harness.c"
    if not obj.is_file():
        _compile(cc, ["-c", str(src)], obj, f"{src.name}")
    if not exe.is_file():
        d.mkdir(parents=True, exist_ok=True)
        hsrc.write_text(harness)
        _compile(cc, [f"-D{name.upper()}_FLOAT_HELPERS", "-I", str(out), str(src), str(hsrc)], exe,
                 f"{src.name} with the test harness")
    return {"object": obj, "harness": exe, "cc": cc, "host_text_bytes": _elf_section_bytes(obj, ".text"),
            "host_rodata_bytes": _elf_section_bytes(obj, ".rodata")}


def _elf_section_bytes(path: Path, prefix: str) -> int | None:
    """Total size of the sections `prefix` and `prefix.*` of an ELF object (None: not ELF)."""
    try:
        b = path.read_bytes()
        if b[:4] != b"\x7fELF":
            return None
        e = "<" if b[5] == 1 else ">"
        if b[4] == 2:                                              # ELF64
            shoff, = struct.unpack_from(e + "Q", b, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", b, 0x3A)
            at, fmt = 0x18, "QQ"
        else:                                                      # ELF32
            shoff, = struct.unpack_from(e + "I", b, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", b, 0x2E)
            at, fmt = 0x10, "II"

        def sec(i: int) -> tuple[int, int, int]:
            """(name offset, file offset, size) of section header i."""
            base = shoff + i * shentsize
            return (struct.unpack_from(e + "I", b, base)[0], *struct.unpack_from(e + fmt, b, base + at))

        _, stroff, _ = sec(shstrndx)
        total = 0
        for i in range(shnum):
            nm, _, size = sec(i)
            end = b.index(b"\0", stroff + nm)
            sname = b[stroff + nm:end].decode()
            if sname == prefix or sname.startswith(prefix + "."):
                total += size
        return total
    except (OSError, struct.error, ValueError, IndexError):
        return None


def engine_reference(net: IntNet, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """The numpy integer engine on float inputs X (B, L, d_in), token by token: (encoded inputs
    xm, integer logits (B, L, d_out), overflows per kind summed over the sequences, the input
    encoding's included): what the C is compared with."""
    from .engine import Engine
    B, L, _ = X.shape
    xm, in_over = quantize_input_np(X, net.in_exp, net.in_bits)
    eng = Engine(net, backend="numpy")          # the reference, not the C it is compared with
    st = eng.init_state(B)
    ref = np.empty((B, L, net.d_output), np.int64)
    for t in range(L):
        ref[:, t], st = eng.step_int(np.ascontiguousarray(xm[:, t]), st)
    eng_over = dict(eng.overflows)
    eng_over["input"] += in_over
    return xm, ref, eng_over


def verify_c(net: IntNet, out_dir, name: str, X, cc: str | None = None, min_seconds: float = 0.2) -> dict:
    """Compile the export in `out_dir` with a test harness, run the sequences X (B, L, d_in),
    float) through it and through the integer engine, and compare.

    Inputs are encoded as ``FixedProgram.encode`` does (``quantize_input_np`` of the float32
    values); the C step gets those mantissas, and the C float helper ``<name>_encode`` is
    checked against them too. Returns {"verified", "mismatches", "compared" (integer logits:
    tokens x classes), "samples_with_mismatch", "max_abs_diff", "encode_mismatches",
    "overflows" (C) and "overflows_engine" (per kind, summed over the sequences),
    "c_us_per_token" (the C step on this CPU, one stream: process CPU time per token, which a
    busy machine disturbs less than wall time; "c_wall_us_per_token" is the wall time),
    "sizeof_state", "n", "length"}.
    """
    cc = cc or find_compiler()
    X = _as_inputs(X, net.d_input)
    B, L, _ = X.shape
    xm, ref, eng_over = engine_reference(net, X)
    b = build(out_dir, name, cc)
    with tempfile.TemporaryDirectory(prefix="edgessm-export-c-") as td:
        fin, fout = Path(td) / "in.bin", Path(td) / "out.bin"
        with open(fin, "wb") as f:
            f.write(np.array([B, L, net.d_input], np.int32).tobytes())
            f.write(X.astype(np.float32).tobytes())
            f.write(xm.astype(np.int32).tobytes())
        r = subprocess.run([str(b["harness"]), str(fin), str(fout), repr(float(min_seconds))],
                           capture_output=True, text=True, check=False)
        if r.returncode:
            raise CCompilerError(f"the compiled C test harness failed (exit {r.returncode}): "
                                 f"{(r.stderr or r.stdout).strip()[:2000]}")
        got = np.fromfile(fout, dtype=np.int32).astype(np.int64)
    if got.size != ref.size:
        raise CCompilerError(f"the C test harness wrote {got.size} logits, expected {ref.size}")
    got = got.reshape(ref.shape)
    stats = json.loads(r.stdout)
    diff = got != ref
    c_over = {k: int(stats[k]) for k in OVERFLOW_KINDS}
    mism = int(diff.sum())
    res = {"verified": bool(mism == 0 and c_over == eng_over and stats["encode_mismatches"] == 0
                            and stats["sizeof_state"] == _state_bytes(net)),
           "mismatches": mism, "compared": int(diff.size),
           "samples_with_mismatch": int(diff.reshape(B, -1).any(1).sum()),
           "max_abs_diff": int(np.abs(got - ref).max()) if mism else 0,
           "encode_mismatches": int(stats["encode_mismatches"]),
           "overflows": c_over, "overflows_engine": eng_over,
           "c_us_per_token": 1e6 * (stats["cpu_seconds"] if stats["cpu_seconds"] > 0 else stats["seconds"])
           / max(int(stats["timed_tokens"]), 1),
           "c_wall_us_per_token": 1e6 * stats["seconds"] / max(int(stats["timed_tokens"]), 1),
           "c_timed_tokens": int(stats["timed_tokens"]), "sizeof_state": int(stats["sizeof_state"]),
           "host_text_bytes": b["host_text_bytes"], "host_rodata_bytes": b["host_rodata_bytes"],
           "compiler": cc, "cflags": " ".join(CFLAGS), "n": int(B), "length": int(L)}
    return res


# ---- range-specialized layer code ---------------------------------------------------------------
# The layers above are the general form (int64 everywhere, a shift function that branches on
# the shift's sign, a fit function per value). When the value ranges allow, the generator
# emits cheaper code that computes the same integers: each intermediate's bound is derived
# from the tensors (exact Python integers) and the ranges of the layer's inputs; an
# expression whose bound fits int32 is computed in int32; a round-half-up shift by a positive
# shift is an offset, an unsigned shift and a subtraction (no branch; C99 defines unsigned
# shifts and conversions of in-range values); a fit that cannot fail is left out; the
# overflow counts of a layer are summed in a local and added once. Anything outside these
# conditions keeps the general form.
I32 = (1 << 31) - 1


class _R:
    """A closed integer range [lo, hi]."""
    __slots__ = ("lo", "hi")

    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = int(lo), int(hi)

    @property
    def mag(self) -> int:
        return max(abs(self.lo), abs(self.hi))

    def fits32(self) -> bool:
        return -I32 - 1 <= self.lo and self.hi <= I32


def _mag(a) -> int:
    a = np.asarray(a, dtype=object)
    return int(max(abs(int(a.min())), abs(int(a.max())))) if a.size else 0


def _rsr_range(r: _R, s: np.ndarray) -> _R:
    """The range of rsr(x, s) for x in r and s between s.min() and s.max() (rsr is monotone in
    x, and its magnitude in s, so the extremes are at the ends)."""
    def f(x: int, sh: int) -> int:
        return x * (1 << -sh) if sh <= 0 else (x + (1 << (sh - 1))) >> sh
    ends = (int(s.min()), int(s.max()))
    return _R(min(f(r.lo, e) for e in ends), max(f(r.hi, e) for e in ends))


def _rsr_expr(x: str, r: _R, s: np.ndarray, sh: str, p: str) -> tuple[str, str]:
    """(C expression of rsr(x, s), its type) for x of range r; sh: the C expression of the
    shift (a literal or a per-channel variable)."""
    smin, smax = int(s.min()), int(s.max())
    lit = smin == smax
    if smin >= 1 and smax <= 30 and r.mag <= (1 << 30) and r.fits32():
        if lit:
            off, k = (1 << 30) + (1 << (smin - 1)), 1 << (30 - smin)
            return f"((int32_t)(((uint32_t)({x}) + {off}u) >> {smin}) - {k})", "int32_t"
        return (f"((int32_t)(((uint32_t)({x}) + (UINT32_C(1) << 30) + (UINT32_C(1) << ({sh} - 1))) >> {sh}) "
                f"- ((int32_t)1 << (30 - {sh})))"), "int32_t"
    if smin >= 1 and smax <= 61 and r.mag <= (1 << 60):
        if lit:
            off, k = (1 << 61) + (1 << (smin - 1)), 1 << (61 - smin)
            return f"((int64_t)(((uint64_t)({x}) + UINT64_C({off})) >> {smin}) - INT64_C({k}))", "int64_t"
        return (f"((int64_t)(((uint64_t)({x}) + (UINT64_C(1) << 61) + (UINT64_C(1) << ({sh} - 1))) >> {sh}) "
                f"- ((int64_t)1 << (61 - {sh})))"), "int64_t"
    return f"{p}_rsr((int64_t)({x}), {sh})", "int64_t"


def _fit_code(v: str, r: _R, bits: int, mode: str, ctr: str, p: str, over_fn, kind: str, indent: str) -> tuple[str, _R]:
    """Statements fitting variable v (range r) into `bits` (saturate: counted in local ctr;
    wrap: the general fit), and the range after."""
    lo, hi = int_range(bits)
    if lo <= r.lo and r.hi <= hi:
        return "", r
    if mode == "wrap":
        return f"{indent}{v} = {p}_fit({v}, {_range_args(bits, mode)}, {over_fn(kind)});\n", _R(lo, hi)
    if r.fits32() and _BRANCHLESS[0]:
        span = hi - lo
        return (f"{indent}{ctr} += (uint32_t)((uint32_t){v} - (uint32_t){_lit(lo)}) > {span}u;\n"
                f"{indent}{v} = {v} < {_lit(lo)} ? {_lit(lo)} : {v};\n{indent}{v} = {v} > {_lit(hi)} ? {_lit(hi)} : {v};\n",
                _R(max(r.lo, lo), min(r.hi, hi)))
    if r.fits32():
        span = hi - lo
        return (f"{indent}if ((uint32_t)((uint32_t){v} - (uint32_t){_lit(lo)}) > {span}u) {{\n"
                f"{indent}    ++{ctr};\n{indent}    {v} = {v} < {_lit(lo)} ? {_lit(lo)} : {_lit(hi)};\n{indent}}}\n",
                _R(max(r.lo, lo), min(r.hi, hi)))
    return (f"{indent}if ({v} < {_lit(lo)} || {v} > {_lit(hi)}) {{\n{indent}    ++{ctr};\n"
            f"{indent}    {v} = {v} < {_lit(lo)} ? {_lit(lo)} : {_lit(hi)};\n{indent}}}\n",
            _R(max(r.lo, lo), min(r.hi, hi)))


_BRANCHLESS = [False]      # set by generate(branchless=...): the vectorizing host form


def _ty(r: _R) -> str:
    return "int32_t" if r.fits32() else "int64_t"


def _dense_fast(g: _Gen, p: str, d: DenseInt, rin: _R, over) -> tuple[str, _R] | None:
    """The dense layer for inputs in rin, range-specialized; None: use the general form."""
    C, K = d.W.shape
    Wabs = np.abs(d.W.astype(object)).sum(1)
    acc_r = _R(-int(Wabs.max()) * rin.mag, int(Wabs.max()) * rin.mag)
    if acc_r.mag >= 1 << 62:
        return None
    # host form: non-negative inputs below 2^30 as two 15-bit halves, so that the sums are two
    # int16 x int16 -> int32 dot products (acc = 2^15 sum(W hi) + sum(W lo), exactly)
    split = (_BRANCHLESS[0] and rin.lo >= 0 and rin.hi < (1 << 30) and _mag(d.W) < (1 << 15)
             and K * _mag(d.W) * ((1 << 15) - 1) <= I32)
    W = g.tensor(f"{d.name}_W", d.W, force_array=True, ctype="int16_t" if split else None)
    gg = g.tensor(f"{d.name}_g", d.g)
    sh = g.tensor(f"{d.name}_shift", d.shift)
    b = g.tensor(f"{d.name}_bias", d.bias)
    at = _ty(acc_r)
    fit_acc, acc_r = _fit_code("acc", acc_r, d.acc_bits, d.acc_mode, "o_acc", p, over, "accumulator", "        ")
    prod_r = _R(-acc_r.mag * _mag(d.g), acc_r.mag * _mag(d.g))
    if prod_r.mag >= 1 << 62:
        return None
    pt = _ty(prod_r)
    r_expr, _ = _rsr_expr("prod", prod_r, np.asarray(d.shift), "sh", p)
    v_r = _rsr_range(prod_r, np.asarray(d.shift))
    v_r = _R(v_r.lo - _mag(d.bias), v_r.hi + _mag(d.bias))
    vt = _ty(v_r)
    fit_out, out_r = _fit_code("v", v_r, d.out_bits, d.out_mode, "o_act", p, over, "activations", "        ")
    if d.relu:
        out_r = _R(max(out_r.lo, 0), max(out_r.hi, 0))
    bias = "" if b("c") == "0" else f" + {b('c')}"
    relu = "        if (v < 0) v = 0;                                  /* ReLU */\n" if d.relu else ""
    used = [c for c in ("o_acc", "o_act") if re.search(rf"\b{c}\b", fit_acc + fit_out)]
    decl = f"    uint32_t {' = 0, '.join(used)} = 0;\n" if used else ""
    counts = "".join(f"    {p}_count({over(k)}, {c});\n" for k, c in (("accumulator", "o_acc"), ("activations", "o_act"))
                     if c in used)
    halves = ""
    if split:
        halves = (f"    int16_t lo[{K}], hi[{K}];\n    for (k = 0; k < {K}; ++k) {{\n"
                  f"        lo[k] = (int16_t)(in[k] & 32767);\n        hi[k] = (int16_t)(in[k] >> 15);   /* in[k] >= 0 */\n"
                  f"    }}\n")
        mac = (f"        {{\n            int32_t sl = 0, sh2 = 0;\n            for (k = 0; k < {K}; ++k) {{\n"
               f"                sl += (int32_t){W('c', 'k')} * lo[k];\n"
               f"                sh2 += (int32_t){W('c', 'k')} * hi[k];\n            }}\n"
               f"            acc = ({at})(({at})sh2 * 32768 + sl);\n        }}\n")
    elif K % 4 == 0 and K >= 8:          # unrolled by 4 (exact: no partial sum leaves `at`)
        terms = " + ".join(f"({at}){W('c', f'k + {j}' if j else 'k')} * in[k{f' + {j}' if j else ''}]"
                           for j in range(4))
        mac = f"        for (k = 0; k < {K}; k += 4)\n            acc += {terms};\n"
    else:
        mac = f"        for (k = 0; k < {K}; ++k)\n            acc += ({at}){W('c', 'k')} * in[k];\n"
    code = f"""/* {d.name}: {K} -> {C}, {d.acc_bits}-bit accumulator ({d.acc_mode}), {d.out_bits}-bit output \
({d.out_mode}){', ReLU' if d.relu else ''}; inputs in [{rin.lo}, {rin.hi}]: {at} sums */
static void {p}_{d.name}({p}_state *s, const int32_t *in, int32_t *out)
{{
    int c, k;
{decl}{halves}    for (c = 0; c < {C}; ++c) {{
        {at} acc = 0;
        {pt} prod;
        {vt} v;
        const int sh = {sh('c')};
{mac}{fit_acc}        prod = ({pt})acc * {gg('c')};
        v = ({vt}){r_expr}{bias};
{fit_out}{relu}        out[c] = (int32_t)v;
        (void)sh;
    }}
{counts}    (void)s;
}}
"""
    return code, out_r


def _s4d_fast(g: _Gen, p: str, s: S4DInt, rin: _R, over) -> tuple[str, _R] | None:
    H, N = s.ar.shape
    if s.state_bits > 32:
        return None
    slo, shi = int_range(s.state_bits)
    X = _R(slo, shi)
    umag = rin.mag
    a_r = _R(-(_mag(s.ar) + _mag(s.ai)) * X.mag, (_mag(s.ar) + _mag(s.ai)) * X.mag)
    b_r = _R(-max(_mag(s.br), _mag(s.bi)) * umag, max(_mag(s.br), _mag(s.bi)) * umag)
    if a_r.mag >= 1 << 60 or b_r.mag >= 1 << 60:
        return None
    sA, sB, sC, sD = (np.asarray(getattr(s, k)).reshape(-1) for k in ("sA", "sB", "sC", "sD"))
    ra, ta = _rsr_expr("pa", a_r, sA, "sa", p)
    rb, tb = _rsr_expr("pb", b_r, sB, "sb", p)
    ra2, _ = _rsr_expr("qa", a_r, sA, "sa", p)
    rb2, _ = _rsr_expr("qb", b_r, sB, "sb", p)
    n_r0 = _rsr_range(a_r, sA)
    n_r1 = _rsr_range(b_r, sB)
    n_r = _R(n_r0.lo + n_r1.lo, n_r0.hi + n_r1.hi)
    nt = _ty(n_r)
    fit_r, _ = _fit_code("nr", n_r, s.state_bits, s.state_mode, "o_st", p, over, "state", "            ")
    fit_i, _ = _fit_code("ni", n_r, s.state_bits, s.state_mode, "o_st", p, over, "state", "            ")
    c_r = _R(-N * (_mag(s.cr) + _mag(s.ci)) * X.mag, N * (_mag(s.cr) + _mag(s.ci)) * X.mag)
    d_r = _R(-_mag(s.dm) * umag, _mag(s.dm) * umag)
    if c_r.mag >= 1 << 60 or d_r.mag >= 1 << 60:
        return None
    ct = _ty(c_r)
    rc, _ = _rsr_expr("yc", c_r, sC, "sc", p)
    rd, _ = _rsr_expr("pd", d_r, sD, "sd", p)
    y_r0, y_r1 = _rsr_range(c_r, sC), _rsr_range(d_r, sD)
    y_r = _R(y_r0.lo + y_r1.lo, y_r0.hi + y_r1.hi)
    yt = _ty(y_r)
    fit_y, out_r = _fit_code("y", y_r, s.out_bits, s.out_mode, "o_act", p, over, "activations", "        ")
    out_r = _R(0, max(out_r.hi, 0))
    # the six coefficients of a state side by side: (ar, ai) and (br, bi, cr, -ci) per (h, n), so
    # that the inner loop walks two arrays, not six (fewer live pointers on a 32-bit core).
    # (-ci is stored, so that y's sum is two multiply-accumulates.) For a vectorizing host
    # compiler each coefficient is its own array (unit-stride loads).
    if _BRANCHLESS[0]:
        T = {k: g.tensor(f"{s.name}_{k}", v, force_array=True)
             for k, v in (("ar", s.ar), ("ai", s.ai), ("br", s.br), ("bi", s.bi), ("cr", s.cr), ("nci", -s.ci))}
        ar, ai, br, bi, cr, ci = (T[k]("h", "n") for k in ("ar", "ai", "br", "bi", "cr", "nci"))
    else:
        TA = g.tensor(f"{s.name}_A", np.stack([s.ar, s.ai], -1), force_array=True)
        TB = g.tensor(f"{s.name}_BCn", np.stack([s.br, s.bi, s.cr, -s.ci], -1), force_array=True)
        ar, ai = TA("h", "n", 0), TA("h", "n", 1)
        br, bi, cr, ci = (TB("h", "n", j) for j in range(4))
    T = {"dm": g.tensor(f"{s.name}_dm", s.dm, force_array=True)}
    S = {k: g.tensor(f"{s.name}_{k}", getattr(s, k).reshape(-1)) for k in ("sA", "sB", "sC", "sD")}
    at = "int32_t" if a_r.fits32() else "int64_t"
    bt = "int32_t" if b_r.fits32() else "int64_t"
    dt = "int32_t" if d_r.fits32() else "int64_t"
    st = _state_type(s)
    used = [c for c in ("o_st", "o_act") if re.search(rf"\b{c}\b", fit_r + fit_i + fit_y)]
    decl = f"    uint32_t {' = 0, '.join(used)} = 0;\n" if used else ""
    counts = "".join(f"    {p}_count({over(k)}, {c});\n" for k, c in (("state", "o_st"), ("activations", "o_act"))
                     if c in used)
    code = f"""/* {s.name}: S4D, H = {H} channels x {N} complex states ({s.state_bits}-bit, {s.state_mode}), \
{s.out_bits}-bit output ({s.out_mode}), ReLU graded spike; inputs in [{rin.lo}, {rin.hi}] */
static void {p}_{s.name}({p}_state *s, const int32_t *u, int32_t *a)
{{
    int h, n;
{decl}    for (h = 0; h < {H}; ++h) {{
        const int32_t uh = u[h];
        const int sa = {S['sA']('h')}, sb = {S['sB']('h')}, sc = {S['sC']('h')}, sd = {S['sD']('h')};
        {st} *xrp = s->{s.name}_xr[h], *xip = s->{s.name}_xi[h];
        {ct} yc = 0;
        {dt} pd;
        {yt} y;
        for (n = 0; n < {N}; ++n) {{
            const {at} xr = xrp[n], xi = xip[n];
            const {at} pa = ({at}){ar} * xr + ({at}){ai} * -xi;
            const {at} qa = ({at}){ar} * xi + ({at}){ai} * xr;
            const {bt} pb = ({bt}){br} * uh, qb = ({bt}){bi} * uh;
            {nt} nr = ({nt}){ra} + ({nt}){rb};
            {nt} ni = ({nt}){ra2} + ({nt}){rb2};
{fit_r}{fit_i}            xrp[n] = ({st})nr;
            xip[n] = ({st})ni;
            yc += ({ct}){cr} * nr + ({ct}){ci} * ni;
        }}
        pd = ({dt}){T['dm']('h')} * uh;
        y = ({yt}){rc} + ({yt}){rd};
{fit_y}        a[h] = (int32_t)(y > 0 ? y : 0);
        (void)sa; (void)sb; (void)sc; (void)sd;
    }}
{counts}}}
"""
    return code, out_r
