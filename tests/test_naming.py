"""One naming convention (edgessm.naming) for tasks, shipped models and configs; renamed
configs still load under their old names, with a deprecation message."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edgessm import io, naming
from edgessm.data import TASKS
from edgessm.resources import read_toml
from edgessm.train.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_the_convention():
    assert naming.model_name("fsdd-01", "ternary") == "fsdd01-ternary"
    assert naming.config_name("fsdd-01", "ternary") == "fsdd01_ternary.toml"
    assert naming.config_name("smnist") == "smnist.toml"
    assert naming.follows("model", "fsdd01-ternary", "fsdd-01")
    assert not naming.follows("model", "fsdd-01-ternary", "fsdd-01")
    assert not naming.follows("config", "smnist-standard.toml", "smnist")
    assert not naming.follows("config", "psmnist_qaft.toml", "smnist")     # another task's prefix


def test_tasks_models_and_configs_follow_it():
    assert all(naming.TASK.match(t) for t in TASKS)
    for name, path in io.shipped_models().items():
        task = io.read_meta(path)["run"]["data"]["task"]
        assert naming.follows("model", name, task), (name, task)
    files = sorted(CONFIGS.glob("*.toml"))
    assert len(files) >= 10
    for p in files:
        task = read_toml(p)["data"]["task"]
        assert naming.follows("config", p.name, task), (p.name, task)
    for old, new in naming.RENAMED["config"].items():
        assert not (CONFIGS / old).exists() and (CONFIGS / new).is_file()


def test_an_old_config_name_loads_with_a_deprecation_message(caplog):
    lg = logging.getLogger("edgessm")
    lg.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="edgessm"):
            old = load_config(CONFIGS / "smnist-standard.toml")
    finally:
        lg.removeHandler(caplog.handler)
    assert old.to_dict() == load_config(CONFIGS / "smnist_standard.toml").to_dict()
    assert "'smnist-standard.toml' is deprecated" in caplog.text and "smnist_standard.toml" in caplog.text
    with pytest.raises(Exception, match="not found"):
        load_config(CONFIGS / "no-such-config.toml")
