"""Seeded train/val split of an official train set (shared by every task)."""

from __future__ import annotations

import numpy as np


def split_indices(n: int, split: str, val_fraction: float, seed: int) -> np.ndarray:
    """Sorted indices into an official train set of ``n`` items for ``split`` "train" or "val".

    "val" is the first ``round(val_fraction * n)`` entries of
    ``np.random.default_rng(seed).permutation(n)``, "train" the rest; both sorted so
    they keep the original order.
    """
    n_val = int(round(val_fraction * n))
    perm = np.random.default_rng(seed).permutation(n)
    idx = perm[:n_val] if split == "val" else perm[n_val:]
    return np.sort(idx)
