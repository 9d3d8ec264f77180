"""Range-specialized layer code.

The general form (``layers.py``) computes in int64 everywhere, with a shift function that
branches on the shift's sign and a fit function per value. When the value ranges allow, the generator
emits cheaper code that computes the same integers: each intermediate's bound is derived
from the tensors (exact Python integers) and the ranges of the layer's inputs; an
expression whose bound fits int32 is computed in int32; a round-half-up shift by a positive
shift is an offset, an unsigned shift and a subtraction (no branch; C99 defines unsigned
shifts and conversions of in-range values); a fit that cannot fail is left out; the
overflow counts of a layer are summed in a local and added once. Anything outside these
conditions keeps the general form.
"""
from __future__ import annotations

import re

import numpy as np

from ....quant.fixedpoint import int_range
from ....quant.intnet import DenseInt, S4DInt
from .emit import Arrays, lit, range_args
from .layers import state_type

I32 = (1 << 31) - 1


class Range:
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


def _rsr_range(r: Range, s: np.ndarray) -> Range:
    """The range of rsr(x, s) for x in r and s between s.min() and s.max() (rsr is monotone in
    x, and its magnitude in s, so the extremes are at the ends)."""
    def f(x: int, sh: int) -> int:
        return x * (1 << -sh) if sh <= 0 else (x + (1 << (sh - 1))) >> sh
    ends = (int(s.min()), int(s.max()))
    return Range(min(f(r.lo, e) for e in ends), max(f(r.hi, e) for e in ends))


def _rsr_expr(x: str, r: Range, s: np.ndarray, sh: str, p: str) -> tuple[str, str]:
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


def _fit_code(v: str, r: Range, bits: int, mode: str, ctr: str, p: str, over_fn, kind: str, indent: str,
              branchless: bool) -> tuple[str, Range]:
    """Statements fitting variable v (range r) into `bits` (saturate: counted in local ctr;
    wrap: the general fit), and the range after; branchless: selects and an add instead of a
    branch (the vectorizing host form)."""
    lo, hi = int_range(bits)
    if lo <= r.lo and r.hi <= hi:
        return "", r
    if mode == "wrap":
        return f"{indent}{v} = {p}_fit({v}, {range_args(bits, mode)}, {over_fn(kind)});\n", Range(lo, hi)
    if r.fits32() and branchless:
        span = hi - lo
        return (f"{indent}{ctr} += (uint32_t)((uint32_t){v} - (uint32_t){lit(lo)}) > {span}u;\n"
                f"{indent}{v} = {v} < {lit(lo)} ? {lit(lo)} : {v};\n{indent}{v} = {v} > {lit(hi)} ? {lit(hi)} : {v};\n",
                Range(max(r.lo, lo), min(r.hi, hi)))
    if r.fits32():
        span = hi - lo
        return (f"{indent}if ((uint32_t)((uint32_t){v} - (uint32_t){lit(lo)}) > {span}u) {{\n"
                f"{indent}    ++{ctr};\n{indent}    {v} = {v} < {lit(lo)} ? {lit(lo)} : {lit(hi)};\n{indent}}}\n",
                Range(max(r.lo, lo), min(r.hi, hi)))
    return (f"{indent}if ({v} < {lit(lo)} || {v} > {lit(hi)}) {{\n{indent}    ++{ctr};\n"
            f"{indent}    {v} = {v} < {lit(lo)} ? {lit(lo)} : {lit(hi)};\n{indent}}}\n",
            Range(max(r.lo, lo), min(r.hi, hi)))


def _ty(r: Range) -> str:
    return "int32_t" if r.fits32() else "int64_t"


