"""The cpu target: the C fast engine equals PyTorch streaming; protocol; bad tokens."""
import numpy as np
import pytest
import torch

import edgessm as es

CASES = [("neuromorphic", {}), ("standard", {}), ("standard", dict(norm="batch", prenorm=False)),
         ("standard", dict(norm="layer", prenorm=False, readout="last")),
         ("standard", dict(activation="relu", mixing="linear", residual=False, norm="none")),
         ("neuromorphic", dict(discretization="bilinear", init="inv")),
         ("neuromorphic", dict(residual=True, mix_norm=True))]


@pytest.mark.parametrize("preset, kw", CASES)
def test_fast_engine_equals_torch(preset, kw):
    torch.manual_seed(0)
    net = es.SequenceModel.from_preset(preset, d_input=3, d_output=5, d_model=16, d_state=8,
                                       n_layers=2, **kw)
    if kw.get("norm") == "batch" or kw.get("mix_norm"):  # move the running statistics away from (0, 1)
        net.train()
        with torch.no_grad():
            net(torch.randn(8, 50, 3) * 2 + 1)
    net.eval()
    prog = es.targets.get("cpu").compile(net)
    x = torch.randn(3, 120, 3)
    with torch.no_grad():
        ref = net.forward_tokens(x)
    run = prog.run(x)
    state = prog.init_state(3)
    steps = []
    for t in range(x.shape[1]):
        y, state = prog.step(x[:, t], state)
        steps.append(y.clone())
    scale = ref.abs().max()
    assert (run - ref).abs().max() <= 1e-4 * scale
    assert (torch.stack(steps, 1) - ref).abs().max() <= 1e-4 * scale


def test_torch_engine_and_protocol():
    torch.manual_seed(1)
    net = es.SequenceModel.from_preset("neuromorphic", d_input=1, d_output=4, d_model=8, d_state=4, n_layers=1)
    prog = es.targets.get("cpu").compile(net, engine="torch")
    x = torch.randn(2, 30, 1)
    torch.testing.assert_close(prog.run(x), es.targets.get("cpu").compile(net).run(x), rtol=1e-4, atol=1e-5)
    cost = prog.cost(tokens=20)
    assert cost.measured and cost.latency_per_token_s > 0 and cost.energy_per_token_j > 0
    fast = es.targets.get("cpu").compile(net)
    c = fast.cost(tokens=50)
    assert c.throughput_tokens_per_s == pytest.approx(1 / c.latency_per_token_s)
    assert fast.resources()["state_bytes_per_stream"] == 4 * (8 * 2 * 2)
    with pytest.raises(es.ConfigError, match="engine"):
        es.targets.get("cpu").compile(net, engine="gpu")
    with pytest.raises(es.UnknownNameError, match="available"):
        es.targets.get("tpu")


def test_bad_token_leaves_state_unchanged():
    torch.manual_seed(2)
    net = es.SequenceModel.from_preset("standard", d_input=2, d_output=3, d_model=8, d_state=4, n_layers=1)
    prog = es.targets.get("cpu").compile(net)
    state = prog.init_state(2)
    prog.step(torch.randn(2, 2), state)
    before = state.copy()
    for bad in (torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), torch.randn(3, 2), torch.randn(2, 5),
                torch.ones(2, 2, dtype=torch.int64)):
        with pytest.raises(es.InputError):
            prog.step(bad, state)
    assert np.array_equal(state.buf, before.buf) and np.array_equal(state.t, before.t)


@pytest.mark.parametrize("preset, H", [("neuromorphic", 72), ("standard", 136)])
def test_one_stream_path_equals_torch(preset, H):
    """Batch 1 takes the one-stream path (transposed, register-blocked mixing product); widths
    chosen to cover its 128-row blocks, 16-row blocks and scalar remainder rows."""
    torch.manual_seed(3)
    net = es.SequenceModel.from_preset(preset, d_input=2, d_output=5, d_model=H, d_state=8,
                                       n_layers=2).eval()
    prog = es.targets.get("cpu").compile(net)
    x = torch.randn(1, 60, 2)
    with torch.no_grad():
        ref = net.forward_tokens(x)[0]
    state, out = prog.init_state(1), np.empty((1, 5), dtype=np.float32)
    got = []
    for t in range(x.shape[1]):
        assert prog.step_numpy(x[0, t:t + 1].numpy(), state, out) is out
        got.append(out[0].copy())
    assert state.t[0] == 60
    assert np.abs(np.stack(got) - ref.numpy()).max() <= 1e-4 * ref.abs().max().item()


def test_step_numpy_rejects_bad_calls_without_change():
    torch.manual_seed(4)
    net = es.SequenceModel.from_preset("neuromorphic", d_input=2, d_output=3, d_model=8, d_state=4, n_layers=1)
    prog = es.targets.get("cpu").compile(net)
    state = prog.init_state(4)
    prog.step_numpy(np.ones((4, 2), np.float32), state)
    before = state.copy()
    x = np.ones((4, 2), np.float32)
    x[3, 1] = np.inf                       # one bad stream: no stream moves
    with pytest.raises(es.InputError, match="NaN or infinite"):
        prog.step_numpy(x, state)
    with pytest.raises(es.InputError, match="numeric"):
        prog.step_numpy(np.array([["a", "b"]] * 4), state)
    with pytest.raises(es.InputError, match="out has shape"):
        prog.step_numpy(np.ones((4, 2), np.float32), state, np.empty((4, 4), np.float32))
    other = es.SequenceModel.from_preset("neuromorphic", d_input=2, d_output=3, d_model=16, d_state=4, n_layers=1)
    with pytest.raises(es.InputError, match="init_state"):
        prog.step_numpy(np.ones((4, 2), np.float32), es.targets.get("cpu").compile(other).init_state(4))
    assert np.array_equal(state.buf, before.buf) and np.array_equal(state.t, before.t)
    # a copied state steps on its own buffers: both continue identically
    y1 = prog.step_numpy(np.full((4, 2), 0.5, np.float32), state)
    y2 = prog.step_numpy(np.full((4, 2), 0.5, np.float32), before)
    assert np.array_equal(y1, y2) and np.array_equal(state.buf, before.buf)


def test_stream_timed_equals_run_and_rejects_bad_shapes():
    torch.manual_seed(5)
    net = es.SequenceModel.from_preset("neuromorphic", d_input=2, d_output=3, d_model=8, d_state=4, n_layers=1)
    prog = es.targets.get("cpu").compile(net)
    x = torch.randn(25, 2)
    y, times = prog.stream_timed(x)
    assert len(times) == 25 and all(t > 0 for t in times)
    np.testing.assert_array_equal(y, prog.run(x[None])[0].numpy())
    for bad in (torch.randn(25, 3), torch.randn(1, 25, 2)):
        with pytest.raises(es.InputError, match="expected"):
            prog.stream_timed(bad)
