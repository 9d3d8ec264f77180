"""Energy, latency and throughput per token per target and mode: the CPU measured (energy =
measured time x an assumed power), Loihi 2 and the crossbar from their cost models."""
from __future__ import annotations

import torch

from .. import page, plots
from ..context import err, figure, spec_info

KEY, TITLE = "cost", "Energy, latency and throughput per target and mode"


def measure(ctx) -> dict:
    from ...bench.study import batched, token_by_token
    from ...targets.cpu import CPU_POWER
    W = CPU_POWER["watts_per_core"]
    threads = torch.get_num_threads()
    rows, errors = [], []
    if ctx.model is None and ctx.xmodel is None:
        raise RuntimeError(f"no model to measure: {ctx.load_errors}")
    if ctx.model is None:
        errors.append({"where": ctx.model_name, "error": f"not loaded: {ctx.load_errors.get('model')}"})
    m, L = ctx.model_name, (ctx.test.x.shape[1] if ctx.test is not None else None)

    def measured(label, model_name, engine, mode, batch, fn, note, plot=True):
        try:
            r = fn()
            tokens = batch * (r["seq_len"] or 1)
            p50 = r["p50_s"]
            watts = W * (1 if engine == "cpu-fast" else threads)
            rows.append({"label": label, "model": model_name, "target": "cpu", "engine": engine, "mode": mode,
                         "batch": batch, "seq_len": r["seq_len"], "measured": True,
                         "energy_per_token_j": watts * p50 / tokens, "latency_per_token_s": p50,
                         "throughput_tokens_per_s": tokens / p50, "power_w": watts, "p99_s": r["p99_s"],
                         "calls": r["calls"], "note": note, "plot": plot})
        except Exception as e:  # noqa: BLE001
            rows.append({"label": label, "model": model_name, "target": "cpu", "engine": engine, "mode": mode,
                         "measured": True, "error": err(e), "plot": False})

    def modelled(label, model_name, target, run, note, plot=True):
        try:
            res = run()
        except Exception as e:  # noqa: BLE001 - the run's own error, also in the accuracy section
            rows.append({"label": label, "model": model_name, "target": target, "mode": "token", "measured": False,
                         "error": f"no deploy result: {err(e)}", "plot": False})
            return
        for ck in ("cost", "cost_pipelined"):
            if ck not in res:
                continue
            c = res[ck]
            rows.append({"label": f"{label} {c['mode']}", "model": model_name, "target": target,
                         "engine": f"{target} model" + (f" ({res['spec']})" if res.get("spec") else ""),
                         "mode": c["mode"], "batch": 1, "seq_len": None,
                         "measured": False, "energy_per_token_j": c["energy_per_token_j"],
                         "latency_per_token_s": c["latency_per_token_s"],
                         "throughput_tokens_per_s": c["throughput_tokens_per_s"], "power_w": c["power_w"],
                         "breakdown": c.get("breakdown"), "note": note, "plot": plot,
                         "resources": {k: v for k, v in (res.get("resources") or {}).items()
                                       if isinstance(v, (int, float, str))}})

    if ctx.model is not None:
        measured(f"cpu-fast token B=1 ({m})", m, "cpu-fast", "token", 1,
                 lambda: token_by_token(ctx.model, 1, ctx.cost_steps, "fast"),
                 f"C engine, one token per call, p50 of {ctx.cost_steps} calls")
        measured(f"torch step B=1 ({m})", m, "torch-step", "token", 1,
                 lambda: token_by_token(ctx.model, 1, max(20, ctx.cost_steps // 10), "torch"),
                 f"PyTorch net.step, p50 of {max(20, ctx.cost_steps // 10)} calls")
        measured(f"torch conv B={ctx.cost_batch} L={L} ({m})", m, "torch-conv", "batched", ctx.cost_batch,
                 lambda: batched(ctx.model, ctx.cost_batch, L, ctx.study.get("repeats", 2)),
                 f"FFT convolution over {ctx.cost_batch} whole sequences; latency = the whole batch "
                 f"(the answer for the last token), energy and throughput per token of the batch")
        for i, spec in enumerate(ctx.specs):
            short, _ = spec_info(spec)
            modelled(f"{ctx.int_target} {short} ({m})", m, ctx.int_target, lambda spec=spec: ctx.int_run(spec),
                     f"cost model of targets/{ctx.int_target} (constants and sources in its README/constants.py)",
                     plot=(i == 0))
    if ctx.xmodel is not None:
        xm = ctx.crossbar_model
        modelled(f"crossbar ({xm})", xm, "crossbar", ctx.crossbar_run,
                 "cost model of targets/crossbar (arrays, DAC/ADC, digital periphery; no buffers, control "
                 "or static power: a lower bound)")
        measured(f"cpu-fast token B=1 ({xm})", xm, "cpu-fast", "token", 1,
                 lambda: token_by_token(ctx.xmodel, 1, ctx.cost_steps, "fast"),
                 f"the same model as the crossbar rows, on this CPU; p50 of {ctx.cost_steps} calls")
    for r in rows:
        if "error" in r:
            errors.append({"where": r["label"], "error": r["error"]})
    return {"rows": rows, "errors": errors, "threads": threads, "watts_per_core": W,
            "cpu_power_source": CPU_POWER["source"]}


def render(ctx, data: dict) -> dict:
    rows, W = data["rows"], data["watts_per_core"]
    plotted = [r for r in rows if r.get("plot") and "error" not in r]
    fig = figure(data["errors"], plots.cost, plotted, ctx.out) if plotted else None
    others = list(ctx.specs[1:])
    caption = (
        f"Per token, batch 1 unless stated. MEASURED (blue): wall-clock on this CPU, {data['threads']} thread, median "
        f"over the calls counted in the table; energy = measured time x an ASSUMED {W:.0f} W per busy core "
        f"(targets/cpu CPU_POWER: {data['cpu_power_source']}), no energy counter is read. MODELLED (orange, hatched): "
        f"the targets' cost models from the deploy runs of the accuracy section (loihi2: {ctx.int_target} with spec "
        f"{ctx.specs[0] if ctx.specs else '-'}; crossbar: {ctx.crossbar_model}, the only shipped model that "
        f"fits 64x64 arrays, so its rows are a different, smaller network than {ctx.model_name}). 'token' = each "
        f"token waits for the previous answer: it crosses the whole network (one step per stage) before the next "
        f"enters, so latency = 1 / throughput and every token is charged all those steps of static power; "
        f"'pipelined' = streaming, a new token enters every stage time (throughput = 1 / step time, one step of "
        f"static power per token; its latency column is still the fall-through of one token). The published "
        f"Loihi 2 token-by-token figures (75x lower latency than recurrent S4D on a Jetson Orin Nano) compare the "
        f"streaming step time: see the loihi2 section and benchmarks/RESULTS.md. "
        + (f"The table also lists loihi2 with specs {', '.join(others)} (not plotted). " if others else ""))
    html = page.table(rows, [
        ("target / engine", lambda r: r.get("engine") or r.get("target"), "l"), ("model", "model", "l"),
        ("mode", "mode", "l"), ("batch", "batch", "r"),
        ("kind", lambda r: "measured" if r["measured"] else "modelled", "l"),
        ("energy / token", lambda r: page.energy(r.get("energy_per_token_j")), "r"),
        ("latency / token", lambda r: page.seconds(r.get("latency_per_token_s")), "r"),
        ("p99", lambda r: page.seconds(r.get("p99_s")) if r.get("p99_s") else "", "r"),
        ("throughput", lambda r: page.rate(r.get("throughput_tokens_per_s")), "r"),
        ("power", lambda r: page.watts(r.get("power_w")), "r"),
        ("energy breakdown", lambda r: ", ".join(f"{k} {page.energy(v)}" for k, v in (r.get("breakdown") or {}).items()), "l"),
        ("note", lambda r: r.get("error") and f"error: {r['error']}" or r.get("note", ""), "l")],
        row_class=lambda r: "meas" if r["measured"] else "mod")
    return {"figures": [fig], "caption": caption, "html": html}
