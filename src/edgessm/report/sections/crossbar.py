"""The crossbar deployment (the IMSSA study's kind of hardware), from the compiled program of
the crossbar model, device instance 0: which layer sits on which array and how much of it is
used (tiling), the programmed conductances of one S4D array and one linear array (heat maps),
the programming error of every device (programmed - target conductance), and the ADC / DAC /
array / digital energy split of the cost model; beside them, the published IMSSA accuracies."""
from __future__ import annotations

import copy

import numpy as np
import torch

from .. import page, plots, published
from ..context import figure
from ..stats import ci_text, wilson
from .loihi2 import energy_rows

KEY, TITLE = "crossbar", "Crossbar: array tiling, conductances, programming error, energy split"


def tiling(prog) -> list[dict]:
    """One row per layer (stage) in network order: its arrays (a contiguous range of array
    indices, in the order the program places them) and their cell utilization."""
    cfg = prog.config
    cells = cfg.array_rows * cfg.signed_cols
    rows, first = [], 0
    for name in prog.order():
        if name not in prog.stages:         # an S4D layer in the digital periphery (no arrays)
            rows.append({"layer": name, "kind": "digital", "first_array": first, "arrays": 0,
                         "array_indices": [], "rows_used": 0, "cols_used": 0, "utilization": 0.0,
                         "array_utilization": [], "nonzero_weights": 0, "row_tiles": 0,
                         "channels_per_array": None})
            continue
        st = prog.stages[name]
        per = []
        for a in range(st.arrays):
            ri, co = st.in_idx[a], st.out_idx[a]
            if st.kind == "s4d":        # the cells of one channel's block: same channel in and out
                k = st.n_in // prog.model.config.d_model
                used = ((ri >= 0).unsqueeze(1) & (co >= 0).unsqueeze(0)
                        & ((ri // k).unsqueeze(1) == (co // k).unsqueeze(0))).sum()
            else:
                used = (ri >= 0).sum() * (co >= 0).sum()
            per.append(int(used) / cells)
        rows.append({"layer": name, "kind": st.kind, "first_array": first, "arrays": st.arrays,
                     "array_indices": list(range(first, first + st.arrays)), "rows_used": st.rows_used,
                     "cols_used": st.cols_used, "utilization": st.mapped / (st.arrays * cells),
                     "array_utilization": per, "nonzero_weights": st.nonzero,
                     "row_tiles": getattr(st, "row_tiles", 1),
                     "channels_per_array": getattr(st, "channels_per_array", None)})
        first += st.arrays
    return rows


def physical(gp: torch.Tensor, gm: torch.Tensor) -> np.ndarray:
    """(R, Cs) G+ and G- of one array -> its (R, 2 Cs) physical layout in uS (pairs of columns)."""
    out = torch.stack([gp, gm], -1).reshape(gp.shape[0], -1)
    return (out.double() * 1e6).numpy()


def targets_us(stage, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """The target conductances (uS) of a stage: what Stage.program writes with ideal devices."""
    ideal = copy.copy(stage)
    ideal.program(cfg.replace(noise=0), torch.Generator().manual_seed(0))
    return ideal.g_plus_s.double() * 1e6, ideal.g_minus_s.double() * 1e6


def programming(prog) -> dict:
    """Programmed - target conductance of every device of every array, as a histogram, with the
    conductance ranges; and the heat maps of the first S4D array and the first mixing array."""
    cfg = prog.config
    errs, prog_all, tgt_all = [], [], []
    for name in [n for n in prog.order() if n in prog.stages]:
        st = prog.stages[name]
        tp, tm = targets_us(st, cfg)
        gp, gm = st.g_plus_s.double() * 1e6, st.g_minus_s.double() * 1e6
        errs += [(gp - tp).flatten(), (gm - tm).flatten()]
        prog_all += [gp.flatten(), gm.flatten()]
        tgt_all += [tp.flatten(), tm.flatten()]
    e, g, t = torch.cat(errs).numpy(), torch.cat(prog_all).numpy(), torch.cat(tgt_all).numpy()
    counts, edges = np.histogram(e, bins=120)
    sig = [cfg.write_sigma_us(cfg.g_min_us), cfg.write_sigma_us(cfg.g_max_us)]
    core = np.abs(e) <= 5 * max(sig + [1e-9])
    maps = {}
    for name in [n for n in prog.order() if n in prog.stages and prog.stages[n].kind == "s4d"][:1] + \
                [n for n in prog.order() if n.startswith("mixing")][:1]:
        st = prog.stages[name]
        tp, tm = targets_us(st, cfg)
        # conductances are (pairs per weight, arrays, rows, columns): the first pair of array 0
        maps[name] = {"array": 0, "layer": name,
                      "g_us": physical(st.g_plus_s[0, 0], st.g_minus_s[0, 0]).round(2).tolist(),
                      "target_us": physical(tp[0, 0] * 1e-6, tm[0, 0] * 1e-6).round(2).tolist()}
    return {"devices": int(e.size), "counts": counts.tolist(), "edges_us": edges.tolist(),
            "mean_us": float(e.mean()), "std_us": float(e.std()), "std_within_5_sigma_us": float(e[core].std()),
            "outside_5_sigma": int((~core).sum()), "max_abs_us": float(np.abs(e).max()),
            "programmed_min_us": float(g.min()), "programmed_max_us": float(g.max()),
            "target_min_us": float(t.min()), "target_max_us": float(t.max()),
            "write_sigma_at_gmin_gmax_us": sig, "g_min_us": cfg.g_min_us, "g_max_us": cfg.g_max_us,
            "clip_max_us": 1.5 * cfg.g_max_us, "stuck_on_frac": cfg.stuck_on_frac,
            "stuck_off_frac": cfg.stuck_off_frac, "maps": maps}


def measure(ctx) -> dict:
    ctx.need_xmodel()
    prog = ctx.crossbar_program()
    res = prog.resources()
    out = {"model": ctx.crossbar_model, "array": res["array"], "arrays": res["arrays"], "devices": res["devices"],
           "utilization": res["utilization"], "rows": tiling(prog), "programming": programming(prog),
           "device": {k: getattr(prog.config, k) for k in ("g_min_us", "g_max_us", "write_noise_sigma_us",
                                                          "write_noise_slope", "stuck_on_frac", "stuck_off_frac",
                                                          "weight_bits", "ssm_bits", "adc_bits", "dac_bits")},
           "errors": []}
    try:
        run = ctx.crossbar_run()
        out["energy"] = energy_rows(run, static=())
        a = run["accuracy"]
        out["accuracy"] = {"accuracy": a["mean"], "accuracy_std": a["std"], "trials": a["trials"], "n": run["n"],
                           "accuracy_ci95": wilson(a["mean"], run["n"]), "task": run["task"]}
        out["energy_source"] = run["cost"]["assumptions"].get("crossbar_energy")
        from ...train.loop import evaluate
        with torch.no_grad():
            sw = evaluate(ctx.xmodel, ctx.xtest)
        out["software_accuracy"] = {"accuracy": sw["accuracy"], "n": sw["n"],
                                    "accuracy_ci95": wilson(sw["accuracy"], sw["n"])}
    except Exception as e:  # noqa: BLE001 - the tiling and conductances stand without the run
        out["errors"].append({"where": "crossbar run", "error": f"{type(e).__name__}: {e}"})
        out["energy"] = []
    return out


def render(ctx, data: dict) -> dict:
    pr, dev = data["programming"], data["device"]
    figs = [figure(data["errors"], plots.crossbar_arrays, data["rows"], pr["maps"], dev, ctx.out),
            figure(data["errors"], plots.crossbar_programming, pr, data["energy"], ctx.out)]
    caption = (
        f"From the compiled program of {data['model']} (device instance 0 of its device: weights "
        f"{dev['weight_bits']} b (2 = ternary), S4D blocks {dev['ssm_bits']} b, window {dev['g_min_us']:g}-"
        f"{dev['g_max_us']:g} uS). Tiling: {data['arrays']} arrays of {data['array']} ({data['devices']} devices), "
        f"{100 * data['utilization']:.1f}% of the signed cells hold a weight; one square per array, coloured by "
        f"layer, shade = utilization. Heat maps: programmed conductance of every device of one S4D array and one "
        f"mixing array (columns in differential pairs G+, G-). Histogram: programmed - target conductance of all "
        f"{pr['devices']} devices (write noise after program-and-verify, sigma {pr['write_sigma_at_gmin_gmax_us'][0]:.2f}"
        f"-{pr['write_sigma_at_gmin_gmax_us'][1]:.2f} uS; the tails are stuck devices: {pr['outside_5_sigma']} beyond "
        f"5 sigma). Energy: the crossbar cost model per token (array currents from the voltages applied on the "
        f"test run, ADC and DAC conversions, digital periphery; no static power, a lower bound).")
    html = "<h3>Array tiling</h3>" + page.table(data["rows"], [
        ("layer", "layer", "l"), ("kind", "kind", "l"),
        ("arrays", lambda r: f"{r['first_array']}-{r['first_array'] + r['arrays'] - 1} ({r['arrays']})", "l"),
        ("rows used", "rows_used", "r"), ("signed columns used", "cols_used", "r"),
        ("utilization", lambda r: page.pct(r["utilization"]), "r"),
        ("layout", lambda r: (f"{r['channels_per_array']} channel block(s) per array" if r["kind"] == "s4d"
                              else f"{r['row_tiles']} row tile(s)"), "l"),
        ("nonzero weights", "nonzero_weights", "r")])
    html += "<h3>Programming error (programmed - target)</h3>" + page.kv_table({
        "devices": pr["devices"], "mean": f"{pr['mean_us']:.3f} uS", "std (all devices)": f"{pr['std_us']:.2f} uS",
        "std within 5 sigma of the write noise": f"{pr['std_within_5_sigma_us']:.2f} uS",
        "devices beyond 5 sigma (stuck)": f"{pr['outside_5_sigma']} (stuck fractions {dev['stuck_on_frac']:g} at "
                                          f"G_max, {dev['stuck_off_frac']:g} at G_min)",
        "programmed range": f"{pr['programmed_min_us']:.1f}-{pr['programmed_max_us']:.1f} uS (clipped to "
                            f"0-{pr['clip_max_us']:g})",
        "target range": f"{pr['target_min_us']:.1f}-{pr['target_max_us']:.1f} uS"})
    if data["energy"]:
        html += "<h3>Energy per token: arrays, ADC, DAC, digital</h3>" + page.table(data["energy"], [
            ("mode", "mode", "l"), ("component", "component", "l"),
            ("energy / token", lambda r: page.energy(r["energy_per_token_j"]), "r"),
            ("share", lambda r: page.pct(r["share"]), "r"),
            ("total / token", lambda r: page.energy(r["total_energy_per_token_j"]), "r")], row_class=lambda r: "mod")
    acc, sw = data.get("accuracy"), data.get("software_accuracy")
    mine = {}
    if sw:
        mine["imssa_software"] = (f"{page.pct(sw['accuracy'])} ({ci_text(sw['accuracy'], sw['n'])}), float eval "
                                  f"of the projected checkpoint")
    if acc:
        mine["imssa_on_chip"] = (f"{page.pct(acc['accuracy'])} \u00b1 {page.pct(acc['accuracy_std'])} over "
                                 f"{len(acc['trials'])} simulated device instances "
                                 f"({ci_text(acc['accuracy'], acc['n'])})")
    html += "<h3>The published chip beside this deployment</h3>" + page.published_table(
        published.figures(KEY), (f"edgessm, {data['model']} on {acc['task'] if acc else ctx.crossbar_task} "
                                 f"({acc['n'] if acc else len(ctx.xtest)} test samples; 95% interval)", mine))
    return {"figures": figs, "caption": caption, "html": html}
