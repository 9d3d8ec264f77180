"""The fused S4D block tail (ssm/fused.c) against the torch ops it replaces."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import edgessm as es
from edgessm.errors import InputError
from edgessm.ssm import fused
from edgessm.toolchain import NativeLib

pytestmark = pytest.mark.skipif(not fused.available()[0],
                                reason=f"fused block kernels unavailable: {fused.available()[1]}")
ACT = {"gelu": F.gelu, "relu": F.relu, "none": lambda t: t}


def _grads(y, inputs, g):
    return torch.autograd.grad(y, inputs, g)


@pytest.mark.parametrize("act", ["gelu", "relu", "none"])
def test_act_dropout_matches_torch_without_dropout(act):
    torch.manual_seed(0)
    x = (torch.randn(3, 8, 37) * 3).requires_grad_()
    y = fused.act_dropout(x, act, 0.0)
    ref = ACT[act](x)
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-6)
    g = torch.randn_like(y)
    torch.testing.assert_close(_grads(y, x, g)[0], _grads(ref, x, g)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_act_dropout_gradcheck_float64(act):
    torch.manual_seed(1)
    x = torch.randn(2, 5, 23, dtype=torch.float64)
    x = (x + 0.1 * x.sign()).requires_grad_()              # away from ReLU's kink
    assert torch.autograd.gradcheck(lambda t: fused.act_dropout(t, act, 0.3, seed=11), (x,))
    y = fused.act_dropout(x, act, 0.0)
    torch.testing.assert_close(y, ACT[act](x), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("glu,act,res", [(True, "gelu", True), (True, "gelu", False),
                                         (False, "relu", False), (False, "gelu", True)])
def test_mix_tail_matches_torch_without_dropout(glu, act, res):
    torch.manual_seed(2)
    H = 8
    m = torch.randn(3, 2 * H if glu else H, 41, requires_grad=True)
    bias = torch.randn(m.shape[1], requires_grad=True)
    r = torch.randn(3, H, 41, requires_grad=True) if res else None
    y = fused.mix_tail(m, bias, r, glu=glu, act=act, p=0.0)
    z = m + bias.unsqueeze(-1)
    ref = F.glu(z, dim=1) if glu else ACT[act](z)
    if res:
        ref = ref + r
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=1e-6)
    inputs = (m, bias, r) if res else (m, bias)
    g = torch.randn_like(y)
    for a, b in zip(_grads(y, inputs, g), _grads(ref, inputs, g)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("glu", [True, False])
def test_mix_tail_gradcheck_float64(glu):
    torch.manual_seed(3)
    m = torch.randn(2, 8, 19, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(8, dtype=torch.float64, requires_grad=True)
    r = torch.randn(2, 4 if glu else 8, 19, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b, c: fused.mix_tail(a, b, c, glu=glu, act="gelu", p=0.25, seed=5), (m, bias, r))


def test_relu_backward_from_the_output_gradcheck_float64():
    torch.manual_seed(12)
    m = torch.randn(2, 6, 21, dtype=torch.float64)
    m = (m + 0.1 * m.sign()).requires_grad_()
    bias = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    for p in (0.0, 0.35):
        assert torch.autograd.gradcheck(
            lambda a, b: fused.mix_tail(a, b, None, glu=False, act="relu", p=p, seed=4), (m, bias))
    y = fused.mix_tail(m, bias, None, glu=False, act="relu", p=0.35, seed=4)
    gm, gb = torch.autograd.grad(y, (m, bias), torch.ones_like(y))
    torch.testing.assert_close(gm, (y > 0).double() / 0.65)
    torch.testing.assert_close(gb, gm.sum((0, 2)))


def test_layer_norm_matches_torch_and_gradcheck():
    torch.manual_seed(4)
    H, L = 12, 300                                  # L over two column blocks and a tail
    x = (torch.randn(3, H, L) * 2 + 1).requires_grad_()
    w = torch.randn(H, requires_grad=True)
    b = torch.randn(H, requires_grad=True)
    y = fused.layer_norm_ch(x, w, b, 1e-5)
    ref = F.layer_norm(x.transpose(1, 2), (H,), w, b, 1e-5).transpose(1, 2)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(y)
    for a, c in zip(_grads(y, (x, w, b), g), _grads(ref, (x, w, b), g)):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-4)
    x64 = torch.randn(1, 3, 131, dtype=torch.float64, requires_grad=True)   # two column blocks
    w64 = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b64 = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, c, d: fused.layer_norm_ch(a, c, d), (x64, w64, b64))


def _bn(C, dtype=torch.float32, momentum=0.1):
    n = torch.nn.BatchNorm1d(C, momentum=momentum).to(dtype)
    with torch.no_grad():
        n.weight.uniform_(0.5, 1.5)
        n.bias.normal_()
        n.running_mean.normal_()
        n.running_var.uniform_(0.5, 2.0)
    return n


@pytest.mark.parametrize("glu,act,p,res,momentum", [(False, "relu", 0.0, True, 0.1),
                                                    (False, "relu", 0.2, True, 0.1),
                                                    (True, "gelu", 0.1, False, 0.1),
                                                    (False, "gelu", 0.0, False, None)])
def test_norm_mix_tail_matches_batch_norm_then_mix_tail(glu, act, p, res, momentum):
    import copy
    torch.manual_seed(13)
    H, L = 6, 45
    C = 2 * H if glu else H
    m = (torch.randn(3, C, L) * 3 + 1).requires_grad_()
    bias = torch.randn(C, requires_grad=True)
    r = torch.randn(3, H, L, requires_grad=True) if res else None
    n1 = _bn(C, momentum=momentum)
    n2 = copy.deepcopy(n1)
    y = fused.norm_mix_tail(m, bias, n1, r, glu=glu, act=act, p=p, seed=21)
    ref = fused.mix_tail(n2(m + bias.unsqueeze(-1)), None, r, glu=glu, act=act, p=p, seed=21)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    inputs = [m, bias, r] if res else [m, bias]
    g = torch.randn_like(y)
    got = _grads(y, inputs + [n1.weight, n1.bias], g)
    want = _grads(ref, inputs + [n2.weight, n2.bias], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert torch.equal(got[1], torch.zeros(C))           # the mean removes the mixing bias
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(n1, name), getattr(n2, name), rtol=1e-6, atol=1e-7)


def test_norm_mix_tail_gradcheck_float64():
    torch.manual_seed(14)
    for glu in (True, False):
        m = torch.randn(2, 8, 19, dtype=torch.float64, requires_grad=True)
        r = torch.randn(2, 4 if glu else 8, 19, dtype=torch.float64, requires_grad=True)
        w = torch.empty(8, dtype=torch.float64).uniform_(0.5, 1.5).requires_grad_()
        b = torch.randn(8, dtype=torch.float64, requires_grad=True)
        n = _bn(8, torch.float64)

        def f(m_, r_, w_, b_):
            with torch.no_grad():                    # the module holds the values of w_, b_
                n.weight.copy_(w_)
                n.bias.copy_(b_)
            return fused.norm_mix_tail(m_, None, n, r_, glu=glu, act="gelu", p=0.25, seed=6)

        def g(m_, r_, w_, b_):                       # the same with w_, b_ kept in the graph
            mean, var = fused.channel_stats(m_.detach())
            return fused._NormMixTail.apply(m_, mean, var, w_, b_, None, r_, n.eps, glu, fused.ACTS["gelu"],
                                            *fused._drop(0.25, 6))
        assert torch.autograd.gradcheck(g, (m, r, w, b))
        torch.testing.assert_close(f(m, r, w, b), g(m, r, w, b), rtol=1e-13, atol=1e-13)


def test_channel_stats_match_torch_for_any_thread_count():
    torch.manual_seed(15)
    m = torch.randn(5, 7, 300) * 4 + 100                  # a large mean: the centred sum matters
    var, mean = torch.var_mean(m.double(), dim=(0, 2), correction=0)
    prev = torch.get_num_threads()
    try:
        out = []
        for nt in (1, 2, 3):
            torch.set_num_threads(nt)
            out.append(fused.channel_stats(m))
    finally:
        torch.set_num_threads(prev)
    torch.testing.assert_close(out[0][0], mean.float(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out[0][1], var.float(), rtol=1e-5, atol=1e-6)
    for mu, v in out[1:]:
        assert torch.equal(mu, out[0][0]) and torch.equal(v, out[0][1])


def test_strided_rows_are_read_in_place_and_other_layouts_copied():
    torch.manual_seed(5)
    wide = torch.randn(2, 6, 50)
    x = wide[..., :30]                                     # rows with stride 50, read in place
    assert fused._rows(x)[0] is x and fused._rows(x)[1] == 50
    t = torch.randn(2, 30, 6).transpose(1, 2)              # not rows: copied
    assert fused._rows(t)[1] == 30 and fused._rows(t)[0].is_contiguous()
    for inp in (x, t):
        torch.testing.assert_close(fused.act_dropout(inp, "gelu", 0.2, seed=3),
                                   fused.act_dropout(inp.contiguous(), "gelu", 0.2, seed=3), rtol=0, atol=0)
        torch.testing.assert_close(fused.layer_norm_ch(inp, None, None),
                                   fused.layer_norm_ch(inp.contiguous(), None, None), rtol=0, atol=0)
    xg = wide.clone().requires_grad_()
    y = fused.layer_norm_ch(xg[..., :30], None, None)
    g = torch.randn(2, 6, 60)[..., ::2]                    # a gradient with strided elements
    gx, = torch.autograd.grad(y, xg, g)
    xc = wide[..., :30].clone().requires_grad_()
    gc, = torch.autograd.grad(fused.layer_norm_ch(xc, None, None), xc, g.contiguous())
    torch.testing.assert_close(gx[..., :30], gc, rtol=0, atol=0)
    assert (gx[..., 30:] == 0).all()


# ---- dropout ---------------------------------------------------------------------------------
def test_dropout_rate_scale_and_seed():
    p = 0.3
    x = torch.ones(16, 32, 500)
    y = fused.act_dropout(x, "none", p, seed=123)
    n = x.numel()
    dropped = (y == 0).sum().item()
    assert abs(dropped / n - p) < 5 * math.sqrt(p * (1 - p) / n)
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    # every row and every position gets its own draws: no row or column always kept
    assert (y == 0).any(-1).all() and (y == 0).any(0).any(0).all()
    assert torch.equal(y, fused.act_dropout(x, "none", p, seed=123))
    assert not torch.equal(y, fused.act_dropout(x, "none", p, seed=124))
    assert torch.equal(fused.dropout_mask((16, 32, 500), p, 123), y != 0)
    assert torch.equal(fused.act_dropout(x, "none", 0.0, seed=5), x)


def test_dropout_does_not_depend_on_threads():
    torch.manual_seed(6)
    x = torch.randn(4, 64, 300)                            # over fused._GRAIN: threads used
    assert x.numel() > fused._GRAIN
    w, b = torch.randn(64), torch.randn(64)
    m = torch.randn(4, 128, 300)
    prev = torch.get_num_threads()
    out = []
    try:
        for nt in (1, 2, 3):
            torch.set_num_threads(nt)
            out.append((fused.act_dropout(x, "gelu", 0.2, seed=9), fused.mix_tail(m, None, x, p=0.2, seed=9),
                        fused.layer_norm_ch(x, w, b)))
    finally:
        torch.set_num_threads(prev)
    for o in out[1:]:
        for a, c in zip(out[0], o):
            assert torch.equal(a, c)


def test_dropout_backward_uses_the_forward_mask():
    x = (torch.rand(3, 8, 90) + 0.5).requires_grad_()
    y = fused.act_dropout(x, "relu", 0.4, seed=77)
    gx, = torch.autograd.grad(y, x, torch.ones_like(y))
    torch.testing.assert_close(gx, y.detach() / x.detach())          # relu'(x) = 1, times mask/(1-p)
    m = torch.rand(3, 16, 90, requires_grad=True)
    y = fused.mix_tail(m, None, None, glu=True, p=0.4, seed=78)
    gm, = torch.autograd.grad(y, m, torch.ones_like(y))
    assert torch.equal(gm[:, :8] == 0, y == 0)


def test_dropout_seed_comes_from_torchs_generator():
    x = torch.ones(2, 4, 300)
    torch.manual_seed(42)
    a, b = fused.act_dropout(x, "none", 0.5), fused.act_dropout(x, "none", 0.5)
    torch.manual_seed(42)
    assert torch.equal(a, fused.act_dropout(x, "none", 0.5))
    assert not torch.equal(a, b)


def test_tied_dropout_one_draw_per_row():
    p = 0.3
    x = torch.ones(16, 32, 200)
    y = fused.act_dropout(x, "none", p, seed=123, tied=True)
    keep = y[..., :1] != 0
    assert torch.equal(y != 0, keep.expand_as(y))                    # a row kept or dropped whole
    n = keep.numel()
    assert abs((~keep).sum().item() / n - p) < 5 * math.sqrt(p * (1 - p) / n)
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    assert torch.equal(fused.dropout_mask((16, 32, 200), p, 123, tied=True), y != 0)
    assert not torch.equal(y, fused.act_dropout(x, "none", p, seed=123))   # untied: its own mask
    m = torch.rand(4, 2 * 32, 200) + 0.5
    for glu in (True, False):
        mm = m if glu else m[:, :32].contiguous()
        z = fused.mix_tail(mm, None, None, glu=glu, act="relu", p=p, seed=7, tied=True)
        assert torch.equal(z != 0, (z[..., :1] != 0).expand_as(z))
    # a chunked convolution epilogue draws the same mask as the whole tensor
    u = torch.randn(2, 16, 300)
    K = torch.randn(16, 300)
    from edgessm.ssm.kernel import fft_conv
    a = fft_conv(u, K, epilogue=fused.ActDrop("relu", p, seed=5, tied=True))
    torch.testing.assert_close(a, fused.act_dropout(fft_conv(u, K), "relu", p, seed=5, tied=True),
                               rtol=1e-5, atol=1e-5)


def test_tied_dropout_gradcheck_float64():
    x = torch.randn(2, 3, 20, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fused.act_dropout(t, "gelu", 0.5, seed=3, tied=True), (x,))
    m = torch.randn(2, 6, 20, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t, c: fused.mix_tail(t, c, None, glu=True, p=0.5, seed=4, tied=True), (m, b))


def test_tied_dropout_module_on_both_layouts():
    from edgessm.ssm.network import TiedDropout
    d = TiedDropout(0.5).train()
    torch.manual_seed(0)
    x = torch.ones(4, 50, 8)                                             # (B, L, H)
    y = d(x)
    assert torch.equal(y != 0, (y[:, :1] != 0).expand_as(y)) and (y == 0).any() and (y != 0).any()
    yc = d(x.transpose(1, 2).contiguous(), 1)                            # (B, H, L)
    assert torch.equal(yc != 0, (yc[..., :1] != 0).expand_as(yc))
    assert set(d(torch.ones(3, 8)).unique().tolist()) <= {0.0, 2.0}      # one token: per element
    assert torch.equal(d.eval()(x), x)
    with pytest.raises(InputError):
        d.train()(x, 0)
    for bad in (1.0, -0.1, True, "0.1"):
        with pytest.raises(es.ConfigError):
            TiedDropout(bad)


def test_model_with_tied_dropout_drops_whole_channels_on_both_paths():
    torch.manual_seed(10)
    m = es.SequenceModel.from_preset("neuromorphic", d_input=1, d_output=3, d_model=16, d_state=8,
                                     n_layers=2, mix_norm=True, dropout=0.3, tie_dropout=True,
                                     readout="mean")
    assert m.config.tie_dropout and m.blocks[0]._fused_kind() == ("relu", 0.3, True)
    x = torch.randn(3, 60, 1)
    outs = []
    for on in (True, False):
        prev = fused.set_enabled(on)
        try:
            m.train()
            h = m.encoder(x).transpose(1, 2).contiguous()
            z = m.blocks[0].forward_hl(h)            # relu output (no residual): a dropped row is 0
            outs.append(z)
        finally:
            fused.set_enabled(prev)
    for z in outs:
        dropped = (z == 0).all(-1)
        assert dropped.any() and not dropped.all()
    m.eval()
    with torch.no_grad():                            # eval: no dropout, every mode agrees
        torch.testing.assert_close(m(x), m(x, mode="recurrent"), rtol=1e-4, atol=1e-5)
    cfg = es.ModelConfig.from_dict(m.config.to_dict())
    assert cfg.tie_dropout is True
    with pytest.raises(es.ConfigError):
        es.ModelConfig(tie_dropout="yes")


# ---- the block's training path ---------------------------------------------------------------
def _both(model, x, train=True):
    """(output, grads) of `model` on x with the fused path on, then off."""
    model.train(train)
    out = []
    for on in (True, False):
        prev = fused.set_enabled(on)
        try:
            model.zero_grad()
            y = model(x)
            y.square().sum().backward()
            out.append((y.detach(), [p.grad.clone() for p in model.parameters()]))
        finally:
            fused.set_enabled(prev)
    return out


@pytest.mark.parametrize("preset,over", [("standard", {}), ("neuromorphic", {}),
                                         ("neuromorphic", dict(residual=True, mix_norm=True)),
                                         ("standard", dict(mix_norm=True)),
                                         ("standard", dict(prenorm=False)),
                                         ("standard", dict(activation="relu", mixing="linear"))])
def test_model_without_dropout_equals_torch_path(preset, over):
    torch.manual_seed(7)
    m = es.SequenceModel.from_preset(preset, d_input=2, d_output=5, d_model=16, d_state=8, n_layers=2, **over)
    for blk in m.blocks:
        if blk.norm is not None:
            torch.nn.init.normal_(blk.norm.weight)
            torch.nn.init.normal_(blk.norm.bias)
    (y1, g1), (y0, g0) = _both(m, torch.randn(3, 50, 2))
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_model_eval_with_dropout_is_identity_dropout():
    torch.manual_seed(8)
    m = es.SequenceModel.from_preset("standard", d_input=1, d_output=3, d_model=8, d_state=4, n_layers=2,
                                     dropout=0.3)
    x = torch.randn(2, 40, 1)
    (y1, _), (y0, _) = _both(m, x, train=False)
    torch.testing.assert_close(y1, y0, rtol=1e-5, atol=1e-5)
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m(x))


def test_model_training_dropout_reproducible_and_recurrent_mode_unchanged():
    torch.manual_seed(9)
    m = es.SequenceModel.from_preset("standard", d_input=1, d_output=3, d_model=8, d_state=4, n_layers=2,
                                     dropout=0.3)
    x = torch.randn(2, 40, 1)
    m.train()
    torch.manual_seed(1)
    a = m(x)
    torch.manual_seed(1)
    assert torch.equal(a, m(x))
    assert not torch.equal(a, m(x))
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(x, mode="recurrent"), rtol=1e-4, atol=1e-5)
        state = m.init_state(2)
        for t in range(x.shape[1]):
            y, state = m.step(x[:, t], state)
        torch.testing.assert_close(y, m(x), rtol=1e-4, atol=1e-5)


def test_torch_path_under_autocast_other_dtypes_and_compile_guard():
    x32 = torch.randn(2, 4, 10)
    assert fused.usable(x32)
    assert not fused.usable(x32.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not fused.usable(x32)


def test_missing_library_falls_back_with_one_warning(monkeypatch, tmp_path):
    broken = NativeLib(tmp_path / "missing.c", ["-O2", "-shared", "-fPIC"], bind=lambda lib: None)
    monkeypatch.setattr(fused, "_LIB", broken)
    torch.manual_seed(10)
    m = es.SequenceModel.from_preset("standard", d_input=1, d_output=3, d_model=8, d_state=4, n_layers=1)
    x = torch.randn(2, 20, 1)
    with pytest.warns(RuntimeWarning, match="fused tail: native kernel unavailable"):
        y = m(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m(x)                                                # once only
    monkeypatch.setattr(fused, "_enabled", False)
    torch.testing.assert_close(y, m(x))


# ---- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, True, "0.1", float("nan")])
def test_bad_dropout_p(p):
    with pytest.raises(InputError, match="dropout p"):
        fused.act_dropout(torch.randn(2, 3, 4), "gelu", p)
    with pytest.raises(InputError, match="dropout p"):
        fused.mix_tail(torch.randn(2, 6, 4), None, p=p)
    with pytest.raises(InputError, match="dropout p"):
        fused.ActDrop("relu", p)


def test_bad_convolution_epilogue():
    with pytest.raises(InputError, match="activation"):
        fused.ActDrop("tanh")
    epi = fused.ActDrop("gelu", 0.1, seed=1)
    with pytest.raises(InputError, match="3 dimensions"):
        epi(torch.randn(3, 4))                      # the unfused form checks as act_dropout does
    with pytest.raises(InputError, match="float32 or float64"):
        epi(torch.randn(2, 3, 4).half())


def test_bad_shapes_and_types():
    x = torch.randn(2, 3, 4)
    with pytest.raises(InputError, match="activation"):
        fused.act_dropout(x, "tanh")
    with pytest.raises(InputError, match="3 dimensions"):
        fused.act_dropout(torch.randn(3, 4), "gelu")
    with pytest.raises(InputError, match="float32 or float64"):
        fused.act_dropout(x.half(), "gelu")
    with pytest.raises(InputError, match="empty"):
        fused.act_dropout(torch.randn(2, 3, 0), "gelu")
    with pytest.raises(InputError, match="even number"):
        fused.mix_tail(torch.randn(2, 5, 4), None, glu=True)
    with pytest.raises(InputError, match="bias"):
        fused.mix_tail(torch.randn(2, 6, 4), torch.randn(5), glu=True)
    with pytest.raises(InputError, match="res must be"):
        fused.mix_tail(torch.randn(2, 6, 4), None, torch.randn(2, 6, 4), glu=True)
    with pytest.raises(InputError, match="weight"):
        fused.layer_norm_ch(x, torch.randn(4), None)
    with pytest.raises(InputError, match="eps"):
        fused.layer_norm_ch(x, None, None, eps=-1.0)


def test_norm_mix_tail_bad_input_changes_nothing():
    n = _bn(6)
    before = {k: v.clone() for k, v in n.state_dict().items()}
    m = torch.randn(2, 6, 4)
    with pytest.raises(InputError, match="BatchNorm1d of 6"):
        fused.norm_mix_tail(m, None, torch.nn.BatchNorm1d(5), glu=False)
    with pytest.raises(InputError, match="BatchNorm1d of 6"):
        fused.norm_mix_tail(m, None, torch.nn.LayerNorm(6), glu=False)
    with pytest.raises(InputError, match="training mode"):
        fused.norm_mix_tail(m, None, _bn(6).eval(), glu=False)
    with pytest.raises(InputError, match="more than one value"):
        fused.norm_mix_tail(torch.randn(1, 6, 1), None, n, glu=False)
    with pytest.raises(InputError, match="bias"):
        fused.norm_mix_tail(m, torch.randn(5), n, glu=False)
    with pytest.raises(InputError, match="res must be"):
        fused.norm_mix_tail(m, None, n, torch.randn(2, 3, 4), glu=False)
    with pytest.raises(InputError, match="even number"):
        fused.norm_mix_tail(torch.randn(2, 5, 4), None, _bn(5), glu=True)
    rng = torch.get_rng_state()
    with pytest.raises(InputError, match="tied must be"):
        fused.norm_mix_tail(m, None, n, glu=False, p=0.1, tied="yes")
    assert torch.equal(rng, torch.get_rng_state())              # no seed drawn either
    after = n.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