def dense_fast(g: Arrays, p: str, d: DenseInt, rin: Range, over, branchless: bool,
               rres: Range | None = None) -> tuple[str, Range] | None:
    """The dense layer for inputs in rin, range-specialized (and its output range); None: use
    the general form. rres: the range of the block input a residual connection adds (which
    `out` holds on entry)."""
    C, K = d.W.shape
    Wabs = np.abs(d.W.astype(object)).sum(1)
    acc_r = Range(-int(Wabs.max()) * rin.mag, int(Wabs.max()) * rin.mag)
    if acc_r.mag >= 1 << 62:
        return None
    # host form: non-negative inputs below 2^30 as two 15-bit halves, so that the sums are two
    # int16 x int16 -> int32 dot products (acc = 2^15 sum(W hi) + sum(W lo), exactly)
    split = (branchless and rin.lo >= 0 and rin.hi < (1 << 30) and _mag(d.W) < (1 << 15)
             and K * _mag(d.W) * ((1 << 15) - 1) <= I32)
    W = g.tensor(f"{d.name}_W", d.W, force_array=True, ctype="int16_t" if split else None)
    gg = g.tensor(f"{d.name}_g", d.g)
    sh = g.tensor(f"{d.name}_shift", d.shift)
    b = g.tensor(f"{d.name}_bias", d.bias)
    at = _ty(acc_r)
    fit_acc, acc_r = _fit_code("acc", acc_r, d.acc_bits, d.acc_mode, "o_acc", p, over, "accumulator", "        ", branchless)
    prod_r = Range(-acc_r.mag * _mag(d.g), acc_r.mag * _mag(d.g))
    if prod_r.mag >= 1 << 62:
        return None
    pt = _ty(prod_r)
    r_expr, _ = _rsr_expr("prod", prod_r, np.asarray(d.shift), "sh", p)
    v_r = _rsr_range(prod_r, np.asarray(d.shift))
    v_r = Range(v_r.lo - _mag(d.bias), v_r.hi + _mag(d.bias))
    vt = _ty(v_r)
    fit_out, out_r = _fit_code("v", v_r, d.out_bits, d.out_mode, "o_act", p, over, "activations", "        ", branchless)
    if d.relu:
        out_r = Range(max(out_r.lo, 0), max(out_r.hi, 0))
    bias = "" if b("c") == "0" else f" + {b('c')}"
    relu = "        if (v < 0) v = 0;                                  /* ReLU */\n" if d.relu else ""
    res_in, res_tail = "", ""
    if d.res_w is not None:
        if rres is None:
            return None
        rw, rs = g.tensor(f"{d.name}_res_w", d.res_w), g.tensor(f"{d.name}_res_shift", d.res_shift)
        rp = Range(-rres.mag * _mag(d.res_w), rres.mag * _mag(d.res_w))
        if rp.mag >= 1 << 62:
            return None
        r_term, _ = _rsr_expr(f"(int64_t){rw('c')} * xres", rp, np.asarray(d.res_shift), rs("c"), p)
        rr = _rsr_range(rp, np.asarray(d.res_shift))
        sum_r = Range(out_r.lo + rr.lo, out_r.hi + rr.hi)
        if sum_r.mag >= 1 << 62:
            return None
        fit_res, out_r = _fit_code("r", sum_r, d.out_bits, d.out_mode, "o_act", p, over, "activations",
                                   "        ", branchless)
        res_in = "        const int32_t xres = out[c];                       /* the block input */\n"
        res_tail = (f"        {{\n            {_ty(sum_r)} r = ({_ty(sum_r)})v + ({_ty(sum_r)}){r_term};   /* residual */\n"
                    + fit_res.replace("        ", "            ") + "            v = r;\n        }\n")
    used = [c for c in ("o_acc", "o_act") if re.search(rf"\b{c}\b", fit_acc + fit_out + res_tail)]
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
({d.out_mode}){', ReLU' if d.relu else ''}{', plus the residual (out holds the block input)' if res_in else ''}; \
inputs in [{rin.lo}, {rin.hi}]: {at} sums */
static void {p}_{d.name}({p}_state *s, const int32_t *in, int32_t *out)
{{
    int c, k;
{decl}{halves}    for (c = 0; c < {C}; ++c) {{
        {at} acc = 0;
        {pt} prod;
        {vt} v;
        const int sh = {sh('c')};
{res_in}{mac}{fit_acc}        prod = ({pt})acc * {gg('c')};
        v = ({vt}){r_expr}{bias};
{fit_out}{relu}{res_tail}        out[c] = (int32_t)v;
        (void)sh;
    }}
{counts}    (void)s;
}}
"""
    return code, out_r


def s4d_fast(g: Arrays, p: str, s: S4DInt, rin: Range, over, branchless: bool) -> tuple[str, Range] | None:
    """The S4D layer for inputs in rin, range-specialized (and its output range); None: use
    the general form."""
    H, N = s.ar.shape
    if s.state_bits > 32:
        return None
    slo, shi = int_range(s.state_bits)
    X = Range(slo, shi)
    umag = rin.mag
    a_r = Range(-(_mag(s.ar) + _mag(s.ai)) * X.mag, (_mag(s.ar) + _mag(s.ai)) * X.mag)
    b_r = Range(-max(_mag(s.br), _mag(s.bi)) * umag, max(_mag(s.br), _mag(s.bi)) * umag)
    if a_r.mag >= 1 << 60 or b_r.mag >= 1 << 60:
        return None
    sA, sB, sC, sD = (np.asarray(getattr(s, k)).reshape(-1) for k in ("sA", "sB", "sC", "sD"))
    ra, ta = _rsr_expr("pa", a_r, sA, "sa", p)
    rb, tb = _rsr_expr("pb", b_r, sB, "sb", p)
    ra2, _ = _rsr_expr("qa", a_r, sA, "sa", p)
    rb2, _ = _rsr_expr("qb", b_r, sB, "sb", p)
    n_r0 = _rsr_range(a_r, sA)
    n_r1 = _rsr_range(b_r, sB)
    n_r = Range(n_r0.lo + n_r1.lo, n_r0.hi + n_r1.hi)
    nt = _ty(n_r)
    fit_r, _ = _fit_code("nr", n_r, s.state_bits, s.state_mode, "o_st", p, over, "state", "            ", branchless)
    fit_i, _ = _fit_code("ni", n_r, s.state_bits, s.state_mode, "o_st", p, over, "state", "            ", branchless)
    c_r = Range(-N * (_mag(s.cr) + _mag(s.ci)) * X.mag, N * (_mag(s.cr) + _mag(s.ci)) * X.mag)
    d_r = Range(-_mag(s.dm) * umag, _mag(s.dm) * umag)
    if c_r.mag >= 1 << 60 or d_r.mag >= 1 << 60:
        return None
    ct = _ty(c_r)
    rc, _ = _rsr_expr("yc", c_r, sC, "sc", p)
    rd, _ = _rsr_expr("pd", d_r, sD, "sd", p)
    y_r0, y_r1 = _rsr_range(c_r, sC), _rsr_range(d_r, sD)
    y_r = Range(y_r0.lo + y_r1.lo, y_r0.hi + y_r1.hi)
    yt = _ty(y_r)
    fit_y, out_r = _fit_code("y", y_r, s.out_bits, s.out_mode, "o_act", p, over, "activations", "        ", branchless)
    out_r = Range(0, max(out_r.hi, 0))
    # the six coefficients of a state side by side: (ar, ai) and (br, bi, cr, -ci) per (h, n), so
    # that the inner loop walks two arrays, not six (fewer live pointers on a 32-bit core).
    # (-ci is stored, so that y's sum is two multiply-accumulates.) For a vectorizing host
    # compiler each coefficient is its own array (unit-stride loads).
    if branchless:
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
    st = state_type(s)
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
