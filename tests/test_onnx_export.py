"""torch.export of forward and step; ONNX graphs (step with the state as real pairs, whole
sequence) checked against PyTorch with onnxruntime (skipped, with the reason, without it)."""
from __future__ import annotations

import importlib.util
import json

import pytest
import torch

import edgessm as es
from edgessm import cli
from edgessm.errors import InputError
from edgessm.ssm.network import NetState

HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
needs_ort = pytest.mark.skipif(not HAVE_ORT, reason="onnx/onnxruntime not installed (pip install 'edgessm[onnx]')")


def _small(preset):
    torch.manual_seed(0)
    if preset == "residual-mixnorm":          # neuromorphic, residual, a mixing batch norm with moved statistics
        m = es.SequenceModel.from_preset("neuromorphic", d_input=2, d_output=5, d_model=16, d_state=8,
                                         n_layers=2, residual=True, mix_norm=True)
        with torch.no_grad():
            m(torch.randn(8, 25, 2) * 2 + 1)
        return m.eval()
    return es.SequenceModel.from_preset(preset, d_input=2, d_output=5, d_model=16, d_state=8, n_layers=2).eval()


class _Step(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x_t, *layers):
        y, st = self.m.step(x_t, NetState(list(layers), 0, None))
        return (y, *st.layers)


@pytest.mark.parametrize("preset", ["neuromorphic", "standard"])
def test_torch_export_forward_and_step(preset):
    m = _small(preset)
    x = torch.randn(3, 20, 2)
    ep = torch.export.export(m, (x,))
    assert torch.allclose(ep.module()(x), m(x), atol=1e-5)
    st = m.init_state(3)
    if preset == "neuromorphic":                  # last-token readout: the step needs only the layer states
        eps = torch.export.export(_Step(m), (x[:, 0], *st.layers))
        y, *layers = eps.module()(x[:, 0], *st.layers)
        ref, st2 = m.step(x[:, 0], st)
        assert torch.allclose(y, ref, atol=1e-6) and all(torch.equal(a, b) for a, b in zip(layers, st2.layers))
    bad = x.clone()
    bad[0, 3, 1] = float("nan")                   # eager calls still check their input
    with pytest.raises(InputError, match="NaN"):
        m(bad)
    with pytest.raises(InputError, match="NaN"):
        m.step(bad[:, 3], m.init_state(3))


@needs_ort
@pytest.mark.parametrize("preset", ["neuromorphic", "standard", "residual-mixnorm"])
def test_onnx_step_and_sequence_match_pytorch(preset, tmp_path):
    from edgessm.export.onnx import export_onnx, verify_onnx
    m = _small(preset)
    X = torch.randn(3, 25, 2)
    p = export_onnx(m, tmp_path / "step.onnx", "step")
    v = verify_onnx(m, p, X, "step")
    assert v["predictions_compared"] == 75 and v["predictions_differing"] == 0 and v["max_abs_diff"] < 1e-4
    p = export_onnx(m, tmp_path / "seq.onnx", "sequence", seq_len=25)
    v = verify_onnx(m, p, X, "sequence")
    assert v["predictions_compared"] == 3 and v["max_abs_diff"] < 1e-4
    import onnx
    g = onnx.load(str(tmp_path / "step.onnx")).graph
    assert [i.name for i in g.input][:2] == ["x", "state"]
    dims = [d.dim_value for d in g.input[1].type.tensor_type.shape.dim]
    assert dims[0] == 2 and dims[2:] == [16, 4, 2]          # (layers, batch, H, N/2, real pair)


@needs_ort
def test_cli_export_onnx_streams_a_test_digit(tmp_path, capsys):
    from edgessm.data import sample
    with sample.fallback():
        assert cli.main(["export-onnx", "smnist", "--out", str(tmp_path / "s.onnx"), "--verify", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    v = r["verify"]
    assert v["predictions_compared"] == 784 and v["predictions_differing"] == 0 and v["max_abs_diff"] < 1e-3
    assert (tmp_path / "s.onnx").stat().st_size == r["bytes"]


@pytest.mark.parametrize("argv, msg", [
    (["smnist-loihi2"], "layer blocks.0.s4d"),
    (["smnist", "--verify", "0"], "--verify"),
    (["nosuch"], "nosuch")])
def test_cli_export_onnx_bad_input(argv, msg, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert cli.main(["export-onnx", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]
    assert list(tmp_path.iterdir()) == []
