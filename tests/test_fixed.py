"""The integer engine (targets/fixed) against the quantized PyTorch model: integer for
integer, for every preset, on random models and real sMNIST samples; overflow under
saturation and wrap-around; sigma-delta messaging; the streaming protocol."""
from __future__ import annotations

import ast
import inspect
import textwrap

import numpy as np
import pytest
import torch

import edgessm as es
from edgessm.quant import QuantSpec, quantize
from edgessm.targets.fixed import engine as engine_mod
from edgessm.targets.fixed import EngineState

from conftest import needs_mnist

torch.set_num_threads(1)
PRESETS = ["loihi2", "w4", "ternary", "binary"]


def small_model(seed=0, H=16, N=8, layers=2, d_in=1, d_out=10):
    torch.manual_seed(seed)
    return es.SequenceModel.from_preset("neuromorphic", d_input=d_in, d_output=d_out, d_model=H,
                                        d_state=N, n_layers=layers)


def compile_fixed(model, spec, X, **opts):
    return es.targets.get("fixed").compile(model, spec, calibration=X, **opts)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("seed", [0, 1])
def test_engine_equals_quantized_model_random_models(preset, seed):
    m = small_model(seed, d_in=2, layers=2 + seed)
    X = torch.randn(24, 60, 2) * (1 + 2 * seed)
    p = compile_fixed(m, preset, X)
    r = p.check(X[:12], batch_size=5)
    assert r["mismatches"] == 0 and r["compared"] == 12 * 60 * 10


def test_engine_equals_model_per_channel_and_pow2_spec():
    spec = QuantSpec.from_dict({"mixing": {"method": "pow2", "bits": 6}, "dB": {"per_channel": True},
                                "dC": {"per_channel": True, "bits": 10}, "dA": {"bits": 12},
                                "encoder": {"per_channel": False}})
    m = small_model(3)
    X = torch.randn(16, 50, 1)
    assert compile_fixed(m, spec, X).check(X[:8])["mismatches"] == 0


@needs_mnist
@pytest.mark.parametrize("preset", PRESETS)
def test_engine_equals_model_on_real_smnist(preset):
    import os
    from edgessm.data import load_task
    from edgessm.io import shipped_models
    path = "smnist" if "smnist" in shipped_models() else "/work/main/runs/smnist/best"
    if path == "smnist" or os.path.isdir(path):
        m = es.load(path)
        n = 4
    else:  # no trained model yet: a small random one on real data
        m, n = small_model(), 8
    te = load_task("smnist", "test", limit=n)
    cal = load_task("smnist", "train", limit=32).x
    p = compile_fixed(m, preset, cal)
    r = p.check(te.x, labels=te.y)
    assert r["mismatches"] == 0 and r["compared"] == n * 784 * 10


def test_overflow_counted_and_identical_under_saturation_and_wrap():
    m = small_model(4)
    X = torch.randn(16, 60, 1)
    base = {"activations": {"bits": 10, "headroom_bits": 0.0}, "state": {"bits": 10, "headroom_bits": 0.0},
            "input": {"bits": 10}, "bias": {"bits": 10}, "dB": {"bits": 8}}
    outs = {}
    for mode in ("saturate", "wrap"):
        spec = QuantSpec.from_dict({**base, "state": {**base["state"], "overflow": mode},
                                    "activations": {**base["activations"], "overflow": mode}})
        q = quantize(m, spec, calibration=X[:2])       # calibrated on 2 samples: the rest overflow
        p = es.targets.get("fixed").compile(q)
        Xb = X * 4
        r = p.check(Xb)
        st = p.stats()
        assert r["mismatches"] == 0                       # bit-exact even when overflowing
        assert st["overflows"]["state"] > 0 and st["overflows"]["activations"] > 0
        q.reset_overflows()
        q.int_forward(Xb)
        assert q.overflows["state"] == st["overflows"]["state"]   # check ran the engine once
        outs[mode] = p.run_int(Xb)
    assert not np.array_equal(outs["saturate"], outs["wrap"])


def test_overflow_count_equals_model_count():
    m = small_model(5)
    X = torch.randn(8, 40, 1)
    spec = QuantSpec.from_dict({"activations": {"bits": 8, "headroom_bits": 0.0},
                                "state": {"bits": 8, "headroom_bits": 0.0}, "input": {"bits": 8},
                                "bias": {"bits": 8}})
    q = quantize(m, spec, calibration=X[:1])
    p = es.targets.get("fixed").compile(q)
    p.reset_stats()
    a = p.run_int(X * 3)
    q.reset_overflows()
    b = q.int_forward(X * 3).numpy()
    assert np.array_equal(a, b)
    eng = p.stats()["overflows"]
    assert eng == q.overflows and eng["activations"] > 0 and eng["input"] > 0


