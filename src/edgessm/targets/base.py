"""The protocol every execution target answers (see ARCHITECTURE.md, "One model, many executors").

    target  = targets.get("loihi2")         # target.config_class, target.capabilities: declared
    program = target.compile(model, spec, calibration=X, max_chips=2)   # = target.build(model, config, X)
    state   = program.init_state(batch)
    y, state = program.step(x_t, state)     # one token, every stream: (B, d_in) -> (B, d_out)
    Y       = program.run(X)                # (B, L, d_in) -> (B, L, d_out), = repeated step
    program.resources()                     # dict: cores / tiles / arrays / memory used
    program.cost(tokens=...)                # Cost, the assumptions named
    program.stats()                         # dict: counters since the last reset (overflows, spikes, ...)

The outputs of ``step``/``run`` are the prediction after every token (the network's
streaming readout), as float tensors in the model's units, whatever the target
computes inside. A new chip is a new folder under ``targets/`` that registers itself with
its config class (:class:`~.config.TargetConfig`) and :class:`~.config.Capabilities`.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ConfigError, UnknownNameError
from .config import Capabilities, TargetConfig


@dataclass
class Cost:
    """Modelled or measured cost of running a program token by token.

    All SI: joules, seconds, tokens per second, watts. ``assumptions`` names every
    constant used, with its value and source, so a reader can check or change it.
    """
    energy_per_token_j: float
    latency_per_token_s: float
    throughput_tokens_per_s: float
    power_w: float
    mode: str = "token"            # "token": one token of one stream at a time; "pipelined", "batched"
    measured: bool = False         # True for measured figures (cpu), False for modelled ones
    assumptions: dict[str, Any] = field(default_factory=dict)
    breakdown: dict[str, float] = field(default_factory=dict)  # energy per token by component, J

    def to_dict(self) -> dict:
        return {"energy_per_token_j": self.energy_per_token_j,
                "latency_per_token_s": self.latency_per_token_s,
                "throughput_tokens_per_s": self.throughput_tokens_per_s,
                "power_w": self.power_w, "mode": self.mode, "measured": self.measured,
                "breakdown": dict(self.breakdown), "assumptions": dict(self.assumptions)}


class Program(abc.ABC):
    """A model lowered to one target. Subclasses implement init_state/step/resources/cost."""

    target: str = "?"
    d_input: int
    d_output: int

    @abc.abstractmethod
    def init_state(self, batch: int = 1) -> Any: ...

    @abc.abstractmethod
    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]: ...

    def run(self, X: torch.Tensor) -> torch.Tensor:
        """(B, L, d_in) -> (B, L, d_out): the prediction after every token."""
        state = self.init_state(X.shape[0])
        ys = []
        for t in range(X.shape[1]):
            y, state = self.step(X[:, t], state)
            ys.append(y)
        return torch.stack(ys, 1)

    @abc.abstractmethod
    def resources(self) -> dict: ...

    @abc.abstractmethod
    def cost(self, tokens: int = 1) -> Cost:
        """The cost per token; targets that declare more than ``("token",)`` in
        ``capabilities.cost_modes`` take ``mode=`` (e.g. ``"pipelined"``)."""

    def stats(self) -> dict:
        return {}

    def spec_name(self) -> str | None:
        """Name of the quantization spec of the model this program runs (None: not quantized)."""
        return None

    def reset_stats(self) -> None:
        pass


class Target(abc.ABC):
    """An executor. Subclasses declare ``config_class`` (a TargetConfig dataclass) and
    ``capabilities``, and implement :meth:`build`."""
    name: str = "?"
    config_class: type[TargetConfig] = TargetConfig
    capabilities: Capabilities = Capabilities()

    def config(self, spec=None, **options) -> TargetConfig:
        """The typed config: defaults, then `options` (typed values or command-line text), then
        `spec` (what a spec means here: ``config_class.SPEC_FIELD``)."""
        return self.config_class.from_dict(options, strings=True).with_spec(spec)

    def compile(self, model, spec=None, calibration=None, **options) -> Program:
        """``build(model, config(spec, **options), calibration)``: the one-call form for Python.
        calibration: training inputs (B, L, d_in), used when ``capabilities.needs_calibration``."""
        return self.build(model, self.config(spec, **options), calibration)

    @abc.abstractmethod
    def build(self, model, config: TargetConfig, calibration=None) -> Program:
        """`model` lowered with a validated config of ``config_class``."""

    def hw_wrap(self, device: str | None = None, fields: dict | None = None):
        """``wrap`` for hardware-aware training (``capabilities.hw_training``): float model ->
        model that trains through this target's numerics. device: a preset or file of the
        target; fields: typed config fields."""
        raise ConfigError(f"target {self.name!r} has no hardware-aware training; targets that have: "
                          + ", ".join(n for n in available() if _REGISTRY[n].capabilities.hw_training))


_REGISTRY: dict[str, type[Target]] = {}


def _folders() -> list[str]:
    """The target folders (subpackages of ``targets/``): each registers its target on import."""
    import pkgutil
    from pathlib import Path
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.ispkg)


def register(name: str):
    """Class decorator: make a Target available as ``targets.get(name)``."""
    def deco(cls):
        if cls.config_class is TargetConfig or cls.config_class.TARGET != name:
            raise TypeError(f"target {name!r} must declare config_class, a TargetConfig subclass "
                            f"with TARGET = {name!r}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def get(name: str) -> Target:
    """The target called `name` (imports its folder on first use)."""
    if name not in _REGISTRY and name in _folders():
        import importlib
        try:
            importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{name}":
                raise
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown target {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]()


def available() -> list[str]:
    import importlib
    for n in _folders():
        try:
            importlib.import_module(f"{__package__}.{n}")
        except ModuleNotFoundError:
            pass
    return sorted(_REGISTRY)


@torch.no_grad()
def evaluate_program(program: Program, dataset, batch_size: int = 256, limit: int | None = None,
                     progress: bool = False) -> dict:
    """Accuracy of a program's prediction after the last token, over a SequenceDataset."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    correct = 0
    it = range(0, n, batch_size)
    if progress:
        import sys
        from tqdm import tqdm
        it = tqdm(it, desc=f"{program.target}", unit="batch", leave=False, file=sys.stderr)
    for s in it:
        X, y = dataset.x[s:min(s + batch_size, n)], dataset.y[s:min(s + batch_size, n)]
        Y = program.run(X)
        correct += (Y[:, -1].argmax(-1) == y).sum().item()
    return {"accuracy": correct / max(n, 1), "n": n}
