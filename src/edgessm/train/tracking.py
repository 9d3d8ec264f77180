"""Experiment tracking beside metrics.jsonl, and --set overrides of a run config.

``tensorboard(out_dir)``: a callback for ``train(..., on_metrics=...)`` that writes every numeric
figure of each metrics record as a TensorBoard scalar under ``OUT/tensorboard`` (the optional
``tensorboard`` extra; ``tensorboard --logdir runs/``).
``apply_sets(raw, ["train.lr=0.003", "model.d_state=32"])``: a config dict with overrides of any
field of [model], [data] and [train] (or of another table the config has), the values parsed as
TOML literals (``3e-3``, ``true``, ``"gelu"``; a bare word is a string).
"""
from __future__ import annotations

import copy
import dataclasses
import tomllib

from ..errors import ConfigError, EdgessmError


class TrackingUnavailableError(EdgessmError):
    """The tensorboard package is missing."""


def tensorboard(out_dir):
    """(callback, close): scalars of each metrics record into OUT/tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrackingUnavailableError("--tensorboard needs the tensorboard package: "
                                       "pip install 'edgessm[tensorboard]'") from None
    from pathlib import Path
    w = SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard"))

    def on_metrics(rec: dict):
        if "final" in rec:
            for k, v in (rec["final"] or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    w.add_scalar(f"final/{k}", v, 0)
        else:
            step = int(rec.get("epoch", 0))
            for k, v in rec.items():
                if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    w.add_scalar(k, v, step)
        w.flush()
    return on_metrics, w.close


def _value(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text          # a bare word: a string


def apply_sets(raw: dict, sets) -> dict:
    """`raw` (a config as read from TOML) with the SECTION.KEY=VALUE overrides applied; unknown
    sections or keys are a ConfigError naming the known ones."""
    from ..ssm.network import ModelConfig
    from .config import DataConfig, TrainConfig
    known = {"model": {f.name for f in dataclasses.fields(ModelConfig)} | {"preset"},
             "data": {f.name for f in dataclasses.fields(DataConfig)},
             "train": {f.name for f in dataclasses.fields(TrainConfig)}}
    out = copy.deepcopy(raw)
    for item in sets or []:
        key, eq, text = str(item).partition("=")
        section, dot, field = key.strip().partition(".")
        if not eq or not dot or not section or not field:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. train.lr=0.003")
        if section in known:
            if field not in known[section]:
                raise ConfigError(f"--set {item!r}: [{section}] has no field {field!r}; known: "
                                  f"{', '.join(sorted(known[section]))}")
        elif not isinstance(out.get(section), dict):
            raise ConfigError(f"--set {item!r}: no [{section}] table; sections: model, data, train"
                              + "".join(f", {k}" for k, v in out.items() if isinstance(v, dict) and k not in known))
        out.setdefault(section, {})[field] = _value(text.strip())
    return out
