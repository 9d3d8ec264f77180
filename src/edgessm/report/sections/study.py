"""Token by token vs batched (``bench/study.py``), measured on this CPU, with the modelled
targets' points."""
from __future__ import annotations

import torch

from .. import page, plots
from ..context import figure

KEY, TITLE = "study", "Token by token vs batched"


def measure(ctx) -> dict:
    from ...bench.study import modelled_points, run_study
    ctx.need_model()
    st = ctx.study
    threads = torch.get_num_threads()
    rows = run_study(ctx.model, st["batches"], st["seq_lens"], st["steps"], threads,
                     torch_steps=st["torch_steps"], repeats=st["repeats"], max_tokens=st["max_tokens"],
                     errors="record")
    torch.set_num_threads(threads)
    for r in rows:
        r["model"] = ctx.model_name
    notes, errors = [], []
    spec0 = ctx.specs[0] if ctx.specs else None
    if spec0 is not None and ctx.has_run(("int", ctx.int_target, spec0)):
        for r in modelled_points(ctx.int_run(spec0), f"{ctx.int_target} ({ctx.model_name}, {spec0})"):
            rows.append({**r, "model": ctx.model_name})
    else:
        notes.append(f"no modelled {ctx.int_target} point: its deploy in the accuracy section failed or was not run")
    if ctx.has_run("crossbar"):
        for r in modelled_points(ctx.crossbar_run(), f"crossbar ({ctx.crossbar_model})"):
            rows.append({**r, "model": ctx.crossbar_model})
    else:
        notes.append("no modelled crossbar point: its deploy in the accuracy section failed or was not run")
    for r in rows:
        if "error" in r:
            errors.append({"where": f"{r.get('engine')} batch {r.get('batch')}", "error": r["error"]})
    return {"rows": rows, "notes": notes, "errors": errors, "findings": _findings(rows), "threads": threads}


def render(ctx, data: dict) -> dict:
    rows, st = data["rows"], ctx.study
    fig = figure(data["errors"], plots.study, rows, ctx.out)
    caption = (
        f"MEASURED on this CPU ({data['threads']} thread), model {ctx.model_name}, random inputs. Token by token: "
        f"one token of B streams per call, latency = one call (p50 solid, p99 dotted), over {st['steps']} calls "
        f"(cpu-fast) or {st['torch_steps']} (torch-step) after 10 warm-up calls. Batched: B whole sequences of "
        f"length L by FFT convolution, latency = one forward over the batch (the earliest a prediction for the "
        f"last token exists), {st['repeats']} timed forwards after one warm-up; batches with B*L > "
        f"{st['max_tokens']} skipped. Throughput = tokens per median call (robust to other jobs preempting a few "
        f"calls; the table also gives it from the mean). MODELLED (big markers at B=1): the Loihi 2 and crossbar "
        f"cost models from the accuracy section (one stream; the crossbar point is {ctx.crossbar_model}, a "
        f"smaller network). " + " ".join(data["findings"]))
    html = page.table(rows, [
        ("engine", "engine", "l"), ("mode", "mode", "l"),
        ("kind", lambda r: "measured" if r.get("measured") else "modelled", "l"),
        ("batch", "batch", "r"), ("L", lambda r: r.get("seq_len") or "-", "r"),
        ("latency p50", lambda r: page.seconds(r.get("p50_s")), "r"),
        ("latency p99", lambda r: page.seconds(r.get("p99_s")), "r"),
        ("throughput (median)", lambda r: page.rate(r.get("throughput_p50_tokens_per_s")), "r"),
        ("throughput (mean)", lambda r: page.rate(r.get("throughput_tokens_per_s")), "r"),
        ("memory / energy", _memory, "l"),
        ("calls", lambda r: r.get("calls", "-"), "r"),
        ("note", lambda r: r.get("error", ""), "l")],
        row_class=lambda r: "meas" if r.get("measured") else "mod")
    return {"figures": [fig], "caption": caption, "html": html}


def _memory(r: dict) -> str:
    if "state_bytes" in r:
        return f"state {r['state_bytes'] / 1024:.0f} KiB (all {r['batch']} streams)"
    if "activation_bytes_estimate" in r:
        rss = r.get("peak_rss_growth_bytes") or 0
        return (f"~{r['activation_bytes_estimate'] / 2**20:.1f} MiB working set per layer (computed)"
                + (f", peak RSS +{rss / 2**20:.1f} MiB" if rss else ""))
    if r.get("energy_per_token_j"):
        return f"{page.energy(r['energy_per_token_j'])}/token (modelled)"
    return "-"


def _findings(rows: list[dict]) -> list[str]:
    ok = [r for r in rows if "error" not in r and r.get("measured")]
    out = []
    tok1 = [r for r in ok if r["mode"] == "token" and r["batch"] == 1]
    conv1 = [r for r in ok if r["mode"] == "batched" and r["batch"] == 1]
    if tok1 and conv1:
        best = min(tok1, key=lambda r: r["p50_s"])
        c = min(conv1, key=lambda r: r["seq_len"])
        out.append(f"Latency at batch 1: the recurrence ({best['engine']}) answers a token in "
                   f"{page.seconds(best['p50_s'])}; the convolution needs {page.seconds(c['p50_s'])} for a sequence "
                   f"of L={c['seq_len']} ({c['p50_s'] / best['p50_s']:.0f}x longer): recurrence wins latency.")
    conv = [r for r in ok if r["mode"] == "batched"]
    tok = [r for r in ok if r["mode"] == "token"]
    if conv and tok:
        bc = max(conv, key=lambda r: r["throughput_p50_tokens_per_s"])
        bt = max(tok, key=lambda r: r["throughput_p50_tokens_per_s"])
        winner = "convolution" if bc["throughput_p50_tokens_per_s"] > bt["throughput_p50_tokens_per_s"] else "recurrence"
        out.append(f"Highest throughput measured: convolution {page.rate(bc['throughput_p50_tokens_per_s'])} "
                   f"(B={bc['batch']}, L={bc['seq_len']}) vs token by token {page.rate(bt['throughput_p50_tokens_per_s'])} "
                   f"({bt['engine']}, B={bt['batch']}): {winner} wins throughput"
                   + (" on this CPU." if winner == "convolution" else
                      " here (the C recurrence beats PyTorch's FFT convolution on this CPU at these sizes)."))
        # the smallest batch at which the convolution out-runs each token engine
        for eng in dict.fromkeys(r["engine"] for r in tok):
            best_tok = {r["batch"]: r["throughput_p50_tokens_per_s"] for r in tok if r["engine"] == eng}
            top = max(best_tok.values())
            wins = sorted(r["batch"] for r in conv if r["throughput_p50_tokens_per_s"] > top)
            if wins:
                out.append(f"The convolution out-runs {eng} at its best ({page.rate(top)}) from batch {wins[0]}.")
    return out
