"""The general form of the layer functions (int64 everywhere, the ``rsr`` and ``fit`` helper
functions), used wherever the range-specialized form (``ranges.py``) does not apply."""
from __future__ import annotations

from ....quant.intnet import DenseInt, S4DInt
from .emit import Arrays, range_args


def export_counter(kind: str) -> str:
    """The overflow counter of the export: one per kind in the state struct."""
    return f"&s->overflow_{kind}"


def dense_general(g: Arrays, p: str, d: DenseInt, over=export_counter) -> str:
    """A dense layer's function; over(kind) is the C pointer its overflows of `kind` count into."""
    C, K = d.W.shape
    W = g.tensor(f"{d.name}_W", d.W, force_array=True)
    gg = g.tensor(f"{d.name}_g", d.g)
    sh = g.tensor(f"{d.name}_shift", d.shift)
    b = g.tensor(f"{d.name}_bias", d.bias)
    bias = "" if b("c") == "0" else f" + {b('c')}"
    relu = "\n        if (v < 0) v = 0;                                  /* ReLU */" if d.relu else ""
    res_in, res = "", ""
    if d.res_w is not None:
        rw, rs = g.tensor(f"{d.name}_res_w", d.res_w), g.tensor(f"{d.name}_res_shift", d.res_shift)
        res_in = "\n        const int64_t xres = out[c];                       /* the block input */"
        res = (f"\n        v = {p}_fit(v + {p}_rsr((int64_t){rw('c')} * xres, {rs('c')}), "
               f"{range_args(d.out_bits, d.out_mode)}, {over('activations')});   /* residual */")
    return f"""/* {d.name}: {K} -> {C}, {d.acc_bits}-bit accumulator ({d.acc_mode}), {d.out_bits}-bit output \
({d.out_mode}){', ReLU' if d.relu else ''}{', plus the residual (out holds the block input)' if res else ''} */
static void {p}_{d.name}({p}_state *s, const int32_t *in, int32_t *out)
{{
    int c, k;
    for (c = 0; c < {C}; ++c) {{
        int64_t acc = 0, v;{res_in}
        for (k = 0; k < {K}; ++k)
            acc += (int64_t){W('c', 'k')} * in[k];
        acc = {p}_fit(acc, {range_args(d.acc_bits, d.acc_mode)}, {over('accumulator')});
        v = {p}_rsr(acc * {gg('c')}, {sh('c')}){bias};
        v = {p}_fit(v, {range_args(d.out_bits, d.out_mode)}, {over('activations')});{relu}{res}
        out[c] = (int32_t)v;
    }}
}}
"""


def s4d_general(g: Arrays, p: str, s: S4DInt, over=export_counter) -> str:
    H, N = s.ar.shape
    T = {k: g.tensor(f"{s.name}_{k}", getattr(s, k), force_array=k in ("ar", "ai", "br", "bi", "cr", "ci"))
         for k in ("ar", "ai", "br", "bi", "cr", "ci", "dm")}
    S = {k: g.tensor(f"{s.name}_{k}", getattr(s, k).reshape(-1)) for k in ("sA", "sB", "sC", "sD")}
    st = range_args(s.state_bits, s.state_mode)
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
            s->{s.name}_xr[h][n] = ({state_type(s)})nr;
            s->{s.name}_xi[h][n] = ({state_type(s)})ni;
            yc += (int64_t){cr} * nr - (int64_t){ci} * ni;
        }}
        y = {p}_rsr(yc, {S['sC']('h')}) + {p}_rsr((int64_t){T['dm']('h')} * uh, {S['sD']('h')});
        y = {p}_fit(y, {range_args(s.out_bits, s.out_mode)}, {over('activations')});
        a[h] = (int32_t)(y > 0 ? y : 0);
    }}
}}
"""


def state_type(s: S4DInt) -> str:
    return "int8_t" if s.state_bits <= 8 else "int16_t" if s.state_bits <= 16 else "int32_t"

