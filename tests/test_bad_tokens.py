"""Sequences of length 0 and tokens too large for the state: clear errors, nothing changed."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import edgessm as es
from edgessm.targets.cpu.engine import MAX_ABS, FastProgram


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return es.SequenceModel.from_preset("standard", d_input=2, d_output=3, d_model=8, d_state=4,
                                        n_layers=2).eval()


def test_length_zero_is_an_input_error_everywhere():
    # in a child process with a timeout: a length-0 sequence must not hang
    code = textwrap.dedent("""
        import numpy as np, torch, edgessm as es
        from edgessm.ssm.kernel import _fft_len
        from edgessm.targets import get
        net = es.SequenceModel.from_preset("standard", d_input=1, d_output=3, d_model=8,
                                           d_state=4, n_layers=2).eval()
        x = torch.zeros(1, 0, 1)
        cases = [lambda: net(x), lambda: net.forward_tokens(x), lambda: net(x, mode="recurrent"),
                 lambda: es.S4D(4, 4)(torch.zeros(2, 0, 4)),
                 lambda: es.S4D(4, 4)(torch.zeros(2, 0, 4), mode="chunked"),
                 lambda: get("cpu").compile(net, engine="torch").run(x),
                 lambda: get("cpu").compile(net).run(x), lambda: _fft_len(0)]
        for i, f in enumerate(cases):
            try:
                f()
            except es.InputError as e:
                assert "length 0" in str(e), (i, str(e))
            else:
                raise SystemExit(f"case {i}: no error")
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stdout + r.stderr


@pytest.mark.parametrize("value", [3e38, 1e37, -2e6])
def test_fast_engine_refuses_tokens_above_the_bound(net, value):
    prog = FastProgram(net)
    st = prog.init_state(2)
    prog.step_numpy(np.ones((2, 2), np.float32), st)
    snap = st.buf.copy(), st.t.copy()
    with pytest.raises(es.InputError, match="max_abs=1e\\+06"):
        prog.step_numpy(np.array([[0.5, 0.5], [value, 0.0]], np.float32), st)
    assert np.array_equal(st.buf, snap[0]) and np.array_equal(st.t, snap[1])
    with pytest.raises(es.InputError, match="larger in magnitude"):
        prog.run(np.full((1, 3, 2), value))


def test_pool_refuses_tokens_above_the_bound(net):
    pool = es.StreamPool(net, capacity=2)
    a, b = pool.open(), pool.open()
    pool.push(a, np.ones((3, 2), np.float32))
    snap = pool._states.copy(), pool._t.copy()
    for bad in (np.array([[1.0, 3e38]], np.float32), [[1e37, 0.0]], np.array([[2e6, 0.0]])):
        with pytest.raises(es.InputError, match="max_abs"):
            pool.push(a, bad)
    with pytest.raises(es.InputError, match="max_abs"):
        pool.push_many({a: [0.0, 0.0], b: np.array([1e37, 0.0], np.float32)})
    assert np.array_equal(pool._states, snap[0]) and np.array_equal(pool._t, snap[1])
    # the bound is configurable
    loose = es.StreamPool(net, capacity=1, max_abs=1e7)
    loose.push(loose.open(), np.array([[2e6, 0.0]], np.float32))
    with pytest.raises(es.ConfigError):
        es.StreamPool(net, capacity=1, max_abs=float("nan"))


def test_tokens_at_the_bound_keep_a_shipped_model_finite():
    pool = es.StreamPool(es.load("smnist"), capacity=1)
    sid = pool.open()
    x = np.full((2000, 1), MAX_ABS, np.float32)
    x[1::2] *= -1
    x[::7] = MAX_ABS
    y = pool.push(sid, x)
    assert np.isfinite(y).all() and np.isfinite(pool._states).all()


def test_net_step_says_the_token_is_too_large(net):
    st = net.init_state(1)
    for v in (3e38, 1e37):
        with pytest.raises(es.InputError, match="too large") as e:
            net.step(torch.tensor([[v, 0.0]]), st)
        assert "NaN" not in str(e.value)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_net_step_converts_other_float_dtypes(net, dtype):
    x = torch.tensor([[0.5, -0.25]])
    want, _ = net.step(x, net.init_state(1))
    got, _ = net.step(x.to(dtype), net.init_state(1))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want)
    with pytest.raises(es.InputError, match="too large"):
        net.step(torch.tensor([[1e300, 0.0]], dtype=torch.float64), net.init_state(1))
