"""`edgessm report`: a self-contained HTML report with PNG plots (nothing imports this)."""
from .build import build_report

__all__ = ["build_report"]
