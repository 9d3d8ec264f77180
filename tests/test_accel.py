"""Devices, precision and compilation of the training step (edgessm.train.accel)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import edgessm as es
from edgessm.cli import main
from edgessm.errors import ConfigError
from edgessm.train import accel, from_dict, train

from conftest import needs_mnist

TINY = {"model": {"preset": "neuromorphic", "d_model": 8, "d_state": 4, "n_layers": 1},
        "data": {"task": "smnist", "limit_train": 64, "limit_val": 32, "limit_test": 32},
        "train": {"epochs": 1, "batch_size": 32, "threads": 1, "compile": False}}


class DeviceRecorder(TorchDispatchMode):
    """Records the device of every tensor every operator returns."""

    def __init__(self):
        super().__init__()
        self.where: dict[str, set[str]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.where.setdefault(t.device.type, set()).add(str(func))
        return out


@pytest.mark.parametrize("preset", ["standard", "neuromorphic"])
def test_every_tensor_is_created_on_the_inputs_device(preset):
    # the meta device holds no data: any tensor created without the input's device would land
    # on the CPU and show up here
    net = es.SequenceModel.from_preset(preset, d_input=2, d_output=3, d_model=8, d_state=4,
                                       n_layers=2, dropout=0.1).to("meta")
    x = torch.randn(2, 12, 2, device="meta")
    layer = es.S4D(8, 4).to("meta")
    rec = DeviceRecorder()
    with rec:
        loss = F.cross_entropy(net(x), torch.zeros(2, dtype=torch.long, device="meta"))
        loss.backward()
        net.forward_tokens(x)
        net(x, mode="chunked")
        net(x, mode="recurrent")
        state = net.init_state(2)
        for t in range(3):
            _, state = net.step(x[:, t], state)
        layer(torch.randn(1, 5, 8, device="meta"))
        layer.step(torch.randn(1, 8, device="meta"), layer.init_state(1))
    assert set(rec.where) == {"meta"}, {k: sorted(v)[:5] for k, v in rec.where.items() if k != "meta"}


def test_device_names():
    assert accel.resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert accel.resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ConfigError, match="no CUDA device.*available: cpu"):
            accel.resolve_device("cuda")
        with pytest.raises(ConfigError, match="no CUDA device"):
            accel.resolve_device("cuda:1")
    for bad in ("gpu", "cuda:x", "", "CPU"):
        with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N"):
            accel.resolve_device(bad)


def test_precision_rules():
    cpu = torch.device("cpu")
    accel.check_precision_on("fp32", cpu)
    accel.check_precision_on("bf16-mixed", cpu)
    with pytest.raises(ConfigError, match="fp16-mixed needs a CUDA device"):
        accel.check_precision_on("fp16-mixed", cpu)
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16-mixed, fp16-mixed"):
        accel.check_precision("fp8")
    with pytest.raises(ConfigError, match="precision must be one of"):
        from_dict({"train": {"precision": "half"}})
    with pytest.raises(ConfigError, match="device must be"):
        from_dict({"train": {"device": "tpu"}})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cli_device_and_precision_errors(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('[train]\nepochs = 1\n')
    assert main(["train", str(cfg), "--out", str(tmp_path / "r"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "available: cpu" in err and "Traceback" not in err
    assert main(["train", str(cfg), "--out", str(tmp_path / "r"), "--precision", "fp16-mixed"]) == 2
    assert "fp16-mixed needs a CUDA device" in capsys.readouterr().err
    assert main(["train", str(cfg), "--precision", "fp8"]) == 2
    assert "fp32" in capsys.readouterr().err          # argparse lists the valid choices
    assert not (tmp_path / "r").exists()


def test_cli_unknown_fft_library_is_an_error_before_anything_is_written(tmp_path, capsys, monkeypatch):
    from edgessm.ssm import fftconv
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('[train]\nepochs = 1\n')
    monkeypatch.setattr(fftconv, "FFT", "fftw")                # as EDGESSM_FFT=fftw
    assert main(["train", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "EDGESSM_FFT" in err and "auto, ducc0, torch" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_bf16_mixed_keeps_the_convolution_in_float32():
    torch.manual_seed(0)
    net = es.SequenceModel.from_preset("standard", d_input=1, d_output=4, d_model=8, d_state=4, n_layers=2)
    x = torch.randn(3, 20, 1)
    ref = net(x)
    seen = []
    orig = es.S4D.conv_hl

    def spy(self, u):
        y = orig(self, u)
        seen.append(y.dtype)
        return y
    es.S4D.conv_hl = spy
    try:
        with accel.autocast(torch.device("cpu"), "bf16-mixed"):
            out = net(x)
    finally:
        es.S4D.conv_hl = orig
    assert seen == [torch.float32, torch.float32]
    assert torch.allclose(out.float(), ref, atol=0.1)   # bf16 products, same prediction scale


@needs_mnist
def test_compile_failure_falls_back_with_one_warning(tmp_path, monkeypatch):
    def broken_compile(model, **kw):
        def fn(*a, **k):
            raise RuntimeError("inductor exploded")
        return fn
    monkeypatch.setattr(torch, "compile", broken_compile)
    lines = []
    cfg = from_dict({**TINY, "train": {**TINY["train"], "compile": True}})
    res = train(cfg, tmp_path / "run", progress=False, log=lines.append)
    warn = [s for s in lines if "torch.compile failed" in s]
    assert len(warn) == 1 and "inductor exploded" in warn[0] and "uncompiled" in warn[0]
    rec = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["compiled"] is False
    assert 0.0 <= res["test_accuracy"] <= 1.0


def test_compiled_forward_equals_eager():
    torch.manual_seed(0)
    net = es.SequenceModel.from_preset("neuromorphic", d_input=1, d_output=3, d_model=4, d_state=4, n_layers=1)
    x = torch.randn(2, 9, 1)
    fwd = accel.Compiled(net, enabled=True)
    out = fwd(x)
    assert fwd.compiled, fwd.error
    assert torch.allclose(out, net(x), atol=1e-5)
