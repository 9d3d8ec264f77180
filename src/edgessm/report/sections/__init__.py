"""The report's sections, one module each, in page order. A section module has ``KEY``,
``TITLE``, ``measure(ctx) -> dict`` (the data: rows and figures' numbers, all JSON-able,
optionally "errors" and "notes"; raising makes the section an error entry) and
``render(ctx, data) -> {"html", "caption", "figures"}`` (the page fragment and the PNG files
it wrote under ctx.out)."""
from . import accuracy, cost, crossbar, latency, loihi2, quantization, robustness, study, trace

SECTIONS = (accuracy, quantization, cost, loihi2, crossbar, robustness, study, latency, trace)
KEYS = tuple(s.KEY for s in SECTIONS)

__all__ = ["SECTIONS", "KEYS"]
