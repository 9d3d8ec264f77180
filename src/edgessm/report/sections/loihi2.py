"""Loihi 2 (the S4D on Loihi 2 study's target), modelled: static vs dynamic energy per token
from the loihi2 cost model's breakdown and assumptions, and the per-population synaptic ops
and spike sparsity the integer engine counted on the report's test samples; beside them, the
published measurement the model is calibrated against, and the model's own figures for that
network."""
from __future__ import annotations

import torch

from .. import page, plots, published, runs
from ..context import figure

KEY, TITLE = "loihi2", "Loihi 2: static vs dynamic energy, synaptic ops and spike sparsity per layer"
SPEC = "loihi2"          # the published precision: 8-bit weights, 24-bit states and graded spikes


def energy_rows(res: dict, static=("static",)) -> list[dict]:
    """One row per (mode, component) of a deploy result's cost breakdown (token by token and
    pipelined), with its kind: static (the components named in `static`) or dynamic."""
    rows = []
    for ck in ("cost", "cost_pipelined"):
        c = res.get(ck)
        if not c:
            continue
        total = c["energy_per_token_j"]
        for comp, e in c["breakdown"].items():
            rows.append({"mode": c["mode"], "component": comp, "kind": "static" if comp in static else "dynamic",
                         "energy_per_token_j": e, "share": e / total if total else None,
                         "total_energy_per_token_j": total})
    return rows


def layer_rows(res: dict, d_input: int) -> list[dict]:
    """Per sending population: graded spikes sent and the synaptic ops they cause, per token."""
    st = res["stats"]
    size = {"input": d_input, **{p["name"]: p["neurons"] for p in res["resources"]["populations"]}}
    cores = {p["name"]: p["cores"] for p in res["resources"]["populations"]}
    rows = []
    for name, msgs in st["messages_per_token"].items():
        n = size.get(name)
        rows.append({"population": name, "neurons": n, "cores": cores.get(name),
                     "synops_per_token": st["synops_per_token"].get(name, 0.0), "messages_per_token": msgs,
                     "spike_sparsity": (1.0 - msgs / n) if n else None,
                     "state": name.endswith(".state")})
    return rows


def calibration_network() -> dict:
    """The loihi2 model's figures for the network of the published calibration point (random
    weights, dense worst-case work: nothing is run), to set beside the measurement."""
    from ...ssm.network import SequenceModel
    from ...targets.loihi2.constants import CALIBRATION_POINT as c
    torch.manual_seed(0)
    m = SequenceModel.from_preset("neuromorphic", d_input=c["d_input"], d_output=c["d_output"],
                                  d_model=c["d_model"], d_state=c["d_state"], n_layers=c["n_layers"])
    p = runs.compile(m, "loihi2", SPEC, calibration=torch.randn(4, 16, c["d_input"]))
    cost = p.cost(mode="pipelined")
    return {"time_per_step_s": cost.assumptions["time_per_step_s"], "power_w": cost.power_w,
            "cores": p.resources()["cores"], "energy_per_token_j": cost.energy_per_token_j,
            "breakdown": dict(cost.breakdown)}


def jetson_comparison(ctx, res: dict) -> dict:
    """This model's figures for the published Loihi 2 vs Jetson Orin Nano comparison: its measured
    time per token at batch 1 on this CPU (PyTorch ``step``, a framework recurrence like the one the
    study ran on its Jetson, and the C kernel; energy = time x the stated CPU power, not measured)
    over the modelled Loihi 2 streaming step (time and energy per token, pipelined)."""
    import numpy as np

    from ...targets.cpu import CPU_POWER
    from .latency import ENGINES, stream_sample
    s = stream_sample(ctx)
    pc = res["cost_pipelined"]
    step, e_l2 = pc["assumptions"]["time_per_step_s"], pc["energy_per_token_j"]
    w = CPU_POWER["watts_per_core"]
    engines = {}
    for name in ENGINES:
        if name in s:
            t = float(np.median(s[name]))
            engines[name] = {"time_per_token_s": t, "energy_per_token_j": t * w,
                             "latency_ratio": t / step, "energy_ratio": t * w / e_l2}
    return {"engines": engines, "loihi2_step_s": step, "loihi2_energy_per_token_j": e_l2,
            "cpu_watts_per_core": w, "cpu_power_source": CPU_POWER["source"],
            "params": int(sum(p.numel() for p in ctx.model.parameters()))}


