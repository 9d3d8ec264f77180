"""The C files of an integer network: ``generate(net, name)`` writes the header (sizes,
exponents, the state struct, the API) and the source (helpers, const arrays, one function per
layer, the step) from the layer code of ``layers.py`` / ``ranges.py`` and, for the integer
engine's backend, ``backend.py``."""
from __future__ import annotations

from ....errors import ConfigError
from ....quant.fixedpoint import int_range
from ....quant.intnet import IntNet
from .backend import engine_section
from .emit import MAX_SHIFT, OVERFLOW_KINDS, Arrays, lit
from .layers import dense_general, export_counter, s4d_general, state_type
from .ranges import Range, dense_fast, s4d_fast


def check_net(net: IntNet) -> None:
    """A ConfigError when `net` does not fit the generated code (int32 values, int64 shifts)."""
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
        [(f"{d.name}.res_shift", d.res_shift) for d in dense if d.res_shift is not None] + \
        [(f"{s.name}.{k}", getattr(s, k)) for s, _ in net.layers for k in ("sA", "sB", "sC", "sD")]
    for where, a in shifts:
        if a.size and (int(a.min()) < -MAX_SHIFT or int(a.max()) > MAX_SHIFT):
            raise ConfigError(f"{where}: a shift of {int(a.min())}..{int(a.max())} bits is outside "
                              f"+-{MAX_SHIFT}; the exponents of the spec are too far apart for int64")


def state_bytes(net: IntNet) -> int:
    """sizeof(<name>_state) of the export: what the C harness reports back."""
    n = 4 * (len(OVERFLOW_KINDS) + 1)                         # counters and token count first
    for s, _ in net.layers:
        n += 2 * s.d_model * s.n * {"int8_t": 1, "int16_t": 2, "int32_t": 4}[state_type(s)]
    if net.readout == "mean":                                  # int64_t total[d_out] last
        return (n + 7) // 8 * 8 + 8 * net.d_output             # struct alignment: int64_t
    return (n + 3) // 4 * 4                                    # struct alignment: uint32_t


