"""Weight averaging for ``[train] ema``: an exponential moving average of the weights.

After every optimizer step each averaged parameter moves toward the trained one::

    avg <- d avg + (1 - d) w,     d = min(decay, (1 + n) / (10 + n))

with n the number of steps so far: an exponentially weighted form of [Pol92]'s iterate
averaging, with the warm-up of TensorFlow's ExponentialMovingAverage (its num_updates), so the
early average is not dominated by the initial weights. Buffers (e.g. running ranges of a
quantization- or hardware-aware model) are copied, not averaged. Validation, ``OUT/best`` and
the final test use the averaged model; the optimizer keeps training the raw weights, which
``OUT/last`` holds with the average beside them (``train.checkpoint``), so a resume continues
both exactly.

[Pol92] B. T. Polyak, A. B. Juditsky, "Acceleration of stochastic approximation by averaging",
SIAM J. Control and Optimization 30(4), 838-855 (1992).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError


class WeightEMA:
    """The averaged copy of `model` (:attr:`model`, eval mode, no gradients)."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ConfigError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.model = copy.deepcopy(model)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """After optimizer step number `step` (0-based) of `model`."""
        d = min(self.decay, (1 + step) / (10 + step))
        for a, w in zip(self.model.parameters(), model.parameters()):
            a.mul_(d).add_(w.detach(), alpha=1 - d)
        for a, b in zip(self.model.buffers(), model.buffers()):
            a.copy_(b)

    def state(self) -> dict:
        """name -> tensor of the averaged parameters and buffers."""
        return dict(self.model.state_dict())

    def load(self, state: dict | None, where) -> None:
        """Restore :meth:`state` from the checkpoint at `where`."""
        mine = self.model.state_dict()
        if not state or set(state) != set(mine):
            raise CheckpointError(f"cannot resume from {where}: it holds no averaged weights for this model "
                                  f"([train] ema was off or the model differs); resume with the run's own config")
        with torch.no_grad():
            for k, v in mine.items():
                v.copy_(state[k])
