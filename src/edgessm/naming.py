"""One naming convention for tasks, shipped models and run configs, and the old names that
still load (with a deprecation message on the ``edgessm`` logger).

    task     lowercase words joined by "-"                        fsdd-01, scifar-gray
    model    the task's words run together, then "-VARIANT"...    fsdd01-ternary, smnist-loihi2
    config   the model name with "_" for "-", ".toml"             fsdd01_ternary.toml

e.g. task ``fsdd-01`` trained with the ``ternary`` variant: model ``fsdd01-ternary``, config
``configs/fsdd01_ternary.toml``; the plain run of a task: model ``smnist``, ``configs/smnist.toml``.
"""
from __future__ import annotations

import logging
import re

TASK = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
MODEL = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
CONFIG = re.compile(r"^[a-z0-9]+(_[a-z0-9]+)*\.toml$")

# old name -> new name, per kind; an old name loads the new one with a deprecation message
# (train.config.load_config for configs)
RENAMED: dict[str, dict[str, str]] = {
    "config": {"smnist-standard.toml": "smnist_standard.toml", "scifar-gray.toml": "scifargray.toml"},
}


def task_stem(task: str) -> str:
    """The task's words run together: the first part of its models' and configs' names."""
    return task.replace("-", "")


def model_name(task: str, *variant: str) -> str:
    return "-".join((task_stem(task),) + variant)


def config_name(task: str, *variant: str) -> str:
    return model_name(task, *variant).replace("-", "_") + ".toml"


def follows(kind: str, name: str, task: str) -> bool:
    """Whether `name` (a model, or a config file name) follows the convention for `task`."""
    pattern, sep = (MODEL, "-") if kind == "model" else (CONFIG, "_")
    if not pattern.match(name):
        return False
    stem = name[:-len(".toml")] if kind == "config" else name
    return stem == task_stem(task) or stem.startswith(task_stem(task) + sep)


def current(kind: str, name: str) -> str:
    """`name`, or the name it was renamed to (logging a deprecation message)."""
    new = RENAMED[kind].get(name)
    if new is None:
        return name
    logging.getLogger("edgessm").warning(
        f"the {kind} name {name!r} is deprecated and will be removed; use {new!r}")
    return new
