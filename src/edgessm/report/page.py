"""The report's HTML page, its tables and unit formatting, and the machine description."""
from __future__ import annotations

import html
import os
import platform
from collections.abc import Callable, Sequence

# ---- units (SI inside, converted only here) -------------------------------------------------


def _si(v, unit: str, prefixes=((1e-15, "f"), (1e-12, "p"), (1e-9, "n"), (1e-6, "u"), (1e-3, "m"),
                                 (1.0, ""), (1e3, "k"), (1e6, "M"), (1e9, "G"))) -> str:
    if v is None:
        return "-"
    v = float(v)
    if v == 0:
        return f"0 {unit}"
    a = abs(v)
    scale, p = prefixes[0]
    for s, q in prefixes:
        if a >= s:
            scale, p = s, q
    x = v / scale
    return f"{x:.3g} {p}{unit}" if abs(x) < 100 else f"{x:.0f} {p}{unit}"


def energy(j) -> str:
    return _si(j, "J")


def seconds(s) -> str:
    return _si(s, "s", ((1e-9, "n"), (1e-6, "u"), (1e-3, "m"), (1.0, "")))


def rate(r) -> str:
    return _si(r, "tokens/s", ((1.0, ""), (1e3, "k"), (1e6, "M"), (1e9, "G")))


def watts(w) -> str:
    return _si(w, "W", ((1e-6, "u"), (1e-3, "m"), (1.0, "")))


def pct(a) -> str:
    return "-" if a is None else f"{100 * float(a):.1f}%"


def num(v, fmt: str = "{:.4g}") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return fmt.format(v)
    return str(v)


# ---- machine --------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"cpu_model": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable,
            "memory_bytes": mem, "load_average_1_5_15min": load, "platform": platform.platform(),
            "nice": os.nice(0) if hasattr(os, "nice") else None}


def versions() -> dict:
    import numpy
    import torch
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    try:
        import matplotlib
        out["matplotlib"] = matplotlib.__version__
    except ImportError:
        pass
    try:
        from importlib.metadata import version
        out["edgessm"] = version("edgessm")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        out["edgessm"] = "unknown"
    return out


# ---- HTML -----------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1150px;margin:2em auto;
     padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{margin-top:2em;border-bottom:1px solid #ccc;padding-bottom:.2em}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}
table{border-collapse:collapse;font-size:13px;margin:.6em 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f0f0f0} td.l,th.l{text-align:left}
.err{color:#a00}.note{color:#555;font-size:.92em}.caption{margin:.3em 0 .6em 0}
.meas{background:#e8f1fb}.mod{background:#fdf1e4}.pub{background:#efefef}
code{background:#f4f4f4;padding:1px 4px}
.toc a{margin-right:1em}
"""


def esc(s) -> str:
    return html.escape(str(s))


def table(rows: Sequence[dict], columns: Sequence[tuple], row_class: Callable[[dict], str] | None = None,
          header: bool = True) -> str:
    """columns: (header, key or callable(row) -> str, align 'l' or 'r')."""
    if not rows:
        return "<p class='note'>(no rows)</p>"
    head = "".join(f"<th class='{a}'>{esc(h)}</th>" for h, _, a in columns)
    head = f"<tr>{head}</tr>" if header else ""
    body = []
    for r in rows:
        cells = []
        for _, key, a in columns:
            v = key(r) if callable(key) else r.get(key)
            v = "-" if v is None else v
            cls = a + (" err" if isinstance(v, str) and v.startswith(("error", "does not fit")) else "")
            cells.append(f"<td class='{cls}'>{esc(v)}</td>")
        rc = f" class='{row_class(r)}'" if row_class else ""
        body.append(f"<tr{rc}>{''.join(cells)}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def published_table(figs, beside: tuple[str, dict] | None = None) -> str:
    """Published figures (report.published.Published) as labelled rows with their citations;
    beside = (column header, {figure key: edgessm's figure as text}) adds edgessm's own."""
    if not figs:
        return ""
    rows = [{"what": f.what, "value": f.text(), "source": f.source, "note": f.note,
             "beside": (beside[1].get(f.key, "-") if beside else None)} for f in figs]
    cols = [("published figure", "what", "l"), ("value (published)", "value", "r"), ("source", "source", "l")]
    if beside:
        cols.append((beside[0], "beside", "r"))
    cols.append(("note", "note", "l"))
    cites = {f.source: f.citation for f in figs}
    return ("<p><b>Published</b> (from the papers, not computed by edgessm):</p>"
            + table(rows, cols, row_class=lambda r: "pub")
            + "<p class='note'>" + "<br>".join(f"{esc(k)} {esc(c)}" for k, c in cites.items()) + "</p>")


def kv_table(d: dict) -> str:
    return table([{"k": k, "v": v} for k, v in d.items()], [("", "k", "l"), ("", "v", "l")], header=False)


def render(title: str, header_html: str, sections: list[dict]) -> str:
    toc = " ".join(f"<a href='#{esc(s['key'])}'>{i + 1}. {esc(s['title'])}</a>" for i, s in enumerate(sections))
    out = ["<!doctype html><html><head><meta charset='utf-8'>",
           f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{esc(title)}</h1>", header_html, f"<p class='toc'>{toc}</p>"]
    for i, s in enumerate(sections):
        out.append(f"<h2 id='{esc(s['key'])}'>{i + 1}. {esc(s['title'])}</h2>")
        for e in s.get("errors", []):
            out.append(f"<p class='err'><b>error</b> ({esc(e.get('where', ''))}): {esc(e['error'])}</p>")
        for png in s.get("figures") or ([s["png"]] if s.get("png") else []):
            if png:
                out.append(f"<img src='{esc(png)}' alt='{esc(s['title'])}'>")
        if s.get("caption"):
            out.append(f"<p class='caption'>{esc(s['caption'])}</p>")
        out.append(s.get("html", ""))
        for n in s.get("notes", []):
            out.append(f"<p class='note'>{esc(n)}</p>")
        out.append(f"<p class='note'>section built in {s.get('seconds', 0):.1f} s</p>")
    out.append("</body></html>")
    return "\n".join(out)