def measure(ctx) -> dict:
    ctx.need_model()
    res = ctx.int_run(SPEC, target="loihi2")
    c = res["cost"]
    out = {"model": ctx.model_name, "task": ctx.task, "n": res["n"], "spec": res.get("spec", SPEC),
           "work": c["assumptions"].get("work"), "energy": energy_rows(res),
           "rows": layer_rows(res, ctx.model.config.d_input), "spike_sparsity": res.get("spike_sparsity"),
           "assumptions": c["assumptions"], "cores": res.get("cores"), "chips": res.get("chips"),
           "errors": []}
    a, pc = c["assumptions"], res.get("cost_pipelined") or {}
    step, depth = a["time_per_step_s"], a["depth_steps"]
    out["timing"] = [
        {"regime": "streaming: a new token enters every algorithmic step (the published token-by-token "
                   "figures compare this: their latency per token is 1 / throughput)",
         "time_per_token_s": step, "energy_per_token_j": pc.get("energy_per_token_j"),
         "derivation": "slowest core's synaptic ops and neuron updates + barrier + hops (targets/loihi2 timing())"},
        {"regime": "fall-through: the answer to one token", "time_per_token_s": depth * step,
         "energy_per_token_j": None,
         "derivation": f"{depth} populations x one step each (a graded spike sent in step t is integrated in t+1)"},
        {"regime": "one token at a time: each token waits for the previous answer (closed loop)",
         "time_per_token_s": c["latency_per_token_s"], "energy_per_token_j": c["energy_per_token_j"],
         "derivation": f"{depth} steps and {depth} steps of static power per token"}]
    for r in out["energy"]:
        if r["component"] == "static":
            r["note"] = (f"static power {c['assumptions']['static_power_chip_w'][0]:g} W per chip "
                         f"({c['assumptions']['static_power_chip_w'][2]}) x time per token")
    try:
        out["calibration_network"] = calibration_network()
    except Exception as e:  # noqa: BLE001
        out["errors"].append({"where": "calibration network", "error": f"{type(e).__name__}: {e}"})
    try:
        out["jetson"] = jetson_comparison(ctx, res)
    except Exception as e:  # noqa: BLE001
        out["errors"].append({"where": "Jetson comparison", "error": f"{type(e).__name__}: {e}"})
    try:
        from ...targets.loihi2.network import compare_second_point
        sp = compare_second_point()
        out["second_point"] = {"rows": sp["rows"], "steps": sp["steps"], "activity": sp["activity"],
                               "cores": sp["cost"]["cores"], "network": sp["network"], "system": sp["system"]}
    except Exception as e:  # noqa: BLE001
        out["errors"].append({"where": "second published point", "error": f"{type(e).__name__}: {e}"})
    return out


