"""Tests of edgessm.quant: fixed-point rounding, quantizers, QuantSpec, the quantized model
(fake-quant training, integer-exact eval, streaming, save/load), PTQ and QAT."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import edgessm as es
from edgessm.errors import CheckpointError, ConfigError, UnknownNameError
from edgessm.quant import (QuantSequenceModel, QuantSpec, TensorSpec, fake_quant_weight,
                           qat_wrap, quantize, quantize_weight)
from edgessm.quant.fixedpoint import (exponent_for, quantize_input_np, quantize_input_t,
                                      rshift_round_np, rshift_round_t, saturate_np, saturate_t)
from edgessm.quant.quantizers import fake_quant_act, fake_quant_coeff, quantize_coeff

from conftest import needs_mnist

torch.set_num_threads(1)
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "quant"
PRESETS = ["loihi2", "w4", "ternary", "binary"]


def small_model(seed=0, H=16, N=8, layers=2, d_in=1, d_out=10):
    torch.manual_seed(seed)
    return es.SequenceModel.from_preset("neuromorphic", d_input=d_in, d_output=d_out, d_model=H,
                                        d_state=N, n_layers=layers)


# ---- fixed point ----------------------------------------------------------------------------
def _ref_shift(x: int, s: int) -> int:
    if s <= 0:
        return x << -s
    return (x + (1 << (s - 1))) >> s   # Python ints: arithmetic shift = floor


def test_rshift_round_half_up_numpy_torch_and_reference():
    rng = np.random.default_rng(0)
    x = rng.integers(-10**12, 10**12, 4000)
    x[:8] = [-5, -4, -3, -2, -1, 0, 1, 3]
    for s in (-3, 0, 1, 2, 7, 20):
        want = np.array([_ref_shift(int(v), s) for v in x])
        assert np.array_equal(rshift_round_np(x, s), want)
        assert np.array_equal(rshift_round_t(torch.from_numpy(x), s).numpy(), want)
    # half up: -2.5 -> -2, 2.5 -> 3, -1.5 -> -1
    assert rshift_round_np(np.array([-5, 5, -3]), 1).tolist() == [-2, 3, -1]
    # per-element shift arrays (mixed signs)
    s = rng.integers(-4, 9, 4000)
    want = np.array([_ref_shift(int(v), int(k)) for v, k in zip(x, s)])
    assert np.array_equal(rshift_round_np(x, s), want)
    assert np.array_equal(rshift_round_t(torch.from_numpy(x), torch.from_numpy(s)).numpy(), want)


def test_saturate_and_wrap_count_overflows():
    x = np.array([-300, -128, 0, 127, 128, 1000], dtype=np.int64)
    v, o = saturate_np(x, 8)
    assert o == 3 and v.tolist() == [-128, -128, 0, 127, 127, 127]
    w, o2 = saturate_np(x, 8, "wrap")
    assert o2 == 3 and w.tolist() == [((int(a) + 128) % 256) - 128 for a in x]
    vt, ot = saturate_t(torch.from_numpy(x), 8)
    wt, ot2 = saturate_t(torch.from_numpy(x), 8, "wrap")
    assert ot == 3 and ot2 == 3 and vt.tolist() == v.tolist() and wt.tolist() == w.tolist()
    assert saturate_np(np.array([1, 2]), 8)[1] == 0


def test_input_encoding_numpy_equals_torch():
    x = torch.randn(4, 30, 2) * 3
    a, oa = quantize_input_np(x.numpy(), -10, 12)
    b, ob = quantize_input_t(x, -10, 12)
    assert np.array_equal(a, b.numpy()) and oa == ob > 0


def test_exponent_for_fits_max():
    for m in (1e-3, 0.7, 1.0, 3.3, 1000.0):
        e = exponent_for(m, 8)
        assert m <= 127 * 2.0 ** e and m > 127 * 2.0 ** (e - 1)


# ---- quantizers -------------------------------------------------------------------------------
@pytest.mark.parametrize("method,bits", [("uniform", 8), ("uniform", 2), ("pow2", 4), ("lsq", 4),
                                         ("ternary", 2), ("binary", 1)])
def test_weight_quantizers_ranges_and_fake_equals_integer(method, bits):
    torch.manual_seed(0)
    w = torch.randn(12, 20)
    ts = TensorSpec(bits=bits, method=method, per_channel=True, descale_bits=16)
    step = (w.abs().amax(-1) / ts.qmax).clone() if method == "lsq" else None
    q = quantize_weight(w, ts, step)
    if method == "ternary":
        assert set(q.m.unique().tolist()) <= {-1, 0, 1}
        thr = 0.7 * w.abs().mean(-1, keepdim=True)
        assert torch.equal(q.m != 0, w.abs() > thr)
    elif method == "binary":
        assert set(q.m.unique().tolist()) <= {-1, 1}
    else:
        assert int(q.m.abs().max()) <= (1 << (bits - 1)) - 1
    if method == "pow2":
        assert bool((q.g == 1).all())
    assert int(q.g.max()) < 1 << 15
    fq = fake_quant_weight(w, ts, step)
    assert torch.allclose(fq.double(), q.dequant(), rtol=0, atol=1e-6)
    err = (q.dequant().float() - w).abs().mean() / w.abs().mean()
    assert err < {8: 0.02, 4: 0.2, 2: 0.7, 1: 0.8}[bits]


def test_ste_gradients_and_lsq_step_learns():
    torch.manual_seed(0)
    w = torch.randn(6, 10, requires_grad=True)
    ts = TensorSpec(bits=4, method="uniform", per_channel=True)
    fake_quant_weight(w, ts).sum().backward()
    assert torch.allclose(w.grad[w.grad != 0], torch.ones(1))  # straight through inside the range
    step = torch.nn.Parameter(w.detach().abs().amax(-1) / 7)
    tl = TensorSpec(bits=4, method="lsq", per_channel=True)
    (fake_quant_weight(w, tl, step) ** 2).sum().backward()
    assert step.grad is not None and step.grad.abs().sum() > 0
    for m in ("ternary", "binary"):
        w.grad = None
        fake_quant_weight(w, TensorSpec(bits=2 if m == "ternary" else 1, method=m)).sum().backward()
        assert torch.equal(w.grad, torch.ones_like(w))


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fake_quant_act_with_relu_equals_relu_after_it(bits):
    """relu=True: the values and gradients of F.relu(fake_quant_act(v)), at rounding ties,
    zero, the saturation edges and beyond, with and without a gradient."""
    hi = 2 ** (bits - 1) - 1
    grid = torch.arange(-hi - 3, hi + 3, 0.25, dtype=torch.float64) * 0.5   # s = 0.5: ties on the grid
    v = torch.cat([grid, torch.randn(200, dtype=torch.float64) * hi]).requires_grad_()
    g = torch.randn(v.shape, dtype=torch.float64)
    ref = torch.nn.functional.relu(fake_quant_act(v, -1, bits))
    (gr,) = torch.autograd.grad(ref, v, g)
    got = fake_quant_act(v, -1, bits, relu=True)
    (gg,) = torch.autograd.grad(got, v, g)
    assert torch.equal(got, ref) and torch.equal(gg, gr)
    with torch.no_grad():
        assert torch.equal(fake_quant_act(v, -1, bits, relu=True), ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("relu", [False, True])
def test_fake_quant_act_native_pass_gives_the_torch_ops_bits(dtype, relu, monkeypatch):
    """The one-pass native kernel against the torch ops it replaces: values and gradients bit
    for bit, at ties, saturation, just below a tie (where x / s + 1/2 rounds up), NaN, and for
    strided rows (a view of a wider buffer) and any thread count."""
    from edgessm.ssm import fused
    if not fused.available()[0]:
        pytest.skip("no fused block library")
    torch.manual_seed(3)
    base = torch.randn(4, 6, 40, dtype=dtype) * 40
    base[0, 0, :9] = torch.tensor([0.5, -0.5, 1.5, -1.5, 127.5, -128.5, 1e9, -1e9, float("nan")], dtype=dtype)
    base[0, 1, :2] = torch.tensor([0.49999997, -0.50000006], dtype=dtype)
    wide = torch.randn(4, 6, 64, dtype=dtype)
    wide[..., :40] = base
    cases = [base, wide[..., :40]]                         # contiguous, strided rows
    g = torch.randn(4, 6, 40, dtype=dtype)

    def same(a, b):                                        # bit for bit, NaN at the same places
        return torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))

    def run(v):
        v = v.detach().clone() if v.is_contiguous() else v.detach()
        v.requires_grad_()
        y = fake_quant_act(v, 0, 8, relu=relu)
        (gv,) = torch.autograd.grad(y, v, g)
        return y.detach(), gv

    for v in cases:
        got = run(v)
        for threads in (1, 3):
            prev = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                again = run(v)
            finally:
                torch.set_num_threads(prev)
            assert all(same(a, b) for a, b in zip(got, again))
        monkeypatch.setattr(fused, "_enabled", False)
        ref = run(v)
        monkeypatch.setattr(fused, "_enabled", True)
        assert same(got[0], ref[0]) and same(got[1], ref[1])
        assert got[0].isnan().any() and not got[1].isnan().any()
        with torch.no_grad():
            assert same(fake_quant_act(v, 0, 8, relu=relu), ref[0])


def test_coeff_quantization_per_layer_exponent_and_complex():
    torch.manual_seed(0)
    v = torch.randn(8, 4, dtype=torch.cfloat) * 0.3
    m, e = quantize_coeff(v, 8, per_channel=False)
    assert m.shape == (8, 4, 2) and e.shape == (8, 1) and len(e.unique()) == 1
    assert int(m.abs().max()) <= 127
    back = torch.view_as_complex((m.double() * torch.exp2(e.double()).unsqueeze(-1)).float().contiguous())
    assert torch.allclose(back, fake_quant_coeff(v, 8, False), atol=1e-7)
    _, ec = quantize_coeff(v, 8, per_channel=True)
    assert len(ec.unique()) > 1
    x = torch.tensor([0.1, -3.0, 100.0], requires_grad=True)
    y = fake_quant_act(x, -4, 8)
    assert y.tolist() == [0.125, -3.0, 127 / 16]
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0]  # no gradient where saturated


# ---- QuantSpec --------------------------------------------------------------------------------
def test_presets_and_toml(tmp_path):
    s = QuantSpec.preset("loihi2")
    assert s["mixing"].bits == 8 and s["state"].bits == 24 and s["activations"].bits == 24
    assert s["mixing"].descale_bits == 16
    assert QuantSpec.preset("ternary")["mixing"].method == "ternary"
    assert QuantSpec.preset("w4")["mixing"].bits == 4
    p = tmp_path / "my.toml"
    p.write_text('base = "loihi2"\n[mixing]\nbits = 6\nmethod = "pow2"\n[state]\noverflow = "wrap"\n')
    t = QuantSpec.from_toml(p)
    assert t.name == "my" and t["mixing"].bits == 6 and t["mixing"].method == "pow2"
    assert t["state"].overflow == "wrap" and t["encoder"].bits == 8
    assert QuantSpec.from_dict(t.to_dict()).to_dict() == t.to_dict()
    for name in ("loihi2", "w4", "ternary"):
        assert QuantSpec.load(CONFIGS / f"{name}.toml").to_dict() | {"name": name} == \
            QuantSpec.preset(name).to_dict() | {"name": name}


@pytest.mark.parametrize("d,err,words", [
    ({"mixing": {"bits": 40}}, ConfigError, "out of range"),
    ({"mixing": {"bits": 1}}, ConfigError, "binary"),
    ({"activations": {"bits": 1}}, ConfigError, "out of range"),
    ({"state": {"bits": 16}}, ConfigError, "narrower than the graded spikes"),
    ({"accumulator": {"bits": 16}}, ConfigError, "accumulator"),
    ({"mixing": {"method": "ternary", "bits": 4}}, ConfigError, "ternary needs bits = 2"),
    ({"gates": {"bits": 8}}, UnknownNameError, "unknown tensor 'gates'"),
    ({"mixing": {"colour": 3}}, ConfigError, "unknown field"),
    ({"state": {"overflow": "explode"}}, ConfigError, "overflow"),
    ({"mixing": {"bits": "8"}}, ConfigError, "must be int"),
])
def test_bad_specs_are_rejected(d, err, words):
    with pytest.raises(err, match=words):
        QuantSpec.from_dict(d)


def test_unknown_preset_and_file():
    with pytest.raises(UnknownNameError):
        QuantSpec.preset("loihi7")
    with pytest.raises(ConfigError):
        QuantSpec.load("no/such/spec.toml")


# ---- the quantized model ----------------------------------------------------------------------
@pytest.mark.parametrize("preset", PRESETS)
def test_eval_is_integer_stream_equals_sequence_and_train_close(preset):
    m = small_model()
    X = torch.randn(16, 40, 1)
    q = quantize(m, preset, calibration=X)
    yq = q.forward_tokens(X[:6])
    st, ys = q.init_state(6), []
    for t in range(40):
        y, st = q.step(X[:6, t], st)
        ys.append(y)
    assert torch.equal(torch.stack(ys, 1), yq)           # streaming == whole sequence, exactly
    assert torch.equal(q(X[:6]), yq[:, -1])
    m_int = q.int_forward(X[:6])
    assert m_int.dtype == torch.int64
    assert torch.equal(yq, (m_int.double() * 2.0 ** int(q.exp_out)).float())
    q.train()
    yt = q.forward_tokens(X[:6])
    q.eval()
    scale = m.forward_tokens(X[:6]).abs().max()
    assert (yt - yq).abs().max() < 0.02 * scale          # fake quant tracks the integer model
    yf = m.forward_tokens(X[:6])
    assert (yq - yf).abs().max() < (0.05 if preset == "loihi2" else 0.6) * scale


def test_residual_mix_norm_model_streams_exactly_and_fake_quant_tracks_it():
    torch.manual_seed(4)
    m = es.SequenceModel.from_preset("neuromorphic", d_model=16, d_state=8, n_layers=2, residual=True,
                                     mix_norm=True)
    X = torch.randn(16, 40, 1)
    m.train()
    with torch.no_grad():
        m(X)
    m.eval()
    with pytest.raises(ConfigError, match="from_float"):
        QuantSequenceModel(m.config, "loihi2")
    q = quantize(m, "loihi2", calibration=X)
    yq = q.forward_tokens(X[:6])
    st, ys = q.init_state(6), []
    for t in range(40):
        y, st = q.step(X[:6, t], st)
        ys.append(y)
    assert torch.equal(torch.stack(ys, 1), yq)
    q.train()
    yt = q.forward_tokens(X[:6])
    q.eval()
    scale = m.forward_tokens(X[:6]).abs().max()
    assert (yt - yq).abs().max() < 0.02 * scale
    assert (yq - m.forward_tokens(X[:6])).abs().max() < 0.05 * scale


def test_quantized_model_save_load_roundtrip(tmp_path):
    m = small_model()
    X = torch.randn(8, 30, 1)
    q = quantize(m, "w4", calibration=X)
    es.save(q, tmp_path / "q")
    import json
    meta = json.loads((tmp_path / "q" / "model.json").read_text())
    assert meta["quant"]["spec"]["mixing"]["method"] == "lsq"
    r = es.load(tmp_path / "q")
    assert isinstance(r, QuantSequenceModel) and not r.training
    assert torch.equal(r.int_forward(X), q.int_forward(X))
    meta["quant"] = {"spec": {"mixing": {"bits": 99}}}
    (tmp_path / "q" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="quantization spec is invalid"):
        es.load(tmp_path / "q")


def test_unsupported_models_are_rejected():
    std = es.SequenceModel.from_preset("standard", d_model=8, d_state=4, n_layers=1)
    with pytest.raises(ConfigError, match="norm 'layer'"):
        QuantSequenceModel.from_float(std, "loihi2")
    q = QuantSequenceModel.from_float(small_model(), "loihi2").eval()
    with pytest.raises(ConfigError, match="not calibrated"):
        q(torch.randn(2, 5, 1))
    with pytest.raises(es.InputError):
        q.calibrate(torch.randn(2, 5, 3))


def test_qat_trains_every_parameter_and_lowers_loss():
    torch.manual_seed(0)
    m = small_model(H=8, N=4, layers=1, d_out=2)
    X = torch.randn(64, 20, 1)
    y = (X.sum((1, 2)) > 0).long()
    q = qat_wrap("w4", calibration=X)(m)
    assert q.training and "mixing0" in q.lsq
    opt = torch.optim.Adam(q.parameters(), lr=5e-3)
    losses = []
    for _ in range(25):
        loss = torch.nn.functional.cross_entropy(q(X), y)
        opt.zero_grad()
        loss.backward()
        if not losses:
            missing = [n for n, p in q.named_parameters() if p.requires_grad and p.grad is None]
            assert not missing, missing
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    q.eval()
    acc = (q(X).argmax(-1) == y).float().mean()
    assert acc > 0.6


@pytest.mark.parametrize("residual", [False, True])
def test_qat_forward_computes_the_last_block_at_the_last_position(residual):
    torch.manual_seed(5)
    m = es.SequenceModel.from_preset("neuromorphic", d_input=1, d_output=5, d_model=16, d_state=8,
                                     n_layers=3, residual=residual)
    x = torch.rand(4, 60, 1)
    q = qat_wrap("loihi2", calibration=x)(m)
    q.train()
    params = [p for p in q.parameters() if p.requires_grad]
    y = q(x)                                              # the last block at the last position
    ref = q._fq_decoder(q._fq_features(x)[..., -1])      # every position, then the last
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(torch.autograd.grad(y.square().sum(), params, allow_unused=True),
                    torch.autograd.grad(ref.square().sum(), params, allow_unused=True)):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert q._fq_features(x, last=True).shape == (4, 16, 1)


def test_qat_wrap_lazy_calibration_on_first_batch():
    q = qat_wrap("loihi2")(small_model(H=8, N=4, layers=1))
    assert not bool(q.calibrated) and not q.exact_eval   # fast fake-quant validation in training
    q(torch.randn(4, 10, 1))
    assert bool(q.calibrated)


def test_train_loop_with_quant_wrap(tmp_path):
    pytest.importorskip("edgessm.train")
    from edgessm.train import train
    from edgessm.train.config import from_dict
    import conftest
    if not conftest.have("mnist/t10k-images-idx3-ubyte.gz"):
        pytest.skip("MNIST missing")
    cfg = from_dict({"model": {"preset": "neuromorphic", "d_model": 8, "d_state": 4, "n_layers": 1},
                     "data": {"task": "smnist", "limit_train": 64, "limit_val": 16, "limit_test": 16},
                     "train": {"epochs": 1, "batch_size": 32, "threads": 1}})
    from edgessm.quant import quant_wrap
    res = train(cfg, tmp_path, wrap=quant_wrap("loihi2", task="smnist", calibrate=32), progress=False,
                log=lambda s: None)
    assert "test_accuracy" in res
    best = es.load(tmp_path / "best")
    assert isinstance(best, QuantSequenceModel) and bool(best.calibrated) and best.exact_eval


@needs_mnist
def test_ptq_on_real_smnist_keeps_accuracy():
    import os
    from edgessm.data import load_task
    from edgessm.io import shipped_models
    path = "smnist" if "smnist" in shipped_models() else "/work/main/runs/smnist/best"
    if path != "smnist" and not os.path.isdir(path):
        pytest.skip("no trained sMNIST model available")
    m = es.load(path)
    te = load_task("smnist", "test", limit=24)
    q = quantize(m, "loihi2", calibration=load_task("smnist", "train", limit=64).x)
    with torch.no_grad():
        f = m(te.x).argmax(-1)
        g = q(te.x).argmax(-1)
    assert (f == g).float().mean() >= 0.9
    assert q.overflows["state"] == 0


@pytest.mark.parametrize("residual,readout", [(False, "last"), (True, "last"), (True, "mean")])
def test_evaluate_on_the_integer_engine_equals_the_models_integer_forward(residual, readout, monkeypatch):
    """``train.evaluate`` of a quantized model over many tokens runs its integer network on the
    integer engine's C backend: the same accuracy, loss and overflow counts as the model's own
    integer forward (here with saturating inputs and activations, so overflows are counted; the
    readout, which the engine runs at every token, does not saturate here). A mean readout: the
    mean of the engine's outputs over the tokens."""
    from edgessm.data.tasks import TASKS, SequenceDataset
    from edgessm.targets.fixed import cengine
    from edgessm.train import loop
    torch.manual_seed(2)
    m = es.SequenceModel.from_preset("neuromorphic", d_input=1, d_output=10, d_model=16, d_state=8,
                                     n_layers=2, residual=residual, readout=readout)
    X = torch.randn(48, 30, 1)
    q = quantize(m, "loihi2", calibration=X[:8] * 0.25)       # calibrated small: the rest saturates
    if cengine.unavailable(q.integer_network()) is not None:
        pytest.skip("no C backend for the integer engine here")
    ds = SequenceDataset(X, torch.randint(0, 10, (48,)), TASKS["smnist"])
    monkeypatch.setattr(loop, "ENGINE_MIN_TOKENS", 10 ** 9)
    q.reset_overflows()
    ref = loop.evaluate(q, ds, batch_size=20)
    ref_over = dict(q.overflows)
    monkeypatch.setattr(loop, "ENGINE_MIN_TOKENS", 1)
    assert loop._integer_engine(q, ds, torch.device("cpu")) is not None
    q.reset_overflows()
    got = loop.evaluate(q, ds, batch_size=20)
    assert got == ref and dict(q.overflows) == ref_over
    assert sum(ref_over.values()) > 0
    m.eval()
    assert loop._integer_engine(m, ds, torch.device("cpu")) is None        # a float model: its forward
