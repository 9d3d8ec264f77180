"""train --set SECTION.KEY=VALUE overrides and TensorBoard logging beside metrics.jsonl."""
import importlib.util
import json

import pytest

from edgessm import cli
from edgessm.errors import ConfigError
from edgessm.train.tracking import apply_sets

from conftest import needs_mnist

TINY_TOML = """
[model]
preset = "neuromorphic"
d_model = 8
d_state = 4
n_layers = 1
[data]
task = "smnist"
limit_train = 64
limit_val = 16
limit_test = 16
[train]
epochs = 3
batch_size = 32
seed = 3
[hw]
device = "default"
"""


def test_apply_sets_types_and_errors():
    raw = {"model": {"d_state": 4}, "train": {"lr": 0.01}, "hw": {"device": "default"}}
    out = apply_sets(raw, ["train.lr=3e-3", "model.d_state=16", "model.activation=gelu",
                           "train.epochs=2", "model.learn_B=false", "hw.write_noise_sigma_us=15"])
    assert out["train"]["lr"] == 0.003 and out["model"]["d_state"] == 16
    assert out["model"]["activation"] == "gelu" and out["train"]["epochs"] == 2
    assert out["model"]["learn_B"] is False and out["hw"]["write_noise_sigma_us"] == 15
    assert raw["train"]["lr"] == 0.01                                   # the input is not changed
    for bad, msg in [("train.nosuch=1", "no field 'nosuch'"), ("lr=1", "SECTION.KEY=VALUE"),
                     ("train.lr", "SECTION.KEY=VALUE"), ("quant.bits=4", "no \\[quant\\] table")]:
        with pytest.raises(ConfigError, match=msg):
            apply_sets(raw, [bad])


@needs_mnist
def test_train_set_overrides_and_tensorboard(tmp_path, capsys):
    cfgp = tmp_path / "tiny.toml"
    cfgp.write_text(TINY_TOML.replace('[hw]\ndevice = "default"\n', ""))
    out = tmp_path / "run"
    argv = ["train", str(cfgp), "--out", str(out), "--set", "train.epochs=1", "--set", "model.d_state=2",
            "--json", "--no-progress"]
    have_tb = importlib.util.find_spec("tensorboard") is not None
    if have_tb:
        argv.append("--tensorboard")
    assert cli.main(argv) == 0
    capsys.readouterr()
    run = json.loads((out / "best" / "model.json").read_text())
    assert run["run"]["train"]["epochs"] == 1 and run["config"]["d_state"] == 2
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2                                              # one epoch + final
    if not have_tb:
        pytest.skip("tensorboard not installed (pip install 'edgessm[tensorboard]'): --set checked, "
                    "TensorBoard logging not")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(out / "tensorboard"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert {"train_loss", "val_acc", "final/test_accuracy"} <= tags
    assert ea.Scalars("val_acc")[0].value == pytest.approx(json.loads(lines[0])["val_acc"])


def test_train_set_bad_field_fails_before_training(tmp_path, capsys):
    cfgp = tmp_path / "tiny.toml"
    cfgp.write_text(TINY_TOML)
    assert cli.main(["train", str(cfgp), "--out", str(tmp_path / "run"), "--set", "train.nosuch=1"]) == 2
    assert "nosuch" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
