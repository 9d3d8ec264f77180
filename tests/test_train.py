"""Training loop: reproducibility, checkpoints, resume, time budget, DDP, config errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import edgessm as es
from edgessm.train import from_dict, load_config, train

from conftest import needs_mnist

ROOT = Path(__file__).resolve().parents[1]

TINY = {"model": {"preset": "neuromorphic", "d_model": 8, "d_state": 4, "n_layers": 1},
        "data": {"task": "smnist", "limit_train": 128, "limit_val": 32, "limit_test": 32},
        "train": {"epochs": 2, "batch_size": 32, "seed": 3, "warmup_epochs": 0.5}}


def _weights(path):
    return es.load(path).state_dict()


def _same(a, b, atol=0.0):
    return all(torch.allclose(a[k], b[k], rtol=0, atol=atol) for k in a)


@needs_mnist
def test_train_writes_checkpoints_and_is_reproducible(tmp_path):
    cfg = from_dict(TINY)
    r1 = train(cfg, tmp_path / "a", progress=False)
    assert 0 <= r1["test_accuracy"] <= 1 and r1["test_n"] == 32
    lines = [json.loads(l) for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines[:2]] == [1, 2] and "final" in lines[2]
    assert lines[0]["samples_per_s"] > 0
    meta = json.loads((tmp_path / "a" / "best" / "model.json").read_text())
    assert meta["metrics"]["test_accuracy"] == r1["test_accuracy"]
    assert meta["run"]["data"]["task"] == "smnist"
    train(from_dict(TINY), tmp_path / "b", progress=False)
    assert _same(_weights(tmp_path / "a" / "last"), _weights(tmp_path / "b" / "last"))


@needs_mnist
def test_time_budget_then_resume_equals_uninterrupted(tmp_path):
    full = train(from_dict(TINY), tmp_path / "full", progress=False)
    stopped = train(from_dict(TINY), tmp_path / "part", max_minutes=1e-6, progress=False)
    assert stopped["stopped"] and stopped["step_in_epoch"] == 1
    assert (tmp_path / "part" / "last" / "trainer.safetensors").is_file()
    import json
    loss, correct, seen, before = json.loads((tmp_path / "part" / "last" / "trainer.json").read_text())["partial_sums"]
    assert seen == TINY["train"]["batch_size"] and before > 0     # the stopped epoch's time so far
    resumed = train(from_dict(TINY), tmp_path / "part", resume=True, progress=False)
    assert resumed["test_accuracy"] == full["test_accuracy"]
    # the resumed epoch's time and rate count its steps before the stop too
    rec = json.loads((tmp_path / "part" / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["epoch_s"] >= before
    assert rec["samples_per_s"] * rec["epoch_s"] == pytest.approx(TINY["data"]["limit_train"], rel=1e-6)
    assert _same(_weights(tmp_path / "full" / "last"), _weights(tmp_path / "part" / "last"))


@needs_mnist
def test_warm_start_records_its_origin_and_resumes_exactly(tmp_path):
    """--init: the run starts from the checkpoint's weights, every checkpoint records where
    from, and a stopped warm-started run resumes (without --init again) to the same weights."""
    train(from_dict(TINY), tmp_path / "first", progress=False)
    origin = str(tmp_path / "first" / "best")
    full = train(from_dict(TINY), tmp_path / "full", init=origin, progress=False)
    assert not _same(_weights(tmp_path / "full" / "last"), _weights(tmp_path / "first" / "last"))
    for name in ("best", "last"):
        assert es.io.read_meta(tmp_path / "full" / name)["init_from"] == origin
    assert "init_from" not in es.io.read_meta(tmp_path / "first" / "best")
    stopped = train(from_dict(TINY), tmp_path / "part", init=origin, max_minutes=1e-6, progress=False)
    assert stopped["stopped"]
    resumed = train(from_dict(TINY), tmp_path / "part", resume=True, progress=False)
    assert resumed["test_accuracy"] == full["test_accuracy"]
    assert _same(_weights(tmp_path / "full" / "last"), _weights(tmp_path / "part" / "last"))
    assert es.io.read_meta(tmp_path / "part" / "best")["init_from"] == origin
    # with a learning rate of ~0 the run ends where it started: the weights do come from --init
    still = json.loads(json.dumps(TINY))
    still["train"].update(lr=1e-12, ssm_lr=0.0, epochs=1)
    train(from_dict(still), tmp_path / "still", init=origin, progress=False)
    assert _same(_weights(tmp_path / "still" / "last"), _weights(origin), atol=1e-9)


@needs_mnist
def test_warm_start_may_change_the_readout_and_dropout_only(tmp_path):
    """--init with [model] fields that hold no weights (readout, dropout, its tying) set otherwise: the run
    trains the checkpoint's weights under the new ones, and a stop resumes (the config builds
    the same model); a field that shapes the weights is refused before anything is written."""
    train(from_dict(TINY), tmp_path / "first", progress=False)
    origin = str(tmp_path / "first" / "best")
    assert es.load(origin).config.readout == "last"
    mean = json.loads(json.dumps(TINY))
    mean["model"].update(readout="mean", dropout=0.2, tie_dropout=True)
    still = json.loads(json.dumps(mean))
    still["train"].update(lr=1e-12, ssm_lr=0.0, epochs=1)
    train(from_dict(still), tmp_path / "still", init=origin, progress=False)
    got = es.load(tmp_path / "still" / "last")
    assert (got.config.readout, got.config.dropout, got.config.tie_dropout) == ("mean", 0.2, True)
    assert _same(got.state_dict(), _weights(origin), atol=1e-9)
    full = train(from_dict(mean), tmp_path / "full", init=origin, progress=False)
    stopped = train(from_dict(mean), tmp_path / "part", init=origin, max_minutes=1e-6, progress=False)
    assert stopped["stopped"]
    resumed = train(from_dict(mean), tmp_path / "part", resume=True, progress=False)
    assert resumed["test_accuracy"] == full["test_accuracy"]
    assert _same(_weights(tmp_path / "full" / "last"), _weights(tmp_path / "part" / "last"))
    wider = json.loads(json.dumps(TINY))
    wider["model"]["d_model"] = 16
    with pytest.raises(es.ConfigError, match=r"\[model\] d_model = 16 differs from the checkpoint's 8"):
        train(from_dict(wider), tmp_path / "wider", init=origin, progress=False)
    assert not (tmp_path / "wider").exists()


def _ema_cfg(decay=0.9):
    c = json.loads(json.dumps(TINY))
    c["train"]["ema"] = decay
    c["train"]["select"] = "last"              # OUT/best: the average at the end
    return from_dict(c)


@needs_mnist
def test_ema_keeps_the_average_as_best_and_resumes_exactly(tmp_path):
    """[train] ema: OUT/best and the test are the averaged weights, OUT/last the trained ones
    with the average beside them; a run stopped mid-epoch resumes to the same average."""
    from edgessm.train.checkpoint import load_trainer
    from edgessm.train.ema import WeightEMA
    from edgessm.train.loop import make_optimizer
    full = train(_ema_cfg(), tmp_path / "full", progress=False)
    best, last = _weights(tmp_path / "full" / "best"), _weights(tmp_path / "full" / "last")
    assert not _same(best, last)                       # the average is not the trained weights
    net = es.load(tmp_path / "full" / "last")
    info = load_trainer(tmp_path / "full" / "last", make_optimizer(net, _ema_cfg()))
    assert set(info["ema"]) == set(best) and _same(info["ema"], best)
    # the average is the formula's: one more step by hand moves it toward the weights
    avg = WeightEMA(net, 0.9)
    avg.load(info["ema"], "here")
    step = info["global_step"]
    avg.update(net, step)
    d = min(0.9, (1 + step) / (10 + step))
    for k, p in avg.model.named_parameters():
        assert torch.allclose(p, d * best[k] + (1 - d) * last[k], rtol=0, atol=1e-6)
    stopped = train(_ema_cfg(), tmp_path / "part", max_minutes=1e-6, progress=False)
    assert stopped["stopped"]
    resumed = train(_ema_cfg(), tmp_path / "part", resume=True, progress=False)
    assert resumed["test_accuracy"] == full["test_accuracy"]
    assert _same(_weights(tmp_path / "full" / "best"), _weights(tmp_path / "part" / "best"))
    assert _same(_weights(tmp_path / "full" / "last"), _weights(tmp_path / "part" / "last"))
    # a run saved without an average cannot resume with one: a clear error, nothing written
    train(from_dict(TINY), tmp_path / "plain", max_minutes=1e-6, progress=False)
    before = (tmp_path / "plain" / "last" / "trainer.json").read_text()
    with pytest.raises(es.CheckpointError, match="no averaged weights"):
        train(_ema_cfg(), tmp_path / "plain", resume=True, progress=False)
    assert (tmp_path / "plain" / "last" / "trainer.json").read_text() == before


@pytest.mark.parametrize("decay,msg", [(1.0, r"ema must be .* < 1"), (-0.1, r"ema must be a finite number >= 0")])
def test_ema_decay_out_of_range(decay, msg):
    with pytest.raises(es.ConfigError, match=msg):
        _ema_cfg(decay)


@needs_mnist
def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(es.CheckpointError, match="nothing to resume"):
        train(from_dict(TINY), tmp_path / "none", resume=True, progress=False)


def test_config_errors(tmp_path):
    with pytest.raises(es.ConfigError, match="unknown key"):
        from_dict({"train": {"epochz": 3}})
    with pytest.raises(es.ConfigError, match="must be of type int"):
        from_dict({"train": {"epochs": "3"}})
    with pytest.raises(es.ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[train\nepochs=")
    with pytest.raises(es.ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")
    with pytest.raises(es.ConfigError, match="unknown model config"):
        from_dict({"model": {"preset": "standard", "d_modle": 3}}).model_config(1, 10)


def test_every_shipped_config_parses():
    for path in sorted((ROOT / "configs").glob("*.toml")):
        cfg = load_config(path)
        from edgessm.data import TASKS
        info = TASKS[cfg.data.task]
        cfg.model_config(info.d_input, info.d_output)


@needs_mnist
def test_ddp_two_processes_match_one(tmp_path):
    """torchrun with 2 CPU processes (gloo) gives the weights of 1 process, same global batch."""
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("""
[model]
preset = "neuromorphic"
d_model = 8
d_state = 4
n_layers = 1
[data]
task = "smnist"
limit_train = 128
limit_val = 32
limit_test = 32
[train]
epochs = 1
batch_size = 32
seed = 5
""")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "edgessm", "train", str(cfg), "--out", str(tmp_path / "one"),
                          "--no-progress", "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "edgessm", "train", str(cfg), "--out", str(tmp_path / "two"),
                          "--no-progress", "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr
    assert "2 process(es)" in two.stderr
    assert _same(_weights(tmp_path / "one" / "last"), _weights(tmp_path / "two" / "last"), atol=1e-5)
