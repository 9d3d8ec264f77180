"""One streaming-state type per family: float (NetState; the fast CPU engine's StreamState is
its C layout, convertible), integer (IntState, whichever executor runs the integer network),
analog (CrossbarState). A stream moves between executors of one family mid-sequence."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import edgessm as es
from edgessm.errors import InputError
from edgessm.quant import IntState, quantize
from edgessm.targets.cpu import StreamState
from edgessm.targets.crossbar import CrossbarState, HwSequenceModel
from edgessm.targets.fixed import EngineState


def _float_model(readout: str, seed: int = 0):
    torch.manual_seed(seed)
    return es.SequenceModel.from_preset("standard", d_input=2, d_output=3, d_model=8, d_state=8, n_layers=2,
                                        readout=readout).eval()


@pytest.mark.parametrize("readout", ["last", "mean"])
def test_float_stream_moves_between_fast_engine_and_torch(readout):
    m = _float_model(readout)
    p = es.targets.get("cpu").compile(m)
    X = torch.randn(3, 24, 2)
    with torch.no_grad():
        ref = m.forward_tokens(X, mode="recurrent")
        st = p.init_state(3)
        assert isinstance(st, StreamState) and st.batch == 3
        for t in range(8):
            _, st = p.step(X[:, t], st)
        ns = p.to_net_state(st)                                   # fast -> torch
        assert isinstance(ns, es.NetState) and ns.t == 8 and (ns.sum is None) == (readout == "last")
        for t in range(8, 16):
            y, ns = m.step(X[:, t], ns)
            assert torch.allclose(y, ref[:, t], atol=1e-4, rtol=1e-4)
        st = p.from_net_state(ns)                                 # torch -> fast
        assert st.t.tolist() == [16, 16, 16]
        for t in range(16, 24):
            y, st = p.step(X[:, t], st)
            assert torch.allclose(y, ref[:, t], atol=1e-4, rtol=1e-4)


def test_float_conversion_errors():
    m = _float_model("last")
    p = es.targets.get("cpu").compile(m)
    st = p.init_state(2)
    p.step_numpy(np.ones((2, 2), np.float32), st)
    st.t[1] += 1
    with pytest.raises(InputError, match="different numbers of tokens"):
        p.to_net_state(st)
    with pytest.raises(InputError, match="not made by this program"):
        p.to_net_state(_float_model("last", 1).init_state(2))
    other = es.SequenceModel.from_preset("standard", d_input=2, d_output=3, d_model=4, d_state=8, n_layers=2)
    with pytest.raises(InputError, match="not a NetState of this program's model"):
        p.from_net_state(other.init_state(2))


def test_integer_stream_moves_between_quantized_model_and_engine():
    torch.manual_seed(3)
    m = es.SequenceModel.from_preset("neuromorphic", d_input=1, d_output=5, d_model=12, d_state=8, n_layers=2)
    X = torch.randn(4, 30, 1)
    q = quantize(m, "loihi2", calibration=X)
    assert EngineState is IntState
    prog = es.targets.get("fixed").compile(q, backend="numpy")
    ref = prog.run(X)
    st = q.init_state(4)
    assert isinstance(st, IntState) and isinstance(st.layers[0][0], torch.Tensor)
    for t in range(10):
        _, st = q.step(X[:, t], st)
    est = st.to_numpy()                                           # quantized model -> engine
    assert isinstance(est.layers[0][0], np.ndarray) and est.t == 10
    for t in range(10, 20):
        y, est = prog.step(X[:, t], est)
        assert torch.equal(y, ref[:, t])
    st = est.to_torch()                                           # engine -> quantized model
    for t in range(20, 30):
        y, st = q.step(X[:, t], st)
        assert torch.equal(y, ref[:, t])
    with pytest.raises(InputError, match="to_torch"):
        q.step(X[:, 0], est)                                      # numpy arrays: say how to convert


def test_analog_state_is_typed_and_immutable():
    torch.manual_seed(0)
    net = es.SequenceModel.from_preset("neuromorphic", d_input=3, d_output=4, d_model=6, d_state=8, n_layers=2)
    data = torch.randn(5, 12, 3)
    hw = HwSequenceModel.from_float(net, None)
    hw.calibrate(data)
    hw.eval()
    prog = es.targets.get("crossbar").compile(hw, noise=0)
    s = prog.init_state(5)
    assert isinstance(s, CrossbarState) and s.batch == 5 and s.t == 0 and s.sum is None
    assert [tuple(w.shape) for w in s.w] == [(5, 6, 8), (5, 6, 8)]
    before = [w.clone() for w in s.w]
    y, s1 = prog.step(data[:, 0], s)
    assert isinstance(s1, CrossbarState) and s1.t == 1
    assert all(torch.equal(a, b) for a, b in zip(s.w, before))    # the old state is unchanged
    with pytest.raises(InputError, match="init_state"):
        prog.step(data[:, 1], {"w": s1.w, "t": 1, "sum": None})
    Y = prog.run(data)
    assert torch.allclose(y, Y[:, 0], atol=1e-6)
