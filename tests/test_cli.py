"""Command line: every command, --json output, clean errors without tracebacks."""
import json
import subprocess
import sys

import pytest
import torch

import edgessm as es
from edgessm.cli import main

from conftest import needs_mnist


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    net = es.SequenceModel.from_preset("neuromorphic", d_input=1, d_output=10, d_model=8, d_state=4, n_layers=1)
    path = tmp_path_factory.mktemp("m") / "model"
    es.save(net, path, extra={"run": {"data": {"task": "smnist"}}})
    return path


def _json(capsys, argv):
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out
    return json.loads(out[0])


def test_models_lists_shipped(capsys):
    r = _json(capsys, ["models", "--json"])
    names = [m["name"] for m in r["models"]]
    assert "smnist" in names
    m = next(m for m in r["models"] if m["name"] == "smnist")
    assert m["bytes"] <= 2 * 1024 * 1024 and m["preset"] == "neuromorphic"


def test_info(capsys, model_dir):
    r = _json(capsys, ["info", str(model_dir), "--json"])
    assert r["config"]["d_model"] == 8 and r["parameters"] > 0


@needs_mnist
def test_eval_and_stream(capsys, model_dir):
    r = _json(capsys, ["eval", str(model_dir), "--task", "smnist", "--limit", "20", "--json"])
    assert r["n"] == 20 and 0 <= r["accuracy"] <= 1
    r2 = _json(capsys, ["eval", str(model_dir), "--limit", "20", "--json"])  # task from checkpoint
    assert r2["accuracy"] == r["accuracy"]
    s = _json(capsys, ["stream", str(model_dir), "--task", "smnist", "--index", "2", "--json"])
    assert s["tokens"] == 784 and s["trace"][-1]["token"] == 784 and 0 < s["confidence"] <= 1
    # the streamed prediction is the model's prediction on the whole sequence
    from edgessm.data import load_task
    x, _ = load_task("smnist", "test", limit=3)[2]
    with torch.no_grad():
        assert es.load(model_dir)(x[None]).argmax().item() == s["prediction"]
    assert main(["stream", str(model_dir), "--task", "smnist", "--index", "1"]) == 0
    assert "confidence" in capsys.readouterr().out


@needs_mnist
def test_shipped_smnist_eval_subset(capsys):
    r = _json(capsys, ["eval", "smnist", "--task", "smnist", "--limit", "200", "--json"])
    assert r["accuracy"] >= 0.9


@pytest.mark.parametrize("argv, msg", [
    (["eval", "no-such-model", "--task", "smnist"], "no shipped model"),
    (["info", "no-such-model"], "no shipped model"),
    (["train", "missing.toml"], "not found"),
])
def test_errors_are_one_line(capsys, argv, msg):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_unknown_task(capsys, model_dir):
    assert main(["eval", str(model_dir), "--task", "nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err


@needs_mnist
def test_stream_index_out_of_range(capsys, model_dir):
    assert main(["stream", str(model_dir), "--task", "smnist", "--index", "-1"]) == 2
    assert "--index must be a non-negative integer" in capsys.readouterr().err
    assert main(["stream", str(model_dir), "--task", "smnist", "--index", "10000"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_entry_points():
    r = subprocess.run([sys.executable, "-m", "edgessm", "models", "--json"], capture_output=True, text=True)
    assert r.returncode == 0 and "smnist" in [m["name"] for m in json.loads(r.stdout)["models"]]
    r = subprocess.run([sys.executable, "-m", "edgessm", "eval", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr


@needs_mnist
def test_demo_rows_json(capsys):
    """The main job, small: float, Loihi 2 integer engine and crossbar rows, and the stream."""
    rc = main(["demo", "--limit", "40", "--deploy-limit", "8", "--calibrate", "16", "--trials", "1",
               "--no-report", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["engine"]: r for r in out["rows"]}
    assert "error" not in rows["loihi2 (integer engine)"], rows["loihi2 (integer engine)"]
    assert "error" not in rows["crossbar (default device)"], rows["crossbar (default device)"]
    for r in out["rows"]:
        assert 0.0 <= r["accuracy"] <= 1.0
    assert rows["cpu float32 (FFT conv)"]["n"] == 40 and rows["loihi2 (integer engine)"]["n"] == 8
    assert out["stream"]["trace"] and out["stream"]["torch_us_per_token"] > 0
