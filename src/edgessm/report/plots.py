"""The report's figures (matplotlib, Agg). Each function draws one PNG from rows that also go,
unchanged, into report.json, so every plotted number is in the JSON."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

MEASURED, MODELLED = "#4c72b0", "#dd8452"
KIND_COLORS = {"cpu": "#4c72b0", "integer": "#dd8452", "crossbar": "#55a868", "software": "#8c8c8c",
               "published": "#d0d0d0"}
KIND_LABELS = {"cpu": "cpu float32", "integer": "integer engine (PTQ)", "crossbar": "crossbar (simulated devices)",
               "software": "software (float eval)", "published": "published (not computed here)"}


def plt():
    try:
        import matplotlib
    except ImportError:
        from ..errors import EdgessmError
        raise EdgessmError("the report needs matplotlib: pip install 'edgessm[report]'") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot
    return pyplot


def save(fig, out: Path, name: str) -> str:
    path = Path(out) / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt().close(fig)
    return path.name


# ---- 1. accuracy -----------------------------------------------------------------------------


def accuracy(rows: list[dict], out: Path, name: str = "accuracy",
             title: str = "accuracy per target and bit-width") -> str:
    """Grouped bars: one group per (model, task), one bar per target / bit-width."""
    p = plt()
    groups = list(dict.fromkeys(r["group"] for r in rows))
    fig, ax = p.subplots(figsize=(max(7.5, 1.25 * len(rows) + 1.5), 4.6))
    x, ticks, labels = 0.0, [], []
    spans = []
    for g in groups:
        x0 = x
        for r in (r for r in rows if r["group"] == g):
            c = KIND_COLORS.get(r.get("kind"), "#999999")
            if r.get("accuracy") is not None:
                a, s = 100 * r["accuracy"], 100 * (r.get("accuracy_std") or 0.0)
                ax.bar(x, a, 0.8, color=c, yerr=s if s else None, capsize=4, edgecolor="black", linewidth=0.5,
                       hatch="//" if r.get("kind") == "published" else None)
                txt = f"{a:.1f}" + (f"\n\u00b1{s:.1f}" if r.get("accuracy_std") is not None else "")
                ax.text(x, a + s + 1.0, txt, ha="center", va="bottom", fontsize=8.5)
            else:
                ax.bar(x, 100, 0.8, color="none", edgecolor="#bbbbbb", hatch="//", linewidth=0.5)
                why = "does not fit" if r.get("status") == "does not fit" else "error"
                ax.text(x, 50, why + "\n(see table)", ha="center", va="center", fontsize=8, rotation=90,
                        color="#a00000", bbox=dict(facecolor="white", edgecolor="none", pad=1.5))
            ticks.append(x)
            labels.append(r["label"])
            x += 1.0
        spans.append((g, x0, x - 1.0))
        x += 0.7
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, fontsize=8)
    for g, a, b in spans:
        ax.annotate(g, xy=((a + b) / 2, 0), xycoords=("data", "axes fraction"), xytext=(0, -44),
                    textcoords="offset points", ha="center", va="top", fontsize=9.5, fontweight="bold")
    ax.set_ylim(0, 118)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("accuracy (%), prediction after the last token")
    ax.set_xlim(-0.7, x - 0.7 - 0.3)
    ax.grid(axis="y", alpha=0.3)
    kinds = [k for k in KIND_COLORS if k != "published" or any(r.get("kind") == k for r in rows)]
    handles = [p.Rectangle((0, 0), 1, 1, facecolor=KIND_COLORS[k], hatch="//" if k == "published" else None,
                           edgecolor="black" if k == "published" else KIND_COLORS[k]) for k in kinds]
    ax.legend(handles, [KIND_LABELS[k] for k in kinds], loc="upper center", ncol=len(kinds), fontsize=8,
              frameon=False, bbox_to_anchor=(0.5, 1.0))
    ax.set_title(title, fontsize=11)
    return save(fig, out, name)


# ---- 2. cost ---------------------------------------------------------------------------------


def cost(rows: list[dict], out: Path) -> str:
    """Three log-scale horizontal bar panels: energy, latency, throughput per token."""
    p = plt()
    rows = [r for r in rows if r.get("energy_per_token_j")]
    n = len(rows)
    fig, axes = p.subplots(1, 3, figsize=(13.5, 0.42 * n + 1.6), sharey=True)
    y = np.arange(n)[::-1]
    labels = [r["label"] for r in rows]
    specs = (("energy_per_token_j", "energy per token (J)", _eng("J")),
             ("latency_per_token_s", "latency: token in -> its prediction out (s)", _eng("s")),
             ("throughput_tokens_per_s", "throughput (tokens/s)", _eng("")))
    for ax, (key, title, fmt) in zip(axes, specs):
        vals = np.array([r[key] for r in rows], dtype=float)
        cols = [MEASURED if r["measured"] else MODELLED for r in rows]
        ax.barh(y, vals, color=cols, hatch=None, edgecolor="black", linewidth=0.4)
        for yi, r, v in zip(y, rows, vals):
            if not r["measured"]:
                ax.barh(yi, v, color="none", hatch="///", edgecolor="white", linewidth=0)
        ax.set_xscale("log")
        lo, hi = np.nanmin(vals), np.nanmax(vals)
        ax.set_xlim(lo / 3, hi * 30)
        for yi, v in zip(y, vals):
            ax.text(v * 1.15, yi, fmt(v), va="center", fontsize=7.5)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3, which="major")
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(labels, fontsize=8)
    handles = [p.Rectangle((0, 0), 1, 1, color=MEASURED),
               p.Rectangle((0, 0), 1, 1, facecolor=MODELLED, hatch="///", edgecolor="white")]
    fig.legend(handles, ["measured on this CPU (energy = time x assumed power)", "modelled (target cost model)"],
               loc="lower center", ncol=2, fontsize=9, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save(fig, out, "cost")


def _eng(unit: str):
    from . import page

    def f(v):
        if unit == "J":
            return page.energy(v)
        if unit == "s":
            return page.seconds(v)
        return page.rate(v).replace(" tokens/s", "")
    return f


# ---- Loihi 2: energy split, per-population work ---------------------------------------------

COMPONENT_COLORS = {"static": "#9e9e9e", "synaptic": "#dd8452", "neurons": "#c44e52", "messages": "#8172b2",
                    "hops": "#937860", "crossbar": "#55a868", "adc": "#4c72b0", "dac": "#64b5cd",
                    "digital": "#8c8c8c"}


def _stacked(ax, rows: list[dict], group: str, title: str):
    """Horizontal bars of the energy per token split by component (percent of the total), one bar
    per `group` value, its total written beside it."""
    groups = list(dict.fromkeys(r[group] for r in rows))
    for y, g in enumerate(groups):
        left = 0.0
        rr = [r for r in rows if r[group] == g]
        total = sum(r["energy_per_token_j"] for r in rr)
        for r in rr:
            share = 100 * r["energy_per_token_j"] / total if total else 0.0
            ax.barh(y, share, left=left, color=COMPONENT_COLORS.get(r["component"], "#cccccc"), edgecolor="black",
                    linewidth=0.4, hatch="///" if r.get("kind") == "static" else None,
                    label=r["component"] if y == 0 else None)
            if share > 7:
                ax.text(left + share / 2, y, f"{share:.0f}%", ha="center", va="center", fontsize=7.5,
                        bbox=dict(facecolor="white", edgecolor="none", pad=0.5, alpha=0.8))
            left += share
        ax.text(101, y, f"{_eng('J')(total)}/token", va="center", fontsize=8)
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels(groups, fontsize=8.5)
    ax.set_xlabel("share of the energy per token (%), modelled")
    ax.set_xlim(0, 122)
    ax.set_ylim(-0.6, len(groups) - 0.4 + 0.5)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7.5, loc="upper center", ncol=5, bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(axis="x", alpha=0.3)


def loihi2(energy: list[dict], layers: list[dict], model: str, out: Path) -> str:
    """Left: static vs dynamic energy per token per mode. Right: synaptic ops and spike sparsity
    per population."""
    p = plt()
    fig, (a1, a2) = p.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1, 1.3]})
    _stacked(a1, energy, "mode", f"Loihi 2 energy per token ({model}): static (hatched) vs dynamic")
    x = np.arange(len(layers))
    syn = [r["synops_per_token"] if r["synops_per_token"] > 0 else np.nan for r in layers]
    a2.bar(x, syn, color=[MODELLED if not r["state"] else "#bbbbbb" for r in layers], edgecolor="black",
           linewidth=0.4)
    a2.set_yscale("log")
    a2.set_ylim(bottom=1.0)
    for i, r in enumerate(layers):
        if r["synops_per_token"] <= 0:
            a2.text(i, 1.3, "0", ha="center", va="bottom", fontsize=8)
    a2.set_ylabel("synaptic ops per token (caused by its spikes)")
    a2.set_xticks(x)
    a2.set_xticklabels([r["population"] for r in layers], rotation=60, ha="right", fontsize=7.5)
    b = a2.twinx()
    sp = [(i, r["spike_sparsity"]) for i, r in enumerate(layers) if not r["state"] and r["spike_sparsity"] is not None]
    if sp:
        b.plot([i for i, _ in sp], [100 * s for _, s in sp], "o", color="#c44e52", label="spike sparsity")
    b.set_ylim(-3, 103)
    b.set_ylabel("spike sparsity (%): neurons silent per token", color="#c44e52")
    a2.set_title("per population (sender): synaptic ops (bars; grey = state, dense) and sparsity (dots)",
                 fontsize=9.5)
    a2.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save(fig, out, "loihi2")


# ---- crossbar: tiling, conductances, programming error, energy split -------------------------

def crossbar_arrays(tiles: list[dict], maps: dict, device: dict, out: Path) -> str:
    """Left: one square per array, coloured by layer, shade = utilization. Right: the programmed
    conductances of the given arrays (heat maps, uS)."""
    p = plt()
    from matplotlib import colormaps
    n = sum(t["arrays"] for t in tiles)
    per_row = max(8, int(np.ceil(np.sqrt(n * 1.6))))
    nrow = -(-n // per_row)
    fig = p.figure(figsize=(6 + 4.3 * len(maps), max(3.9, 0.42 * nrow + 1.6)))
    gs = fig.add_gridspec(1, 1 + len(maps), width_ratios=[1.5] + [1] * len(maps))
    ax = fig.add_subplot(gs[0, 0])
    cmap = colormaps["tab10"]
    for li, t in enumerate(tiles):
        col = cmap(li % 10)
        for k, a in enumerate(t["array_indices"]):
            r, c = divmod(a, per_row)
            u = t["array_utilization"][k]
            ax.add_patch(p.Rectangle((c, -r), 0.92, 0.92, facecolor=col, alpha=0.25 + 0.75 * u, edgecolor="black",
                                     linewidth=0.4, label=f"{t['layer']} ({t['arrays']})" if k == 0 else None))
            if n <= 120:
                ax.text(c + 0.46, -r + 0.46, str(a), ha="center", va="center", fontsize=5.5)
    ax.set_xlim(-0.2, per_row + 0.1)
    ax.set_ylim(-nrow + 0.8, 1.1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.02), ncol=3, frameon=False)
    ax.set_title(f"{n} arrays: which layer sits where (shade = utilization)", fontsize=9.5)
    for i, (name, m) in enumerate(maps.items()):
        a = fig.add_subplot(gs[0, 1 + i])
        im = a.imshow(np.asarray(m["g_us"]), cmap="viridis", vmin=0, vmax=device["g_max_us"] * 1.05,
                      interpolation="nearest", aspect="auto")
        a.set_title(f"{name}, array {m['array']}: programmed G (uS)", fontsize=9.5)
        a.set_xlabel("physical column (pairs G+, G-)")
        a.set_ylabel("row (input)")
        fig.colorbar(im, ax=a, fraction=0.046, pad=0.03)
    fig.tight_layout()
    return save(fig, out, "crossbar_arrays")


def crossbar_programming(prog: dict, energy: list[dict], out: Path) -> str:
    """Left: histogram of programmed - target conductance over every device. Right: energy per
    token by component (arrays, ADC, DAC, digital)."""
    p = plt()
    fig, (a1, a2) = p.subplots(1, 2, figsize=(12.5, 3.9), gridspec_kw={"width_ratios": [1.2, 1]})
    e = np.asarray(prog["edges_us"])
    a1.stairs(prog["counts"], e, fill=True, color=MODELLED, alpha=0.8)
    a1.set_yscale("log")
    a1.set_xlabel("programmed - target conductance (uS)")
    a1.set_ylabel("devices (log scale)")
    s0, s1 = prog["write_sigma_at_gmin_gmax_us"]
    a1.set_title(f"programming error, all {prog['devices']} devices (write-noise sigma {s0:.2f}-{s1:.2f} uS; "
                 f"tails: stuck devices)", fontsize=9)
    a1.grid(alpha=0.3)
    if energy:
        _stacked(a2, energy, "mode", "crossbar energy per token by component (modelled)")
    else:
        a2.text(0.5, 0.5, "no crossbar run (see the errors)", ha="center", transform=a2.transAxes)
        a2.axis("off")
    fig.tight_layout()
    return save(fig, out, "crossbar_programming")


# ---- 3. robustness ---------------------------------------------------------------------------


def robustness(sweeps: list[dict], reference: dict, out: Path, labels: dict | None = None,
               name: str = "robustness") -> str:
    """One panel per swept device parameter: accuracy (mean +- std over device instances);
    published thresholds (sweep["published"]: value in the x unit) as grey dash-dotted lines."""
    p = plt()
    labels = labels or {}
    ncol = min(len(sweeps), 2)
    nrow = -(-len(sweeps) // ncol)
    fig, axes = p.subplots(nrow, ncol, figsize=(5.6 * ncol, 3.9 * nrow), squeeze=False)
    for ax in axes.flat[len(sweeps):]:
        ax.set_visible(False)
    for ax, sw in zip(axes.flat, sweeps):
        for model in dict.fromkeys(r["model"] for r in sw["rows"]):
            rr = [r for r in sw["rows"] if r["model"] == model and r.get("accuracy") is not None]
            if not rr:
                continue
            xs = np.array([r["value"] for r in rr], dtype=float)
            ax.errorbar(xs, [100 * r["accuracy"] for r in rr], yerr=[100 * r["accuracy_std"] for r in rr],
                        marker="o", capsize=3, label=f"{labels.get(model, model)}, crossbar")
        if reference.get("software") is not None:
            ax.axhline(100 * reference["software"], color="#555555", ls="--", lw=1, label="software (float eval)")
        if reference.get("chance") is not None:
            ax.axhline(100 * reference["chance"], color="#aa0000", ls=":", lw=1, label="chance")
        if sw.get("default") is not None:
            ax.axvline(sw["default"], color="#55a868", lw=1, alpha=0.6, label="default device")
        for pub in sw.get("published") or ():
            ax.axvline(pub["value"], color="#777777", ls="-.", lw=1)
            ax.text(pub["value"], 97, "\n".join(textwrap.wrap(f"published {pub['source']}: {pub['what']}", 34)),
                    rotation=90, va="top", ha="right", fontsize=6, color="#555555")
        if sw.get("xscale") == "log":
            ax.set_xscale("log")
        elif sw.get("xscale") == "symlog":
            ax.set_xscale("symlog", linthresh=sw.get("linthresh", 1e-3))
            ax.set_xlim(left=0)
        ax.set_xlabel(sw["xlabel"])
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 105)
        ax.set_title(sw["title"], fontsize=10)
        ax.grid(alpha=0.3)
        for e in (r for r in sw["rows"] if r.get("error")):
            ax.text(0.5, 0.5, "error, see table", transform=ax.transAxes, ha="center", color="#a00000")
            break
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return save(fig, out, name)


# ---- 4. token-by-token vs batched ------------------------------------------------------------


def study(rows: list[dict], out: Path) -> str:
    p = plt()
    ok = [r for r in rows if "error" not in r]
    meas = [r for r in ok if r.get("measured")]
    mod = [r for r in ok if not r.get("measured")]
    fig, (a1, a2) = p.subplots(1, 2, figsize=(12.5, 4.6))
    series = {}
    for r in meas:
        key = r["engine"] + (f", L={r['seq_len']}" if r["mode"] == "batched" else "")
        series.setdefault((r["mode"], r["engine"], r.get("seq_len") or 0, key), []).append(r)
    cmap = {"cpu-fast": "#4c72b0", "torch-step": "#55a868"}
    conv_colors = ["#c44e52", "#8172b2", "#937860", "#da8bc3"]
    ci = 0
    for (mode, eng, L, key), rr in sorted(series.items(), key=lambda kv: (kv[0][0] != "token", kv[0][1], kv[0][2])):
        rr = sorted(rr, key=lambda r: r["batch"])
        b = [r["batch"] for r in rr]
        if mode == "token":
            col, ls, mk = cmap.get(eng, "#333333"), "-", "o"
            name = f"{eng} (token by token, recurrence)"
        else:
            col, ls, mk = conv_colors[ci % len(conv_colors)], "--", "s"
            ci += 1
            name = f"{eng} L={L} (batched, FFT convolution)"
        a1.plot(b, [r["throughput_p50_tokens_per_s"] for r in rr], ls=ls, marker=mk, color=col, label=name)
        a2.plot(b, [r["p50_s"] for r in rr], ls=ls, marker=mk, color=col, label=name)
        a2.plot(b, [r["p99_s"] for r in rr], ls=":", lw=1, marker=mk, ms=3, color=col, alpha=0.8)
    a2.plot([], [], ls=":", lw=1, color="#555555", label="p99 (same colour, dotted)")
    markers = ["*", "D", "P", "X", "v", "^"]
    for i, r in enumerate(mod):
        lab = f"{r['engine']}, {r['mode']} (modelled)"
        xb = 0.85 if r["mode"] == "token" else 1.18     # token and pipelined side by side at B=1
        style = dict(marker=markers[i % len(markers)], ms=10, ls="none", mec="black", mew=0.5,
                     color="#dd8452" if "loihi" in r["engine"] else "#2ca02c", label=lab)
        a1.plot([xb], [r["throughput_tokens_per_s"]], **style)
        a2.plot([xb], [r["latency_s"]], **style)
    batches = sorted({r["batch"] for r in meas} | {1})
    from matplotlib.ticker import NullFormatter
    for ax in (a1, a2):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(batches)
        ax.set_xticklabels([str(b) for b in batches])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("batch (streams, or sequences for the convolution)")
        ax.grid(alpha=0.3, which="major")
    a1.set_ylabel("throughput (tokens/s), from the median call")
    a1.set_title("throughput vs batch (higher is better)", fontsize=10)
    a2.set_ylabel("latency (s), p50 solid, p99 dotted")
    a2.set_title("latency per token vs batch: one step (token) or one batch forward (conv)", fontsize=10)
    h, lab = a2.get_legend_handles_labels()
    fig.legend(h, lab, loc="lower center", ncol=3, fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.01))
    nrows = (len(lab) + 2) // 3
    fig.tight_layout(rect=(0, 0.045 * nrows + 0.02, 1, 1))
    return save(fig, out, "study")


# ---- 5. streaming latency distribution -------------------------------------------------------


def latency_hist(series: dict[str, list[float]], out: Path) -> str:
    p = plt()
    fig, ax = p.subplots(figsize=(7.5, 3.6))
    allv = np.concatenate([np.asarray(v) for v in series.values()]) * 1e6
    bins = np.logspace(np.log10(allv.min() * 0.8), np.log10(allv.max() * 1.2), 70)
    for (name, ts), c in zip(series.items(), (MEASURED, "#55a868", "#c44e52")):
        a = np.asarray(ts) * 1e6
        ax.hist(a, bins=bins, alpha=0.65, color=c, label=f"{name}: p50 {np.median(a):.0f} us, "
                                                          f"p99 {np.percentile(a, 99):.0f} us")
        ax.axvline(np.median(a), color=c, lw=1.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latency per token (us), batch 1, log scale")
    ax.set_ylabel("tokens (log scale)")
    ax.legend(fontsize=8.5)
    ax.grid(alpha=0.3)
    return save(fig, out, "latency")


# ---- 6. per-token trace ----------------------------------------------------------------------


def trace(P: np.ndarray, label: int, title: str, out: Path) -> str:
    p = plt()
    fig, ax = p.subplots(figsize=(8.5, 3.6))
    final = int(P[-1].argmax())
    for k in range(P.shape[1]):
        if k == label:
            ax.plot(P[:, k], lw=2.0, color="#c44e52", label=f"class {k} (true label)", zorder=3)
        elif k == final:
            ax.plot(P[:, k], lw=1.4, color="#4c72b0", label=f"class {k} (final prediction)", zorder=2)
        else:
            ax.plot(P[:, k], lw=0.7, color="#aaaaaa", zorder=1)
    ax.plot([], [], lw=0.7, color="#aaaaaa", label="other classes")
    ax.set_xlabel("token")
    ax.set_ylabel("softmax probability")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, P.shape[0] - 1)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8.5)
    ax.grid(alpha=0.3)
    return save(fig, out, "trace")