def render(ctx, data: dict) -> dict:
    fig = figure(data["errors"], plots.loihi2, data["energy"], data["rows"], data["model"], ctx.out)
    per_op = data["assumptions"].get("per_op_figures", "")
    caption = (
        f"MODELLED by targets/loihi2 for {data['model']} post-training quantized to the {data['spec']} spec "
        f"(8-bit weights, 24-bit states and graded spikes), from the work the integer engine counted "
        f"({data['work']}; the first {data['n']} {data['task']} test samples), on {data['cores']} neuro cores. "
        f"Left: energy per token split into static (chip static power x time per token) and dynamic (synaptic "
        f"ops, neuron updates, graded-spike messages, mesh hops; {per_op}), token by token and pipelined. "
        f"Right: per population, the synaptic ops its graded spikes cause and the fraction of its neurons that "
        f"send nothing in a token (spike sparsity; ReLU outputs of 0 are not sent). State populations send "
        f"every state to the layer output every step (dense). "
        + (f"Overall spike sparsity (graded populations): {data['spike_sparsity']:.3f}."
           if data.get("spike_sparsity") is not None else ""))
    html = "<h3>Time per token: streaming, fall-through, one at a time</h3>" + page.table(data["timing"], [
        ("regime", "regime", "l"), ("time / token", lambda r: page.seconds(r["time_per_token_s"]), "r"),
        ("energy / token", lambda r: page.energy(r["energy_per_token_j"]) if r["energy_per_token_j"] else "", "r"),
        ("derivation", "derivation", "l")], row_class=lambda r: "mod")
    html += "<h3>Energy per token: static vs dynamic</h3>" + page.table(data["energy"], [
        ("mode", "mode", "l"), ("component", "component", "l"), ("kind", "kind", "l"),
        ("energy / token", lambda r: page.energy(r["energy_per_token_j"]), "r"),
        ("share", lambda r: page.pct(r["share"]), "r"),
        ("total / token", lambda r: page.energy(r["total_energy_per_token_j"]), "r"),
        ("note", lambda r: r.get("note", ""), "l")], row_class=lambda r: "mod")
    html += "<h3>Synaptic ops and spike sparsity per population</h3>" + page.table(data["rows"], [
        ("population (sender)", "population", "l"), ("neurons", "neurons", "r"), ("cores", "cores", "r"),
        ("synaptic ops / token", lambda r: f"{r['synops_per_token']:.1f}", "r"),
        ("graded spikes / token", lambda r: f"{r['messages_per_token']:.1f}", "r"),
        ("spike sparsity", lambda r: "dense (state)" if r["state"] else page.num(r["spike_sparsity"], "{:.3f}"),
         "r")], row_class=lambda r: "mod")
    cal = data.get("calibration_network")
    mine = {} if not cal else {"m24_time_per_step": page.seconds(cal["time_per_step_s"]),
                               "m24_power": page.watts(cal["power_w"]), "m24_cores": str(cal["cores"])}
    html += "<h3>The published measurement beside this model</h3>" + page.published_table(
        published.figures(KEY), ("modelled by targets/loihi2 for that network (random weights, dense worst "
                                 "case, pipelined)", mine))
    html += ("<p class='note'>The loihi2 static power is derived from the published power (see "
             "targets/loihi2/README.md), so the power agreement is by construction; time per step and cores "
             "are modelled independently.</p>")
    jt = data.get("jetson")
    if jt:
        tq, fa = jt["engines"].get("torch net.step"), jt["engines"].get("cpu-fast (C engine)")

        def both(key, fmt):
            parts = [f"PyTorch step {fmt.format(tq[key])}" if tq else "",
                     f"C kernel {fmt.format(fa[key])}" if fa else ""]
            return ", ".join(p for p in parts if p)
        lat = both("latency_ratio", "{:.1f}x")
        mine = {"m24_energy_ratio": both("energy_ratio", "{:.1f}x"), "m24_latency_ratio": lat,
                "m24_throughput_ratio": lat, "m24w_speed_ratio": lat, "m24o_params": f"{jt['params']:,}",
                "m24s_cores_small": str(data.get("cores")), "m24s_cores_large": str(data.get("cores"))}
        html += ("<h3>Published: S4D on Loihi 2 vs recurrent S4D on a Jetson Orin Nano, token by token</h3>"
                 + page.published_table(published.figures("loihi2-jetson"), (
                     f"this model ({data['model']}): measured on this CPU at batch 1 over modelled Loihi 2 "
                     f"streaming (ratios as published: CPU / Loihi 2)", mine))
                 + page.table([{"engine": k, **v} for k, v in jt["engines"].items()]
                              + [{"engine": "loihi2 (modelled, streaming step)", "time_per_token_s": jt["loihi2_step_s"],
                                  "energy_per_token_j": jt["loihi2_energy_per_token_j"]}], [
                     ("engine", "engine", "l"),
                     ("time / token", lambda r: page.seconds(r["time_per_token_s"]), "r"),
                     ("energy / token", lambda r: page.energy(r["energy_per_token_j"]), "r")],
                     row_class=lambda r: "mod")
                 + f"<p class='note'>The study's per-token table values (energy, latency and throughput per "
                   f"model and mode) were not found in any stored source; its ratios are shown. CPU energy = "
                   f"measured time x {jt['cpu_watts_per_core']:g} W per core ({page.esc(jt['cpu_power_source'])}). "
                   f"The published ratios are against a Jetson running a framework recurrence; the PyTorch step "
                   f"on this CPU is the comparable row, the C kernel a dedicated implementation.</p>")
    sp = data.get("second_point")
    if sp:
        r = {x["what"]: x for x in sp["rows"]}
        txt = {"s": page.seconds, "J": page.energy, "W": page.watts}

        def mod(what):
            x = r[what]
            return f"{txt.get(x['unit'], str)(x['modelled'])} ({x['ratio']:.2f}x)"
        mine = {"a26_cores": f"{sp['cores']} ({r['neuro cores']['ratio']:.2f}x)",
                "a26_latency": mod("latency per inference"),
                "a26_dynamic_energy": mod("dynamic energy per inference"),
                "a26_static_power": mod("static power"), "a26_total_energy": mod("total energy per inference"),
                "n26_board_static": f"{page.watts(r['static power']['modelled'])} per chip (static_power_chip_w)"}
        html += ("<h3>A second published Loihi 2 measurement beside this model's prediction</h3>"
                 + page.published_table(published.figures("loihi2-second"), (
                     "predicted by targets/loihi2 (modelled / published); no constant fitted", mine))
                 + f"<p class='note'>{page.esc(sp['network'])}; {page.esc(sp['system'])}. Described to the model "
                   f"as a chain of dense layers with its work from the published profile ({sp['steps']:.1f} steps "
                   f"per inference, activity {sp['activity']:.3f}): benchmarks/loihi2_second_point.py. The step "
                   f"time is {r['time per step']['ratio']:.2f}x the measured one (Loihi 1 per-op times), the "
                   f"neuro-core dynamic energy {r['dynamic energy per inference']['ratio']:.2f}x the dynamic "
                   f"energy measured on the whole system, and the static power a chip-level figure against a "
                   f"16-chip system's: see benchmarks/RESULTS.md.</p>")
    return {"figures": [fig], "caption": caption, "html": html}
