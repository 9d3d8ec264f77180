"""The integer engine's C backend (host side; ``targets/fixed/cengine.py``): the batched entry
point ``<name>_engine_run`` appended to the export's code, which calls the export's layer
functions and counts what :class:`~edgessm.targets.fixed.engine.Engine` counts."""
from __future__ import annotations

import numpy as np

from ....errors import ConfigError
from ....quant.intnet import IntNet
from .emit import Arrays
from .layers import state_type


def _send_code(g: Arrays, j: int, pop: dict, buf: str, off: int, keep: bool) -> str:
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


def engine_section(g: Arrays, p: str, net: IntNet, pops: list, slots: list, W: int) -> dict:
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
        H, N, t = s.d_model, s.n, state_type(s)
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

