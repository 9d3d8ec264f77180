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


# ---- the C backend of the engine (targets/fixed/cengine.py) ---------------------------------------
def _have_cc() -> bool:
    from edgessm.export import CCompilerError, find_compiler
    try:
        find_compiler()
        return True
    except CCompilerError:
        return False


needs_cc = pytest.mark.skipif(not _have_cc(), reason="no C compiler (cc, gcc or clang) on PATH")
COUNTED = ("stream_tokens", "steps", "overflows", "overflow_detail", "messages", "synops",
           "messages_per_token", "synops_per_token", "neuron_updates_per_token", "spike_sparsity")
WRAP = {"activations": {"bits": 10, "headroom_bits": 0.0, "overflow": "wrap"},
        "state": {"bits": 10, "headroom_bits": 0.0, "overflow": "wrap"},
        "input": {"bits": 10}, "bias": {"bits": 10}, "dB": {"bits": 8}}


def both_backends(q, **opts):
    """The same quantized model on the numpy and the C engine."""
    ps = {b: es.targets.get("fixed").compile(q, backend=b, **opts) for b in ("numpy", "c")}
    assert ps["numpy"].engine.backend == "numpy" and ps["c"].engine.backend == "c"
    return ps


def assert_same_run(ps, q, X):
    """C logits == numpy logits == the quantized torch model, every token; identical counts."""
    outs = {}
    for b, p in ps.items():
        p.reset_stats()
        outs[b] = p.run_int(X)
    ref = q.int_forward(X, all_tokens=True).numpy()
    assert np.array_equal(outs["numpy"], ref)
    assert np.array_equal(outs["c"], outs["numpy"])
    sn, sc = ps["numpy"].stats(), ps["c"].stats()
    assert {k: sn[k] for k in COUNTED} == {k: sc[k] for k in COUNTED}
    assert sc["backend"] == "c" and sn["backend"] == "numpy"
    assert ps["numpy"].work_per_token() == ps["c"].work_per_token()
    return outs["c"], sc


@needs_cc
@pytest.mark.parametrize("spec", ["loihi2", "w4", "ternary", "wrap"])
def test_c_backend_equals_numpy_and_model(spec):
    m = small_model(11, d_in=2, layers=2)
    g = torch.Generator().manual_seed(3)
    X = torch.randn(12, 50, 2, generator=g)
    if spec == "wrap":                       # calibrated on 2 samples, run at 4x: overflows everywhere
        q = quantize(m, QuantSpec.from_dict(WRAP), calibration=X[:2])
        X = X * 4
    else:
        q = quantize(m, spec, calibration=X)
        X = torch.cat([X[:6], 3 * X[6:]])    # beyond the calibration range too
    _, st = assert_same_run(both_backends(q), q, X)
    assert st["stream_tokens"] == 12 * 50 and st["steps"] == 50
    if spec == "wrap":
        assert st["overflows"]["state"] > 0 and st["overflows"]["activations"] > 0
        assert st["overflows"]["input"] > 0 and len(st["overflow_detail"]) >= 3


def residual_model(seed=5, layers=3):
    """A neuromorphic model with residual connections and a mixing batch norm whose running
    statistics have moved (so the fold into the mixing weights is not the identity)."""
    torch.manual_seed(seed)
    m = es.SequenceModel.from_preset("neuromorphic", d_input=2, d_output=10, d_model=16, d_state=8,
                                     n_layers=layers, residual=True, mix_norm=True)
    X = torch.randn(12, 50, 2)
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(X)
    return m.eval(), X


@needs_cc
@pytest.mark.parametrize("spec", ["loihi2", "w4", "ternary", "wrap"])
def test_residual_and_mix_norm_c_equals_numpy_and_model(spec):
    m, X = residual_model()
    if spec == "wrap":
        q = quantize(m, QuantSpec.from_dict(WRAP), calibration=X[:2])
        X = X * 4
    else:
        q = quantize(m, spec, calibration=X)
        X = torch.cat([X[:6], 3 * X[6:]])
    assert q.config.residual and not q.config.mix_norm          # folded by from_float
    net = q.integer_network()
    assert all(mix.res_w is not None and (mix.res_w == 1).all() for _, mix in net.layers)
    _, st = assert_same_run(both_backends(q), q, X)
    if spec == "wrap":
        assert st["overflow_detail"].get("mixing0.activations", 0) > 0
    if spec == "loihi2":                                         # the integer net tracks the float one
        with torch.no_grad():
            f, i = m(X[:6]), q(X[:6])
        assert (f - i).abs().max() < 0.05 * f.abs().max()


