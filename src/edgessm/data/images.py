"""Augmentation of training images read as pixel sequences (the sCIFAR tasks).

A sequence of ``side * side`` tokens in row-major order is an image; the augmentation works on
the image and gives back the sequence, so the model still reads one pixel per token:

- ``flip``: each image mirrored left-right with probability 1/2 (each row of pixels is read
  in reverse order);
- ``shift_px``: each image translated by (dy, dx), each uniform in [-shift_px, shift_px] pixels; the
  pixels moved in at the border are the data set's mean colour (0 after the normalization),
  the pixels moved out are dropped. This is the "pad by `shift_px`, crop at random" of image
  classifiers, with the padding at the mean colour.

A batch's draws come from ``numpy.random.default_rng(key)`` (``key``: non-negative ints, e.g.
(seed, epoch, step, rank)) in a fixed order, all flips then all shifts, so the augmented batch
is a function of its rows and key alone and a resumed run redraws it exactly.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from edgessm.errors import ConfigError

__all__ = ["ImageAugment", "augment_images", "MAX_SHIFT"]

MAX_SHIFT = 16    # pixels; half the side of a CIFAR image


@dataclasses.dataclass(frozen=True)
class ImageAugment:
    """Augmentation of training images (off by default); each field ``f`` is the ``[data]``
    field ``aug_f``. See the module's description."""

    flip: bool = False
    shift_px: int = 0

    def __post_init__(self):
        if not isinstance(self.flip, (bool, np.bool_)):
            raise ConfigError(f"image augmentation flip must be true or false, got {self.flip!r}")
        if isinstance(self.shift_px, bool) or not isinstance(self.shift_px, (int, np.integer)) \
                or not 0 <= self.shift_px <= MAX_SHIFT:
            raise ConfigError(f"image augmentation shift_px must be an integer number of pixels in "
                              f"[0, {MAX_SHIFT}], got {self.shift_px!r}")

    @property
    def active(self) -> bool:
        return bool(self.flip or self.shift_px)


def augment_images(x: torch.Tensor, a: ImageAugment, key) -> torch.Tensor:
    """The augmented copy of `x` (B, side * side, C), sequences of square images in row-major
    order, for the batch key `key` (see the module). `x` is not changed."""
    if x.dim() != 3:
        raise ConfigError(f"augment_images takes (B, side * side, C) sequences, got shape {tuple(x.shape)}")
    B, L, C = x.shape
    side = math.isqrt(L)
    if side * side != L:
        raise ConfigError(f"augment_images: a sequence of {L} tokens is not a square image")
    s = a.shift_px
    if s >= side:
        raise ConfigError(f"augment_images: a shift of {s} pixels empties a {side}x{side} image")
    rng = np.random.default_rng([int(k) for k in key])
    flip = rng.random(B) < 0.5 if a.flip else np.zeros(B, dtype=bool)
    d = rng.integers(-s, s + 1, size=(B, 2)) if s else np.zeros((B, 2), np.int64)
    pix = np.arange(side)
    rows = pix[None, :] - d[:, :1]                        # out[i, j] = flipped(in)[i - dy, j - dx]
    cols = pix[None, :] - d[:, 1:]
    inside = ((rows >= 0) & (rows < side))[:, :, None] & ((cols >= 0) & (cols < side))[:, None, :]
    cols = np.where(flip[:, None], side - 1 - cols, cols)  # flipped(in)[i, j] = in[i, side - 1 - j]
    rows, cols = np.clip(rows, 0, side - 1), np.clip(cols, 0, side - 1)
    img = x.reshape(B, side, side, C)
    b = torch.arange(B)[:, None, None]
    out = img[b, torch.from_numpy(rows)[:, :, None], torch.from_numpy(cols)[:, None, :]]
    out = out * torch.from_numpy(inside).to(x.dtype).unsqueeze(-1)
    return out.reshape(B, L, C)
