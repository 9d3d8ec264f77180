"""Bad configs, options and checkpoints: a one-line error (exit 2) before any work, nothing
written; checkpoint tensors checked for dtype and finiteness; JSON never carries NaN."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import edgessm as es
from edgessm import io
from edgessm.cli import main
from edgessm.fields import Rule, json_text
from edgessm.train import from_dict

BASE = {"model": {"preset": "neuromorphic", "d_model": 8, "d_state": 4, "n_layers": 1},
        "data": {"task": "smnist", "limit_train": 32},
        "train": {"epochs": 1, "batch_size": 16}}


def _with(section, key, value):
    d = json.loads(json.dumps(BASE))
    d.setdefault(section, {})[key] = value
    return d


@pytest.mark.parametrize("section,key,value,msg", [
    ("train", "lr", float("nan"), "finite"), ("train", "lr", float("inf"), "finite"),
    ("train", "lr", -1e-3, "> 0"), ("train", "weight_decay", -0.1, ">= 0"),
    ("train", "warmup_epochs", -1.0, ">= 0"), ("train", "warmup_epochs", float("nan"), "finite"),
    ("train", "grad_clip", float("nan"), "finite"), ("train", "eval_batch_size", 0, "positive integer"),
    ("train", "threads", -3, "non-negative integer"), ("train", "seed", 10**20, "<= 2147483647"),
    ("train", "epochs", 0, "positive integer"), ("train", "batch_size", 0, "positive"),
    ("data", "val_fraction", 1.5, "< 1"), ("data", "limit_train", -1, "non-negative"),
    ("data", "task", "nope", "task must be one of"),
    ("model", "n_layers", 10**7, "at most"), ("model", "d_state", 3, "even"),
    ("model", "dt_min", float("nan"), "dt_min"), ("model", "dropout", float("nan"), "dropout"),
])
def test_every_config_field_is_checked(section, key, value, msg):
    with pytest.raises(es.ConfigError, match=msg):
        from_dict(_with(section, key, value))


def test_unknown_section_is_an_error():
    with pytest.raises(es.ConfigError, match=r"unknown section.*\[trian\]"):
        from_dict({**BASE, "trian": {"epochs": 1}})


def test_a_rule_is_one_declarative_line():
    r = Rule(str, choices=("auto", "cpu"))
    assert r.check("[train] device", "cpu") == "cpu"
    with pytest.raises(es.ConfigError, match="one of auto, cpu"):
        r.check("[train] device", "gpu0")
    assert Rule(float, gt=0).check("x", "2e-3") == 2e-3
    with pytest.raises(es.ConfigError, match="finite"):
        Rule(float).check("x", "nan")


def _one_line_exit_2(capsys, argv, written=()):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgessm") and "error" in err[0], err
    for p in written:
        assert not Path(p).exists(), p
    return err[0]


@pytest.mark.parametrize("argv,msg", [
    (["eval", "smnist", "--batch-size", "0"], "--batch-size"),
    (["deploy", "smnist", "--batch-size", "-1"], "--batch-size"),
    (["bench", "stream", "smnist", "--threads", "0"], "--threads"),
    (["deploy", "smnist", "--threads", "-1"], "--threads"),
    (["bench", "stream", "smnist", "--batch", "abc"], "--batch"),
    (["report", "--limit", "0"], "--limit"),
    (["stream", "smnist", "--index", "-1"], "--index"),
    (["deploy", "smnist-loihi2", "--target", "fixed", "--set", "energy_mac_j=nan"], "finite"),
    (["deploy", "smnist-loihi2", "--target", "fixed", "--set", "energy_mac_j=-1"], ">= 0"),
    (["deploy", "fsdd01-ternary", "--target", "crossbar", "--set", "drift_time_s=nan"], "finite"),
    (["eval", "smnist", "--batch-size", "abc"], "invalid int"),
])
def test_bad_options_are_one_line_errors(capsys, argv, msg):
    assert msg in _one_line_exit_2(capsys, argv)


def test_unwritable_out_is_refused_before_any_work(capsys, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepochs = 1\n")
    for argv in (["export-c", "smnist", "--out", str(f / "x")], ["quantize", "smnist", "--out", str(f)],
                 ["import-s4d", str(cfg), str(f / "y")], ["report", "--out", str(f / "r")],
                 ["train", str(cfg), "--out", str(f / "run")]):
        assert "--out" in _one_line_exit_2(capsys, argv) or argv[0] == "import-s4d"


def test_config_files_that_are_not_configs(capsys, tmp_path):
    binary = tmp_path / "b.toml"
    binary.write_bytes(bytes(range(256)))
    assert "not a text file" in _one_line_exit_2(capsys, ["train", str(binary), "--out", str(tmp_path / "r")],
                                                 [tmp_path / "r"])
    typo = tmp_path / "t.toml"
    typo.write_text("[trian]\nepochs = 1\n")
    assert "[trian]" in _one_line_exit_2(capsys, ["train", str(typo), "--out", str(tmp_path / "r")], [tmp_path / "r"])


def test_import_s4d_refuses_what_is_not_a_state_dict(capsys, tmp_path):
    for i, obj in enumerate((torch.zeros(3), {"a": "a string"})):
        p = tmp_path / f"x{i}.pt"
        torch.save(obj, p)
        assert "not a state_dict" in _one_line_exit_2(capsys, ["import-s4d", str(p), str(tmp_path / f"o{i}")],
                                                      [tmp_path / f"o{i}"])


@pytest.fixture()
def ckpt(tmp_path):
    torch.manual_seed(0)
    m = es.SequenceModel.from_preset("standard", d_input=1, d_output=3, d_model=8, d_state=4, n_layers=1)
    return io.save(m, tmp_path / "m")


def _rewrite(path, fn=None, meta_fn=None):
    w = path / io.WEIGHTS
    if fn is not None:
        t = load_file(str(w))
        fn(t)
        save_file(t, str(w))
    meta = json.loads((path / io.META).read_text())
    meta["weights_sha256"] = io._sha256(w)
    if meta_fn is not None:
        meta_fn(meta)
    (path / io.META).write_text(json.dumps(meta))


@pytest.mark.parametrize("dtype", [torch.bool, torch.int32, torch.float16, torch.float64])
def test_checkpoint_tensor_of_wrong_dtype_is_refused(ckpt, dtype):
    def f(t):
        t["encoder.weight"] = t["encoder.weight"].to(dtype)
    _rewrite(ckpt, f)
    with pytest.raises(es.CheckpointError, match="encoder.weight.*dtype"):
        es.load(ckpt)


def test_checkpoint_with_nan_is_refused(ckpt):
    key = [k for k in load_file(str(ckpt / io.WEIGHTS)) if k.endswith("log_dt")][0]

    def f(t):
        t[key][0] = float("nan")
    _rewrite(ckpt, f)
    with pytest.raises(es.CheckpointError, match="log_dt.*NaN") as e:
        es.load(ckpt)
    assert "clean the input" not in str(e.value)


def test_checkpoint_format_version_and_size_are_checked(ckpt, capsys):
    _rewrite(ckpt, meta_fn=lambda m: m.update(format_version="1"))
    assert "format_version" in _one_line_exit_2(capsys, ["info", str(ckpt)])
    _rewrite(ckpt, meta_fn=lambda m: (m.update(format_version=1), m["config"].update(n_layers=10**7)))
    assert "n_layers" in _one_line_exit_2(capsys, ["eval", str(ckpt), "--limit", "1"])


def test_json_output_never_carries_nan(ckpt, capsys):
    assert json.loads(json_text({"a": float("nan"), "b": [np.float32("inf"), 1.5]}, default=float)) == \
        {"a": None, "b": [None, 1.5]}
    _rewrite(ckpt, meta_fn=lambda m: m.update(metrics={"loss": float("nan"), "accuracy": 0.5}))
    assert main(["info", str(ckpt), "--json"]) == 0

    def strict(c):
        raise ValueError(c)
    out = json.loads(capsys.readouterr().out, parse_constant=strict)
    assert out["metrics"]["loss"] is None


def test_pool_too_large_and_kernel_build_failures_say_why(tmp_path, monkeypatch):
    net = es.SequenceModel.from_preset("standard", d_input=1, d_output=3, d_model=8, d_state=4, n_layers=1)
    with pytest.raises(es.ConfigError, match="GiB"):
        es.StreamPool(net, capacity=10**12)
    from edgessm import toolchain
    src = tmp_path / "k.c"
    src.write_text("int f(void) { return 1; }\n")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("EDGESSM_CACHE", str(tmp_path / "cache"))
    with pytest.raises(es.EdgessmError, match="cannot run the C compiler"):
        toolchain.shared_library(src, ["-shared", "-fPIC"])
    f = tmp_path / "file"
    f.write_text("x")
    monkeypatch.setenv("EDGESSM_CACHE", str(f))
    with pytest.raises(es.EdgessmError, match="EDGESSM_CACHE"):
        toolchain.shared_library(src, ["-shared", "-fPIC"], cc=str(tmp_path / "no-such-cc"))
    assert os.path.isfile(f)