def test_residual_synapses_are_counted():
    """A block input drives its S4D and, through the residual synapse, its mixing neuron: the
    counted synaptic operations of the encoder equal a hand count."""
    m, X = residual_model(layers=1)
    p = compile_fixed(m, "loihi2", X, backend="numpy")
    net = p.engine.net
    p.reset_stats()
    h = p.engine._dense(p.encode(X[:1, 0].numpy()), net.encoder)     # the encoder's spikes, token 0
    s, mix = net.layers[0]
    per_spike = np.count_nonzero(s.br, 1) + np.count_nonzero(s.bi, 1) + (s.dm != 0) + 1
    p.run_int(X[:1, :1])
    assert p.engine.synops["encoder"] == int(((h[0] != 0) * per_spike).sum())


@needs_cc
@pytest.mark.parametrize("specialize", [True, False])
def test_residual_export_verifies(tmp_path, specialize):
    from edgessm.targets.fixed.cgen import generate
    from edgessm.targets.fixed.verify import verify_c
    m, X = residual_model()
    net = quantize(m, "loihi2", calibration=X).integer_network()
    code = generate(net, "net", specialize=specialize)
    assert "plus the residual" in code["c"]
    (tmp_path / "net.h").write_text(code["h"])
    (tmp_path / "net.c").write_text(code["c"])
    r = verify_c(net, tmp_path, "net", X * 2, min_seconds=0.0)
    assert r["verified"] and r["mismatches"] == 0 and r["compared"] == 12 * 50 * 10


@needs_cc
@pytest.mark.parametrize("threshold, residual", [(0, False), (5, False), (0, True), (5, True)])
def test_c_backend_sigma_delta_equals_numpy(threshold, residual):
    """Sigma-delta messaging on both backends; with residual connections the mixing layer adds
    what its neurons saw of the block input (the last value sent)."""
    if residual:
        m, X = residual_model()
        X = X[:6, :40]
    else:
        m, X = small_model(12), torch.randn(6, 40, 1)
    X[:, 20:] = X[:, 19:20]
    q = quantize(m, "loihi2", calibration=X)
    ps = both_backends(q, sigma_delta_threshold=threshold)
    outs = {b: p.run_int(X) for b, p in ps.items()}
    assert np.array_equal(outs["c"], outs["numpy"])
    if threshold == 0:                                      # exact
        assert np.array_equal(outs["c"], q.int_forward(X, all_tokens=True).numpy())
    sn, sc = ps["numpy"].stats(), ps["c"].stats()
    assert {k: sn[k] for k in COUNTED} == {k: sc[k] for k in COUNTED}
    st_n, st_c = ps["numpy"].init_state(6), ps["c"].init_state(6)    # streaming: refs carried along
    for t in range(5):
        _, st_n = ps["numpy"].step(X[:, t], st_n)
        _, st_c = ps["c"].step(X[:, t], st_c)
    assert st_c.refs.keys() == st_n.refs.keys()
    assert all(np.array_equal(st_c.refs[k], st_n.refs[k]) for k in st_n.refs)


@needs_cc
@pytest.mark.parametrize("preset", ["loihi2", "w4", "ternary"])
def test_c_backend_streaming_step_equals_run(preset):
    m = small_model(13, layers=3)
    X = torch.randn(5, 30, 1)
    q = quantize(m, preset, calibration=X)
    ps = both_backends(q)
    p, e = ps["c"], ps["c"].engine
    Y = p.run_int(X)
    xm = p.encode(X.numpy())
    st = e.init_state(5)
    before = [(a.copy(), b.copy()) for a, b in st.layers]
    y0, st1 = e.step_int(np.ascontiguousarray(xm[:, 0]), st)
    assert all(np.array_equal(a, c) and np.array_equal(b, d) for (a, b), (c, d) in zip(st.layers, before))
    assert y0.dtype == np.int64 and all(a.dtype == np.int64 for a, _ in st1.layers) and st1.t == 1
    ys, s_c, s_n = [y0], st1, ps["numpy"].engine.init_state(5)
    _, s_n = ps["numpy"].engine.step_int(np.ascontiguousarray(xm[:, 0]), s_n)
    for t in range(1, 30):                 # C steps; the numpy engine alongside: the same states
        y, s_c = e.step_int(np.ascontiguousarray(xm[:, t]), s_c)
        _, s_n = ps["numpy"].engine.step_int(np.ascontiguousarray(xm[:, t]), s_n)
        ys.append(y)
    assert np.array_equal(np.stack(ys, 1), Y)
    assert all(np.array_equal(a, c) and np.array_equal(b, d) for (a, b), (c, d) in zip(s_c.layers, s_n.layers))
    # states move between backends: half the sequence in numpy, the rest in C, in one call
    half, st_h = ps["numpy"].engine.run_int(np.ascontiguousarray(xm[:, :12]))
    rest, st_e = e.run_int(np.ascontiguousarray(xm[:, 12:]), st_h)
    assert np.array_equal(np.concatenate([half, rest], 1), Y) and st_e.t == 30
    # the float protocol (FixedProgram.step) on the C engine
    st, outs = p.init_state(5), []
    for t in range(30):
        o, st = p.step(X[:, t], st)
        outs.append(o)
    assert torch.equal(torch.stack(outs, 1), p.decode(Y))
    # an input outside the input bit width (not encoded): the numpy path, the same result
    big = np.full((5, 1), 1 << 40, np.int64)
    a, _ = e.step_int(big, e.init_state(5))
    b, _ = ps["numpy"].engine.step_int(big, ps["numpy"].engine.init_state(5))
    assert np.array_equal(a, b)