def generate(net: IntNet, name: str, source: str = "", *, engine_pops: list | None = None,
             specialize: bool = True, branchless: bool | None = None) -> dict:
    """The C code of `net`: {"h": text, "c": text, "data_bytes", "state_bytes", "scratch_bytes"}.

    engine_pops: the populations of an integer engine (``Engine.pops``) to generate, in
    addition, the batched host-side entry point of the engine's C backend (see
    :func:`.backend.engine_section`; ``targets/fixed/cengine.py``); the result then has an "engine"
    entry. Without it the export is generated (and unchanged by this option).
    specialize: emit the range-specialized layer code where it applies (the same integers,
    fewer and narrower operations; see ``ranges.py``); False: the general
    form everywhere. branchless: the form a vectorizing host compiler wants (int32 values
    saturated with selects and counted with adds; each S4D coefficient its own array) instead
    of the one an in-order 32-bit core wants (a rarely taken branch per fit; the coefficients
    of a state side by side, two arrays instead of six); default: branchless for the engine
    backend (engine_pops), not for the export. Both compute the same integers."""
    check_net(net)
    branchless = engine_pops is not None if branchless is None else bool(branchless)
    p, P = name, name.upper()
    g = Arrays(p)
    widths = [net.d_model, net.d_output] + [m.W.shape[0] for _, m in net.layers] + \
             [s.d_model for s, _ in net.layers]
    W = max(widths)
    slots: list[tuple[str, str]] = []          # engine: (tensor, overflow kind) per counter

    def counters(where: str):
        if engine_pops is None:
            return export_counter

        def over(kind: str) -> str:
            if (where, kind) not in slots:
                slots.append((where, kind))
            return f"&s->engine_overflow[{slots.index((where, kind))}]"
        return over
    in_lo, in_hi = int_range(min(net.in_bits, 32))
    rng = Range(in_lo, in_hi)

    def dense(d, rres=None):
        nonlocal rng
        fast = dense_fast(g, p, d, rng, counters(d.name), branchless, rres) if specialize else None
        if fast is None:
            lo, hi = int_range(d.out_bits)
            rng = Range(0 if d.relu and (d.res_w is None or rres is not None and rres.lo >= 0) else lo, hi)
            return dense_general(g, p, d, counters(d.name))
        code, rng = fast
        return code

    def s4d(s):
        nonlocal rng
        fast = s4d_fast(g, p, s, rng, counters(s.name), branchless) if specialize else None
        if fast is None:
            rng = Range(0, int_range(s.out_bits)[1])
            return s4d_general(g, p, s, counters(s.name))
        code, rng = fast
        return code
    fns = [dense(net.encoder)]
    for s, m in net.layers:
        block_in = rng
        fns.append(s4d(s))
        fns.append(dense(m, block_in))
    fns.append(dense(net.decoder))
    engine = engine_section(g, p, net, engine_pops, slots, W) if engine_pops is not None else None
    in_lo, in_hi = int_range(net.in_bits)
    from .... import __version__
    layers_desc = ", ".join(f"{s.name} (H={s.d_model}, N={s.n})" for s, _ in net.layers)
    state_fields = "\n".join(
        f"    {state_type(s)} {s.name}_xr[{s.d_model}][{s.n}];   /* S4D state, real part ({s.state_bits} bit) */\n"
        f"    {state_type(s)} {s.name}_xi[{s.d_model}][{s.n}];   /* imaginary part */"
        for s, _ in net.layers)
    fit_counter, fit_count = "uint32_t", "    if (*over != UINT32_MAX)\n        ++*over;"
    mean = net.readout == "mean" and engine is None    # the engine backend's host keeps the sum
    if mean:
        state_fields += (f"\n    int64_t total[{net.d_output}];   /* mean readout: the sum of the per-token "
                         f"logits since {p}_init */")
    if engine is not None:
        state_fields += (f"\n    uint64_t engine_overflow[{len(slots)}];   /* integer engine backend: "
                         f"overflows per tensor and kind */")
        fit_counter, fit_count = "uint64_t", "    ++*over;"
    origin = f" from {source}" if source else ""
    readout_doc = f"logits[j] * 2^{P}_OUTPUT_EXP is the model's output after this token"
    mean_api = mean_helper_api = accumulate = mean_fns = mean_helper = ""
    if mean:
        readout_doc = (f"logits[j] * 2^{P}_OUTPUT_EXP is the decoder's output at this token. Mean readout:\n"
                       f" * the state sums them (s.total); the model's output after t tokens is their mean,\n"
                       f" * s.total[j] / t * 2^{P}_OUTPUT_EXP, its class {p}_predict(&s) (the sum's argmax: no\n"
                       f" * division on the device)")
        mean_api = (f"\n/* Mean readout: the predicted class after the tokens since {p}_init, the index of the largest\n"
                    f" * s->total[j] (the first one on ties). */\nint {p}_predict(const {p}_state *s);\n")
        mean_helper_api = (f"\n/* Mean readout: y = s->total / s->tokens * 2^{P}_OUTPUT_EXP, the prediction (0 before a token). */\n"
                           f"void {p}_decode_mean(const {p}_state *s, float *y);")
        accumulate = (f"\n    for (i = 0; i < {P}_D_OUTPUT; ++i)\n"
                      f"        s->total[i] += logits[i];")
        mean_fns = f"""
int {p}_predict(const {p}_state *s)
{{
    int j, best = 0;
    for (j = 1; j < {P}_D_OUTPUT; ++j)
        if (s->total[j] > s->total[best])
            best = j;
    return best;
}}
"""
        mean_helper = f"""

void {p}_decode_mean(const {p}_state *s, float *y)
{{
    int j;
    for (j = 0; j < {P}_D_OUTPUT; ++j)
        y[j] = s->tokens ? (float)((double)s->total[j] / (double)s->tokens * {2.0 ** net.out_exp!r}) : 0.0f;
}}"""
    h = f"""/* {name}.h: S4D network{origin}, quantized with spec {net.spec_name!r}, as portable C99.
 * Generated by edgessm {__version__} (edgessm export-c); do not edit.
 *
 * Integer only: inputs and logits are fixed-point mantissas, value = mantissa * 2^exponent.
 *   {p}_state s;  {p}_init(&s);   one state per stream (no malloc, no pointers)
 *   {p}_step(&s, x_in, logits);   one token: {P}_D_INPUT mantissas in, {P}_D_OUTPUT out
 *   x_in[i]   = round_half_up(x[i] * 2^-{P}_INPUT_EXP), saturated to {P}_INPUT_BITS bits
 *   {readout_doc}
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
#define {P}_INPUT_MIN {lit(in_lo)}
#define {P}_INPUT_MAX {lit(in_hi)}
#define {P}_OUTPUT_EXP ({net.out_exp})      /* logit value = mantissa * 2^{P}_OUTPUT_EXP */
#define {P}_OUTPUT_BITS {net.decoder.out_bits}
/* 1: mean readout, the prediction is the mean of the per-token logits (s.total); 0: the last's */
#define {P}_READOUT_MEAN {int(mean)}

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
{mean_api}
/* ---- optional float helpers for the host (not needed on the device) --------------------------
 * Compiled only with -D{P}_FLOAT_HELPERS or -DEDGESSM_FLOAT_HELPERS. They use double
 * arithmetic (exact for the power-of-two scales, as the Python encoder). */
#if defined({P}_FLOAT_HELPERS) || defined(EDGESSM_FLOAT_HELPERS)
/* x[{P}_D_INPUT] -> x_in: round_half_up(x * 2^-{P}_INPUT_EXP), saturated to {P}_INPUT_BITS bits;
 * values that did not fit (and NaN, encoded as 0) are counted in s->overflow_input. */
void {p}_encode({p}_state *s, const float *x, int32_t *x_in);
/* logits[{P}_D_OUTPUT] mantissas -> y = logits * 2^{P}_OUTPUT_EXP. */
void {p}_decode(const int32_t *logits, float *y);{mean_helper_api}
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
 *          [residual: v = fit(v + rsr(res_w h, res_shift)), h the block input]
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
{body}{accumulate}
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
{mean_fns}
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
}}{mean_helper}
#endif
"""
    scratch = 4 * (2 * W + net.d_input)
    res = {"h": h, "c": c, "data_bytes": g.data_bytes, "const_arrays": g.n_arrays,
           "state_bytes": state_bytes(net), "scratch_bytes": scratch}
    if engine is not None:
        res["c"] = c + engine.pop("c")
        res["engine"] = engine
    return res

