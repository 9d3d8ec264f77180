"""S4D layer: equivalence of execution modes, initializations, discretizations, errors."""
import math

import pytest
import torch

import edgessm as es
from edgessm.ssm import discretize, fft_conv, init_A

INITS = ["lin", "inv", "real"]
DISCS = ["zoh", "bilinear"]


def _naive_conv(u, K):
    L = u.shape[-1]
    y = torch.zeros_like(u)
    for l in range(L):
        y[..., l] = (u[..., : l + 1].flip(-1) * K[..., : l + 1]).sum(-1)
    return y


def test_fft_conv_is_causal_convolution():
    torch.manual_seed(0)
    u = torch.randn(2, 3, 50, dtype=torch.float64)
    K = torch.randn(3, 50, dtype=torch.float64)
    torch.testing.assert_close(fft_conv(u, K), _naive_conv(u, K), rtol=1e-10, atol=1e-10)


def test_fft_conv_gradients():
    torch.manual_seed(0)
    u = torch.randn(2, 3, 19, dtype=torch.float64, requires_grad=True)
    K = torch.randn(3, 19, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fft_conv, (u, K))


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("disc", DISCS)
def test_conv_equals_recurrence_float64(init, disc):
    torch.manual_seed(1)
    layer = es.S4D(8, 32, init=init, discretization=disc).double()
    u = torch.randn(2, 4096, 8, dtype=torch.float64)
    with torch.no_grad():
        y_conv = layer(u)
        state = layer.init_state(2)
        ys = []
        for t in range(u.shape[1]):
            y_t, state = layer.step(u[:, t], state)
            ys.append(y_t)
        y_step = torch.stack(ys, 1)
        y_chunk = layer(u, mode="chunked", chunk=1000)
    scale = y_conv.abs().max()
    assert (y_conv - y_step).abs().max() <= 1e-9 * scale
    assert (y_conv - y_chunk).abs().max() <= 1e-9 * scale


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("disc", DISCS)
def test_conv_equals_recurrence_float32(init, disc):
    torch.manual_seed(2)
    layer = es.S4D(8, 32, init=init, discretization=disc)
    u = torch.randn(2, 4096, 8)
    with torch.no_grad():
        y_conv = layer(u)
        y_rec = layer(u, mode="recurrent")
    assert (y_conv - y_rec).abs().max() <= 1e-4 * y_conv.abs().max()


def test_kernel_formula_zoh():
    """K_l = 2 Re(sum_n C_n (exp(dt A_n) - 1)/A_n exp(dt A_n l)) with B = 1."""
    torch.manual_seed(3)
    layer = es.S4D(4, 8).double()
    dt, A, B, C = layer.continuous()
    l = torch.arange(20, dtype=torch.float64)
    dtA = dt[:, None] * A
    want = 2 * (torch.einsum("hn,hnl->hl", C * (torch.exp(dtA) - 1) / A,
                             torch.exp(dtA[..., None] * l))).real
    torch.testing.assert_close(layer.kernel(20), want)


def test_bilinear_matches_closed_form():
    dt = torch.tensor([0.1], dtype=torch.float64)
    A = torch.tensor([[-0.5 + 3j]], dtype=torch.complex128)
    dA, dB = discretize(dt, A, torch.ones_like(A), "bilinear")
    assert torch.allclose(dA, (1 + 0.05 * A) / (1 - 0.05 * A))
    assert torch.allclose(dB, 0.1 / (1 - 0.05 * A))


def test_inits():
    lr, im = init_A(2, 8, "lin")
    assert torch.allclose(-torch.exp(lr), torch.full((2, 4), -0.5))
    assert torch.allclose(im[0], math.pi * torch.arange(4.0))
    lr, im = init_A(1, 8, "inv")
    n = torch.arange(4.0)
    assert torch.allclose(im[0], 8 / math.pi * (8 / (2 * n + 1) - 1))
    lr, im = init_A(1, 8, "real")
    assert torch.allclose(-torch.exp(lr[0]), -(n + 1)) and (im == 0).all()
    layer = es.S4D(1000, 4, dt_min=1e-3, dt_max=1e-1)
    dt = torch.exp(layer.log_dt)
    assert dt.min() >= 1e-3 * (1 - 1e-6) and dt.max() <= 1e-1 * (1 + 1e-6)
    # log-uniform: about half below the geometric mean
    assert 0.4 < (dt < 1e-2).float().mean() < 0.6


def test_complex_parameters_stored_real():
    layer = es.S4D(4, 8, learn_B=True)
    for name, p in layer.named_parameters():
        assert not p.is_complex(), name
    assert layer.C.shape == (4, 4, 2) and layer.B.shape == (4, 4, 2)
    assert isinstance(es.S4D(4, 8).B, torch.Tensor) and "B" not in dict(es.S4D(4, 8).named_parameters())


def test_step_caches_discretization_and_invalidates():
    layer = es.S4D(4, 8)
    state = layer.init_state(1)
    u = torch.randn(1, 4)
    with torch.no_grad():
        y1, _ = layer.step(u, state)
        key = layer._cache_key
        layer.step(u, state)
        assert layer._cache_key is key  # reused, not recomputed
        layer.log_dt.add_(0.5)          # in-place change of a parameter
        y2, _ = layer.step(u, state)
    assert layer._cache_key != key and not torch.allclose(y1, y2)


def test_gradients_flow_through_step():
    layer = es.S4D(4, 8)
    state = layer.init_state(2)
    y, state = layer.step(torch.randn(2, 4), state)
    y, state = layer.step(torch.randn(2, 4), state)
    y.sum().backward()
    assert layer.log_dt.grad is not None and layer.C.grad.abs().sum() > 0


@pytest.mark.parametrize("bad, msg", [
    (torch.randn(2, 10, 5), "last dimension 4"),
    (torch.randn(10, 4), "expected"),
    (torch.randint(0, 3, (2, 10, 4)), "floating-point"),
    (torch.full((2, 10, 4), float("nan")), "NaN"),
])
def test_layer_rejects_bad_input(bad, msg):
    layer = es.S4D(4, 8)
    with pytest.raises(es.InputError, match=msg):
        layer(bad)


def test_bad_token_leaves_state_unchanged():
    layer = es.S4D(4, 8)
    state = layer.init_state(2)
    _, state = layer.step(torch.randn(2, 4), state)
    before = state.clone()
    with pytest.raises(es.InputError):
        layer.step(torch.tensor([[1.0, float("nan"), 0, 0], [0, 0, 0, 0]]), state)
    with pytest.raises(es.InputError, match="state"):
        layer.step(torch.randn(2, 4), layer.init_state(3))
    assert torch.equal(state, before)


@pytest.mark.parametrize("kwargs", [dict(d_state=7), dict(init="foo"), dict(discretization="euler"),
                                    dict(dt_min=0.1, dt_max=0.01)])
def test_layer_config_errors(kwargs):
    args = dict(d_model=4, d_state=8) | kwargs
    with pytest.raises(es.ConfigError):
        es.S4D(**args)