@needs_cc
@needs_mnist
def test_c_backend_on_real_smnist_samples():
    import os

    from edgessm.data import load_task
    from edgessm.io import shipped_models
    te = load_task("smnist", "test", limit=2)
    cal = load_task("smnist", "train", limit=16).x
    path = "smnist" if "smnist" in shipped_models() else "/work/main/runs/smnist/best"
    models = [("small", small_model(14), "w4"), ("small", small_model(14), "ternary")]
    if path == "smnist" or os.path.isdir(path):
        models.append(("shipped", es.load(path), "loihi2"))
    else:
        models.append(("small", small_model(14), "loihi2"))
    for _, m, spec in models:
        q = quantize(m, spec, calibration=cal)
        ps = both_backends(q)
        out, st = assert_same_run(ps, q, te.x)
        assert out.shape == (2, 784, 10) and st["stream_tokens"] == 2 * 784
        pl = {b: es.targets.get("loihi2").compile(q) for b in ("numpy", "c")}
        for b, p in pl.items():
            p.set_backend(b)
            p.run_int(te.x)
        cn, cc = pl["numpy"].cost(), pl["c"].cost()           # the loihi2 cost model: the same figures
        assert cn.energy_per_token_j == cc.energy_per_token_j
        assert cn.latency_per_token_s == cc.latency_per_token_s
        assert pl["numpy"].work() == pl["c"].work()


def test_backend_choice_and_no_compiler(monkeypatch):
    from edgessm.export import CCompilerError
    m = small_model(15)
    X = torch.randn(3, 12, 1)
    q = quantize(m, "loihi2", calibration=X)
    with pytest.raises(es.ConfigError, match="backend"):
        es.targets.get("fixed").compile(q, backend="fortran")
    ref = es.targets.get("fixed").compile(q, backend="numpy").run_int(X)
    monkeypatch.setenv("CC", "/nonexistent/cc-for-edgessm-tests")
    monkeypatch.setenv("PATH", "/nonexistent")
    p = es.targets.get("fixed").compile(q)                   # auto: numpy, no error
    assert p.engine.backend == "numpy" and "compiler" in p.engine.backend_note
    assert np.array_equal(p.run_int(X), ref)
    with pytest.raises(CCompilerError, match="C backend needs a C99 compiler"):
        es.targets.get("fixed").compile(q, backend="c")


@needs_cc
def test_c_backend_wide_network_falls_back_or_refuses():
    """Bit widths beyond int32 do not fit the C code: auto runs numpy, "c" refuses clearly."""
    m = small_model(16)
    X = torch.randn(3, 12, 1)
    net = quantize(m, "loihi2", calibration=X).integer_network()
    net.layers[0][0].state_bits = 40
    assert engine_mod.Engine(net).backend == "numpy"
    with pytest.raises(es.ConfigError, match="C backend cannot run"):
        engine_mod.Engine(net, backend="c")


def test_numpy_paths_have_no_float():
    for fn in (engine_mod.Engine._step_numpy, engine_mod.Engine.run_int, engine_mod.Engine._run_c):
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        for node in ast.walk(tree):
            assert not (isinstance(node, ast.Constant) and isinstance(node.value, float)), fn
            assert not isinstance(node, ast.Div), fn
