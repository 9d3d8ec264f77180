"""SequenceModel: presets, block options, whole-network streaming equals forward."""
import pytest
import torch

import edgessm as es
from edgessm.ssm.network import PRESETS


def _stream(net, x):
    state = net.init_state(x.shape[0])
    outs = []
    for t in range(x.shape[1]):
        y, state = net.step(x[:, t], state)
        outs.append(y)
    return torch.stack(outs, 1), state


@pytest.mark.parametrize("preset", list(PRESETS))
def test_streaming_equals_forward(preset):
    torch.manual_seed(0)
    net = es.SequenceModel.from_preset(preset, d_input=3, d_output=5, d_model=16, d_state=8,
                                       n_layers=3).double().eval()
    x = torch.randn(4, 300, 3, dtype=torch.float64)
    with torch.no_grad():
        full = net(x)
        per_token = net.forward_tokens(x)
        streamed, state = _stream(net, x)
    assert state.t == 300
    torch.testing.assert_close(streamed[:, -1], full, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(streamed, per_token, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("opts", [
    dict(norm="batch", prenorm=True), dict(norm="batch", prenorm=False),
    dict(norm="layer", prenorm=False), dict(activation="relu", mixing="glu", residual=False),
    dict(activation="gelu", mixing="linear", readout="last", norm="none"),
    dict(init="inv", discretization="bilinear", learn_B=True), dict(init="real"),
    dict(activation="relu", mixing="linear", norm="none", residual=True, mix_norm=True, readout="last"),
    dict(mix_norm=True),
])
def test_block_options_stream(opts):
    torch.manual_seed(1)
    net = es.SequenceModel(d_input=2, d_output=3, d_model=8, d_state=4, n_layers=2, dropout=0.1, **opts)
    x = torch.randn(3, 64, 2)
    net.train()
    net(x).sum().backward()          # trains (batch norm statistics move)
    net = net.double().eval()
    x = x.double()
    with torch.no_grad():
        full = net(x)
        streamed, _ = _stream(net, x)
    torch.testing.assert_close(streamed[:, -1], full, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("opts", [dict(), dict(residual=True), dict(mixing="glu", activation="gelu"),
                                  dict(norm="layer", prenorm=True), dict(norm="layer", prenorm=False),
                                  dict(residual=True, mix_norm=True), dict(norm="batch", prenorm=False),
                                  dict(norm="batch", prenorm=True)])
@pytest.mark.parametrize("train", [True, False])
def test_last_token_readout_computes_the_last_block_at_the_last_position(opts, train):
    torch.manual_seed(3)
    net = es.SequenceModel.from_preset("neuromorphic", d_input=2, d_output=4, d_model=8, d_state=4,
                                       n_layers=3, **opts).double()
    x = torch.randn(3, 45, 2, dtype=torch.float64)
    net.train(train)
    last = net.blocks[-1]
    post_bn = opts.get("norm") == "batch" and not opts.get("prenorm")
    batch_stats = train and bool(opts.get("mix_norm") or post_bn)
    assert last.last_token_ok() == (not batch_stats)
    calls = []
    orig = last.s4d.conv_last_hl
    last.s4d.conv_last_hl = lambda u: (calls.append("last"), orig(u))[1]
    try:
        y = net(x)
    finally:
        del last.s4d.conv_last_hl
    assert calls == ([] if batch_stats else ["last"])
    h = x.transpose(1, 2)
    h = torch.einsum("hd,bdl->bhl", net.encoder.weight, h) + net.encoder.bias.unsqueeze(-1)
    for b in net.blocks:
        h = b.forward_hl(h)
    ref = net.decoder(h[..., -1])
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
    params = [p for p in net.parameters() if p.requires_grad]
    for a, b in zip(torch.autograd.grad(y.square().sum(), params, allow_unused=True),
                    torch.autograd.grad(ref.square().sum(), params, allow_unused=True)):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_last_token_readout_with_dropout_is_reproducible():
    torch.manual_seed(4)
    net = es.SequenceModel.from_preset("neuromorphic", d_input=1, d_output=3, d_model=8, d_state=4,
                                       n_layers=2, dropout=0.3)
    net.train()
    x = torch.randn(2, 30, 1)
    torch.manual_seed(7)
    a = net(x)
    torch.manual_seed(7)
    assert torch.equal(a, net(x))
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.features(x)[:, -1] @ net.decoder.weight.T + net.decoder.bias)


@pytest.mark.parametrize("residual", [False, True])
def test_fold_norms_is_the_same_network(residual):
    torch.manual_seed(2)
    net = es.SequenceModel.from_preset("neuromorphic", d_input=2, d_model=8, d_state=4, n_layers=2,
                                       residual=residual, mix_norm=True)
    x = torch.randn(5, 40, 2)
    net.train()
    for _ in range(3):
        net(x)                                   # running statistics away from (0, 1)
    net.metrics = {"test_acc": 0.5}
    net.eval()
    f = net.fold_norms()
    assert f is not net and not f.config.mix_norm and f.config.residual == residual
    assert all(b.mix_norm is None for b in f.blocks) and f.metrics == {"test_acc": 0.5}
    with torch.no_grad():
        torch.testing.assert_close(f(x), net(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(f.forward_tokens(x, mode="recurrent"), net.forward_tokens(x), rtol=1e-5, atol=1e-5)
    assert not net.training and net.blocks[0].mix_norm is not None       # the original unchanged
    plain = es.SequenceModel.from_preset("neuromorphic", d_model=8, d_state=4, n_layers=1)
    assert plain.fold_norms() is plain


def test_presets_as_specified():
    s = es.SequenceModel.from_preset("standard", d_model=8, d_state=4, n_layers=1).config
    assert (s.activation, s.mixing, s.residual, s.norm, s.readout) == ("gelu", "glu", True, "layer", "mean")
    n = es.SequenceModel.from_preset("neuromorphic", d_model=8, d_state=4, n_layers=1).config
    assert (n.activation, n.mixing, n.residual, n.norm, n.readout) == ("relu", "linear", False, "none", "last")
    with pytest.raises(es.UnknownNameError, match="neuromorphic"):
        es.SequenceModel.from_preset("loihi")


def test_mode_recurrent_whole_network():
    torch.manual_seed(2)
    net = es.SequenceModel.from_preset("standard", d_input=1, d_output=4, d_model=8, d_state=4,
                                       n_layers=2).double().eval()
    x = torch.randn(2, 100, 1, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net(x, mode="recurrent"), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(net(x), net(x, mode="chunked"), rtol=1e-9, atol=1e-9)


def test_streams_in_a_batch_are_independent():
    torch.manual_seed(3)
    net = es.SequenceModel.from_preset("neuromorphic", d_input=1, d_output=4, d_model=8, d_state=4,
                                       n_layers=2).eval()
    x = torch.randn(3, 50, 1)
    with torch.no_grad():
        both, _ = _stream(net, x)
        alone, _ = _stream(net, x[1:2])
    torch.testing.assert_close(both[1:2], alone, rtol=1e-5, atol=1e-6)


def test_network_rejects_bad_input_and_keeps_state():
    net = es.SequenceModel.from_preset("standard", d_input=2, d_output=3, d_model=8, d_state=4, n_layers=1)
    with pytest.raises(es.InputError, match="last dimension 2"):
        net(torch.randn(1, 10, 3))
    with pytest.raises(es.InputError, match="floating-point"):
        net(torch.zeros(1, 10, 2, dtype=torch.int64))
    state = net.init_state(2)
    _, state = net.step(torch.randn(2, 2), state)
    snapshot = [s.clone() for s in state.layers], state.t, state.sum.clone()
    with pytest.raises(es.InputError, match="NaN"):
        net.step(torch.tensor([[0.0, float("inf")], [0.0, 0.0]]), state)
    with pytest.raises(es.InputError, match="init_state"):
        net.step(torch.randn(3, 2), state)
    assert all(torch.equal(a, b) for a, b in zip(state.layers, snapshot[0]))
    assert state.t == snapshot[1] and torch.equal(state.sum, snapshot[2])


@pytest.mark.parametrize("bad", [dict(d_model=0), dict(activation="tanh"), dict(norm="group"),
                                 dict(dropout=1.0), dict(readout="max"), dict(n_layers=True),
                                 dict(mix_norm="yes")])
def test_config_errors(bad):
    with pytest.raises(es.ConfigError):
        es.ModelConfig(**bad)
