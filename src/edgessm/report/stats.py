"""Confidence intervals of accuracies measured on n test samples."""
from __future__ import annotations

import math


def wilson(acc, n, z: float = 1.959964) -> tuple[float, float] | None:
    """The Wilson score interval (95 % for the default z) of a proportion `acc` seen on `n`
    independent samples; None when n is 0 or unknown. Unlike the normal approximation it stays
    inside [0, 1] and is not empty at 0 % or 100 %."""
    if acc is None or not n:
        return None
    n = int(n)
    p = min(max(float(acc), 0.0), 1.0)
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def ci_text(acc, n) -> str:
    ci = wilson(acc, n)
    return "" if ci is None else f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}%"
