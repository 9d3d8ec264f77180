"""A loaded checkpoint and what it records about itself, read once."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError


@dataclass
class Checkpoint:
    """A model with its name and provenance.

    name: what the user called it (a path or a shipped name; "<model>" for a model built in
    Python); task: the task it was trained on (its run config's [data] task), None if not
    recorded; quant_spec: the name of its quantization spec (None: a float model); meta: the
    checkpoint's metadata (run config, metrics, hw, versions; empty for an unsaved model)."""
    model: Any
    name: str
    task: str | None = None
    quant_spec: str | None = None
    meta: dict = field(default_factory=dict)

    @classmethod
    def load(cls, source, name: str | None = None) -> "Checkpoint":
        """A checkpoint directory or shipped model name (or an already loaded model)."""
        from .. import io
        if isinstance(source, (str, bytes, os.PathLike)):
            return cls.from_model(io.load(source), name or str(source))
        return cls.from_model(source, name)

    @classmethod
    def from_model(cls, model, name: str | None = None) -> "Checkpoint":
        from ..io import checkpoint_meta, trained_task
        from ..quant import QuantSequenceModel
        spec = model.spec.name if isinstance(model, QuantSequenceModel) else None
        return cls(model=model, name=name or "<model>", task=trained_task(model), quant_spec=spec,
                   meta=checkpoint_meta(model))

    @property
    def quantized(self) -> bool:
        return self.quant_spec is not None

    @property
    def run_config(self) -> dict | None:
        """The run config the checkpoint was trained with (None if not recorded)."""
        return self.meta.get("run")

    def task_for(self, task: str | None = None) -> str:
        """`task`, else the task the checkpoint was trained on."""
        if task:
            return task
        if not self.task:
            raise ConfigError("no --task given and the checkpoint does not record its task; pass --task T")
        return self.task


def task_for(model, task: str | None = None) -> str:
    """--task, else the task a loaded model's checkpoint was trained on."""
    if task:
        return task
    return Checkpoint.from_model(model).task_for(None)
