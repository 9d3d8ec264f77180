"""`edgessm quantize` and `edgessm deploy` (src/edgessm/cli/deploy.py), through a parser
built here (cli/__init__.py wires the same add_commands)."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

import edgessm as es
from edgessm import cli
from edgessm.cli import deploy as cli_deploy
from edgessm.quant import quant_wrap
from edgessm.quant import QuantSequenceModel

from conftest import needs_mnist

torch.set_num_threads(1)


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    torch.manual_seed(0)
    m = es.SequenceModel.from_preset("neuromorphic", d_input=1, d_output=10, d_model=8, d_state=4,
                                     n_layers=1)
    path = tmp_path_factory.mktemp("m") / "float"
    es.save(m, path, extra={"run": {"data": {"task": "smnist"}}})
    return path


def test_add_commands_registers_both():
    p = argparse.ArgumentParser()
    cli_deploy.add_commands(p.add_subparsers(dest="command"))
    a = p.parse_args(["deploy", "m", "--target", "fixed", "--set", "a=1", "--set", "b=2", "--check"])
    assert a.func is cli_deploy.cmd_deploy and a.set == ["a=1", "b=2"] and a.check
    a = p.parse_args(["quantize", "m", "--out", "d"])
    assert a.func is cli_deploy.cmd_quantize and a.spec == "loihi2" and a.calibrate == 512


@needs_mnist
def test_quantize_then_deploy_json(float_model, tmp_path, capsys):
    out = tmp_path / "q"
    code, o, e = run(["quantize", str(float_model), "--spec", "loihi2", "--calibrate", "16",
                      "--out", str(out), "--limit", "4", "--json"], capsys)
    assert code == 0, e
    r = json.loads(o)
    assert r["spec"] == "loihi2" and r["task"] == "smnist" and "accuracy" in r
    q = es.load(out)
    assert isinstance(q, QuantSequenceModel)
    code, o, e = run(["deploy", str(out), "--target", "loihi2", "--limit", "3", "--check", "--json"], capsys)
    assert code == 0, e
    lines = [ln for ln in o.splitlines() if ln.strip()]
    assert len(lines) == 1
    r = json.loads(lines[0])
    for k in ("accuracy", "cores", "chips", "energy_per_token_j", "latency_per_token_s",
              "throughput_tokens_per_s", "spike_sparsity", "overflows", "mismatches"):
        assert k in r, k
    assert r["mismatches"] == 0 and r["n"] == 3 and r["task"] == "smnist"


@needs_mnist
def test_deploy_float_model_table_and_fixed_target(float_model, capsys):
    code, o, e = run(["deploy", str(float_model), "--target", "fixed", "--task", "smnist",
                      "--limit", "2", "--calibrate", "8", "--trials", "3"], capsys)
    assert code == 0, e
    assert "accuracy" in o and "energy per token" in o and "overflows" in o
    code, o, e = run(["deploy", str(float_model), "--limit", "2", "--calibrate", "8",
                      "--set", "sigma_delta_threshold=0", "--json"], capsys)
    assert code == 0, e
    assert json.loads(o)["stats"]["sigma_delta_threshold"] == 0


@needs_mnist
def test_deploy_errors_are_clear(float_model, capsys):
    code, o, e = run(["deploy", str(float_model), "--limit", "2", "--calibrate", "4",
                      "--set", "colour=blue"], capsys)
    assert code == 2 and "unknown option 'colour'" in e and "Traceback" not in e
    code, o, e = run(["deploy", str(float_model), "--limit", "2", "--set", "oops"], capsys)
    assert code == 2 and "KEY=VALUE" in e
    code, o, e = run(["deploy", str(float_model), "--target", "tpu"], capsys)
    assert code == 2 and "unknown target" in e
    code, o, e = run(["deploy", str(float_model), "--spec", "nope", "--limit", "1"], capsys)
    assert code == 2 and "unknown quantization spec" in e
    std = es.SequenceModel.from_preset("standard", d_model=8, d_state=4, n_layers=1)
    p = float_model.parent / "std"
    es.save(std, p)
    code, o, e = run(["deploy", str(p), "--task", "smnist", "--limit", "1"], capsys)
    assert code == 2 and "blocks.0.norm (LayerNorm)" in e


def test_quant_wrap_returns_callable():
    w = quant_wrap("ternary")
    m = es.SequenceModel.from_preset("neuromorphic", d_model=8, d_state=4, n_layers=1)
    q = w(m)
    assert isinstance(q, QuantSequenceModel) and q.spec.name == "ternary" and q.training