def test_sigma_delta_threshold_zero_is_exact_and_saves_messages():
    m = small_model(6)
    X = torch.randn(8, 50, 1)
    X[:, 25:] = X[:, 24:25]                               # a constant input: few changes
    p0 = compile_fixed(m, "loihi2", X)
    p0.reset_stats()
    p0.run_int(X)
    dense_msgs = sum(p0.stats()["messages"].values())
    p1 = compile_fixed(m, "loihi2", X, sigma_delta_threshold=0)
    r = p1.check(X)
    assert r["mismatches"] == 0
    p1.reset_stats()
    p1.run_int(X)
    assert sum(p1.stats()["messages"].values()) < dense_msgs
    p2 = compile_fixed(m, "loihi2", X, sigma_delta_threshold=1 << 18)
    p2.reset_stats()
    p2.run_int(X)
    assert p2.stats()["spike_sparsity"] > p1.stats()["spike_sparsity"]
    assert p2.check(X)["mismatches"] > 0                  # the approximation has a cost, measured


def test_step_protocol_float_boundary_and_bad_input():
    m = small_model(7)
    X = torch.randn(4, 20, 1)
    p = compile_fixed(m, "loihi2", X)
    Y = p.run(X)
    st = p.init_state(4)
    before = [a.copy() for a, _ in st.layers]
    y0, st1 = p.step(X[:, 0], st)
    assert all(np.array_equal(a, b) for (a, _), b in zip(st.layers, before))   # state untouched
    ys = [y0]
    for t in range(1, 20):
        y, st1 = p.step(X[:, t], st1)
        ys.append(y)
    assert torch.equal(torch.stack(ys, 1), Y)
    q = p.model
    assert torch.equal(Y, q.forward_tokens(X))
    with pytest.raises(es.InputError):
        p.step(torch.full((4, 1), float("nan")), st)
    with pytest.raises(es.InputError):
        p.step(torch.randn(3, 1), st)
    with pytest.raises(es.InputError):
        p.step(torch.randn(4, 2), st)
    acc = es.targets.evaluate_program(p, type("D", (), {"x": X, "y": torch.zeros(4, dtype=torch.long),
                                                         "__len__": lambda s: 4})())
    assert 0 <= acc["accuracy"] <= 1


def test_engine_step_has_no_float():
    """The integer step uses no float arithmetic: no float literal, no float dtype, no /."""
    for fn in (engine_mod.Engine.step_int, engine_mod.Engine._dense, engine_mod.Engine._s4d,
               engine_mod.Engine._send, engine_mod._rsr_):
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        for node in ast.walk(tree):
            assert not (isinstance(node, ast.Constant) and isinstance(node.value, float)), fn
            assert not isinstance(node, ast.Div), fn
            assert not (isinstance(node, ast.Attribute) and node.attr in ("float64", "float32", "double")), fn
    p = compile_fixed(small_model(8), "loihi2", torch.randn(4, 10, 1))
    with pytest.raises(TypeError):
        p.engine.step_int(np.zeros((1, 1)), p.engine.init_state(1))
    st = p.engine.init_state(2)
    out, st2 = p.engine.step_int(np.ones((2, 1), np.int64), st)
    assert out.dtype == np.int64 and all(a.dtype == np.int64 for a, _ in st2.layers)
    assert isinstance(st2, EngineState)


def test_compile_float_model_needs_calibration_and_rejects_unsupported():
    with pytest.raises(es.ConfigError, match="calibration"):
        es.targets.get("fixed").compile(small_model(), "loihi2")
    std = es.SequenceModel.from_preset("standard", d_model=8, d_state=4, n_layers=1)
    with pytest.raises(es.ConfigError, match="cannot run this model"):
        es.targets.get("fixed").compile(std, "loihi2", calibration=torch.randn(2, 4, 1))
    with pytest.raises(es.ConfigError, match="unknown option"):
        compile_fixed(small_model(), "loihi2", torch.randn(2, 4, 1), colour="red")
    with pytest.raises(es.ConfigError, match="must be of type int"):
        compile_fixed(small_model(), "loihi2", torch.randn(2, 4, 1), sigma_delta_threshold="x")


def test_stats_and_cost_shape():
    p = compile_fixed(small_model(9), "loihi2", torch.randn(4, 10, 1))
    c = p.cost()
    assert isinstance(c, es.Cost) and c.energy_per_token_j > 0 and c.latency_per_token_s > 0
    p.run(torch.randn(2, 10, 1))
    st = p.stats()
    for k in ("overflows", "messages", "synops", "spike_sparsity", "stream_tokens"):
        assert k in st
    assert st["stream_tokens"] == 20
    assert 0.0 <= st["spike_sparsity"] <= 1.0
