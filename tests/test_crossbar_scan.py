"""The crossbar's native hardware-aware scan (scan.c) against the reference loop over time."""
from __future__ import annotations

import copy

import pytest
import torch

import edgessm as es
from edgessm.targets.crossbar import HwSequenceModel, load_device
from edgessm.targets.crossbar.scan import amax_abs, available, block_scan

torch.set_num_threads(1)
pytestmark = pytest.mark.skipif(not available()[0], reason=f"native crossbar scan unavailable: {available()[1]}")


def _pair(dtype, state_mode="digital", B=13, L=30, seed=0, dither=0):
    torch.manual_seed(seed)
    m = es.SequenceModel.from_preset("neuromorphic", d_input=3, d_output=4, d_model=6, d_state=8, n_layers=2,
                                     dt_min=0.1, dt_max=1.0)
    x = torch.randn(B, L, 3) * 2
    hw = HwSequenceModel.from_float(m, load_device("default", weight_bits=2, state_mode=state_mode,
                                                   adc_bits=6, adc_headroom=0.9, state_dither=dither))
    hw.scan = "loop"
    hw.calibrate(x)
    hw = hw.to(dtype)
    return hw, x.to(dtype)


def _run(hw, x, scan, train=True):
    h = copy.deepcopy(hw)
    h.scan = scan
    h.train(train)
    torch.manual_seed(7)                   # the same write-noise draws on both paths
    y = h(x)
    if train:
        (y * torch.linspace(-1, 1, y.shape[-1], dtype=y.dtype)).sum().backward()
    grads = {k: p.grad.clone() for k, p in h.named_parameters() if p.grad is not None}
    return y.detach(), grads, h


@pytest.mark.parametrize("state_mode,dither", [("digital", 0), ("analog", 0), ("digital", 1)])
def test_native_scan_matches_the_loop_in_float64(state_mode, dither):
    hw, x = _pair(torch.float64, state_mode, dither=dither)
    ya, ga, ha = _run(hw, x, "loop")
    yb, gb, hb = _run(hw, x, "native")
    assert ha.saturations > 0                                 # the clipping paths are exercised
    assert torch.allclose(ya, yb, rtol=0, atol=1e-12)
    assert ha.saturations == hb.saturations
    assert torch.allclose(ha.fs_s4d, hb.fs_s4d, rtol=0, atol=1e-12)
    assert ga.keys() == gb.keys() and len(ga) > 0
    for k in ga:
        assert torch.allclose(ga[k], gb[k], rtol=1e-9, atol=1e-12), k


@pytest.mark.parametrize("dither", [0, 1])
def test_native_scan_calibration_and_eval_match_the_loop(dither):
    hw, x = _pair(torch.float64, dither=dither)
    a, b = copy.deepcopy(hw), copy.deepcopy(hw)
    a.scan, b.scan = "loop", "native"
    ra, rb = a.calibrate(x), b.calibrate(x)
    for k in ra:
        assert torch.allclose(torch.as_tensor(ra[k]), torch.as_tensor(rb[k]), rtol=1e-12, atol=1e-12), k
    ya, _, _ = _run(a, x, "loop", train=False)
    yb, _, _ = _run(b, x, "native", train=False)
    assert torch.allclose(ya, yb, rtol=0, atol=1e-12)


def test_native_scan_float32_agrees_with_the_loop():
    hw, x = _pair(torch.float32, B=20)
    ya, ga, _ = _run(hw, x, "loop")
    yb, gb, _ = _run(hw, x, "native")
    # float32 sums in another order may move a value across a rounding boundary: rare and small
    close = torch.isclose(ya, yb, rtol=1e-4, atol=1e-4)
    assert close.float().mean() > 0.95
    for k in ga:
        assert torch.allclose(ga[k], gb[k], rtol=0.05, atol=0.05 * float(ga[k].abs().max()) + 1e-6), k


def test_block_scan_gradients_by_finite_differences_without_converters():
    """With no converter the scan is linear: its backward is checked by gradcheck."""
    torch.manual_seed(3)
    M = (torch.randn(2, 5, 5, dtype=torch.float64) * 0.3).requires_grad_()
    v = torch.randn(3, 7, 2, dtype=torch.float64, requires_grad=True)
    fs = torch.ones(2, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda M, v: block_scan(M, v, fs, None, None)[0], (M, v))


def test_block_scan_rejects_bad_dtypes():
    from edgessm.errors import EdgessmError
    with pytest.raises(EdgessmError, match="float32 or float64"):
        block_scan(torch.zeros(1, 3, 3), torch.zeros(1, 2, 1, dtype=torch.float64), torch.ones(1, 2), 8, 8)


def test_native_scan_gives_the_same_bits_on_any_number_of_threads():
    torch.manual_seed(3)
    H, L, B, n2 = 5, 40, 11, 6
    M = torch.randn(H, n2 + 1, n2 + 1) * 0.4
    v = torch.randn(B, L, H)
    fs = torch.rand(H, n2) + 0.5
    for pairs in (False, True):
        out = []
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            Mg, vg = M.clone().requires_grad_(), v.clone().requires_grad_()
            y, sat = block_scan(Mg, vg, fs, 6, 7, pairs=pairs)
            (y * torch.linspace(-1, 1, H)).sum().backward()
            out.append((y.detach(), sat, Mg.grad, vg.grad))
        torch.set_num_threads(1)
        for y, sat, gM, gv in out[1:]:
            assert sat == out[0][1]
            assert torch.equal(y, out[0][0]) and torch.equal(gM, out[0][2]) and torch.equal(gv, out[0][3])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_converter_gives_the_bits_of_the_torch_ops(dtype):
    from edgessm.targets.crossbar.hw import fake_converter
    from edgessm.targets.crossbar.scan import converter
    torch.manual_seed(5)
    x = torch.randn(7, 9, 6, dtype=dtype) * 2
    x[0, 0, :4] = torch.tensor([2.5 / 127, -2.5 / 127, 1.0, -1.0], dtype=dtype) * 1.25   # ties, edges
    x[1, 1] = 0.0
    fs = torch.rand(6, dtype=dtype) + 0.5
    r, z = torch.tensor(1.7, dtype=dtype), torch.tensor(0.3, dtype=dtype)
    gy = torch.randn(7, 9, 6, dtype=dtype)
    for full, bits, pre, post in [(1.0, 8, r, None), (fs, 6, None, z), (fs, 8, r, z), (1.25, 4, None, None)]:
        a = x.clone().requires_grad_()
        ya = fake_converter(a / pre if pre is not None else a, full, bits)
        ya = ya * post if post is not None else ya
        ya.backward(gy)
        b = x.clone().requires_grad_()
        yb, sat = converter(b, full, bits, pre=pre, post=post)
        yb.backward(gy)
        v = x / pre if pre is not None else x
        assert sat == int((v.abs() > torch.as_tensor(full, dtype=dtype)).sum()) > 0
        assert torch.equal(ya, yb) and torch.equal(a.grad, b.grad)
    m = amax_abs(x)
    assert torch.equal(m, x.abs().amax((0, 1)))


def test_native_converter_rejects_bad_input_and_keeps_it():
    from edgessm.errors import EdgessmError
    from edgessm.targets.crossbar.scan import converter
    x = torch.ones(3, 4, dtype=torch.float16)
    with pytest.raises(EdgessmError, match="float32 / float64"):
        converter(x, 1.0, 8)
    with pytest.raises(EdgessmError, match="one value or one per column"):
        converter(torch.ones(3, 4), torch.ones(3), 8)
    assert torch.equal(x, torch.ones(3, 4, dtype=torch.float16))


def test_native_scan_keeps_the_batch_layout_for_any_batch_size():
    """(B, L, H) in and out, contiguous, for batch sizes that are and are not multiples of 8."""
    torch.manual_seed(4)
    H, L, n2 = 3, 9, 4
    M = torch.randn(H, n2 + 1, n2 + 1, dtype=torch.float64) * 0.4
    fs = torch.ones(H, n2, dtype=torch.float64)
    for B in (1, 8, 13):
        v = torch.randn(B, L, H, dtype=torch.float64)
        y, _ = block_scan(M, v, fs, None, None)
        assert y.shape == (B, L, H) and y.is_contiguous()
        w = torch.zeros(B, H, n2, dtype=torch.float64)            # the recurrence, directly
        for t in range(L):
            n = torch.einsum("bhi,hoi->bho", torch.cat([w, v[:, t].unsqueeze(-1)], -1), M)
            assert torch.allclose(y[:, t], n[..., n2], rtol=0, atol=1e-12)
            w = n[..., :n2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits", [(8, 8), (6, 8), (17, 18)])
def test_native_scan_converters_give_the_bits_of_the_torch_ops(dtype, bits):
    """A block that copies s_h v_t into every state (A = 0) and reads state 0 out (c = e_0):
    y_t = DAC(ADC(s_h v_(t-1))), bit for bit the torch converters, ties and clipping included."""
    from edgessm.targets.crossbar.hw import fake_converter
    adc, dac = bits
    torch.manual_seed(6)
    H, L, B, n2 = 5, 50, 37, 4             # 40 lanes: 32 in the SIMD converters, 8 in the loop
    s = torch.tensor([1.0, 0.37, 2.9, 1.25, 0.8], dtype=dtype)
    fs0 = torch.tensor([1.25, 1.25, 0.9, 1.7, 1.0], dtype=dtype)
    M = torch.zeros(H, n2 + 1, n2 + 1, dtype=dtype)
    M[:, :n2, n2] = s.unsqueeze(-1)
    M[:, n2, 0] = 1
    v = torch.randn(B, L, H, dtype=dtype) * 1.5
    k = torch.randint(-127, 128, (B, L, H)).to(dtype)
    v[:, ::3] = (k / 127 * 1.25 / s)[:, ::3]                    # ADC outputs near the DAC's ties
    v[:7, 1::5] = (fs0 / s) * torch.tensor([1.0, -1.0, 1.3, -0.2, 1.0], dtype=dtype)   # the ADC's clip edge
    fs = fs0.unsqueeze(-1).expand(H, n2).contiguous()
    gy = torch.randn(B, L, H, dtype=dtype)
    va, vb = v.clone().requires_grad_(), v.clone().requires_grad_()
    y, sat = block_scan(M, va, fs, adc, dac)
    y.backward(gy)
    n = vb * s
    w = fake_converter(fake_converter(n, fs0, adc), 1.0, dac)
    assert torch.equal(y[:, 1:], w[:, :-1]) and torch.equal(y[:, 0], torch.zeros_like(y[:, 0]))
    assert sat == n2 * int((n.abs() > fs0).sum()) > 0
    w[:, :-1].backward(gy[:, 1:])                     # the straight-through masks: the same gradient
    assert torch.equal(va.grad, vb.grad) and (va.grad == 0).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_write_noise_gives_the_bits_of_the_torch_ops(dtype, monkeypatch):
    import edgessm.targets.crossbar.hw as hwm
    q = torch.linspace(-1, 1, 7 * 9, dtype=dtype).reshape(7, 9)
    # the second: three pairs per weight, sigma clipped at 0 on the high conductances
    for cfg in (load_device("default"), load_device("default", devices_per_weight=3, write_noise_slope=-0.05,
                                                    program_verify_iterations=30)):
        torch.manual_seed(11)
        a = hwm.write_noise(q, cfg)
        torch.manual_seed(11)
        b = hwm.write_noise(q, cfg, native=False)                   # the torch ops
        monkeypatch.setattr(hwm, "native_ok", lambda x: False)      # (the same without the library)
        torch.manual_seed(11)
        c = hwm.write_noise(q, cfg)
        monkeypatch.undo()
        assert torch.equal(a, b) and torch.equal(b, c) and not torch.equal(a, q)


def test_block_scan_pairs_gives_the_gradient_of_the_complex_pair_entries():
    torch.manual_seed(8)
    H, L, B, n2 = 3, 25, 9, 6
    n = n2 // 2
    M = torch.randn(H, n2 + 1, n2 + 1, dtype=torch.float64) * 0.3
    v = torch.randn(B, L, H, dtype=torch.float64)
    fs = torch.ones(H, n2, dtype=torch.float64) * 1.25
    gy = torch.randn(B, L, H, dtype=torch.float64)
    out = []
    for pairs in (False, True):
        Mg, vg = M.clone().requires_grad_(), v.clone().requires_grad_()
        y, _ = block_scan(Mg, vg, fs, 8, 8, pairs=pairs)
        y.backward(gy)
        out.append((y.detach(), Mg.grad, vg.grad))
    keep = torch.zeros(n2 + 1, n2 + 1, dtype=torch.bool)
    for p in range(n):
        for o in (p, n + p, n2):
            for i in (p, n + p, n2):
                keep[o, i] = True
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][2], out[1][2])
    assert torch.allclose(out[1][1][:, keep], out[0][1][:, keep], rtol=1e-12, atol=1e-12)
    assert torch.equal(out[1][1][:, ~keep], torch.zeros_like(out[1][1][:, ~keep]))
    assert bool((out[0][1][:, ~keep] != 0).all())                       # the full gradient is not 0 there
    from edgessm.errors import EdgessmError
    with pytest.raises(EdgessmError, match="even number of states"):
        block_scan(torch.zeros(1, 4, 4), torch.zeros(2, 3, 1), torch.ones(1, 3), 8, 8, pairs=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layout_copies_are_the_permutation(dtype):
    from edgessm.targets.crossbar.scan import _to_blh, _to_hlb
    for B, L, H in [(13, 7, 11), (32, 5, 32), (8, 3, 8), (1, 2, 3), (17, 4, 9)]:
        x = torch.randn(B, L, H, dtype=dtype)
        Bp = B + (-B % 8)
        t = _to_hlb(x, Bp)
        assert torch.equal(t[..., :B], x.permute(2, 1, 0)) and not t[..., B:].any()
        assert torch.equal(_to_blh(t, B), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dithered_scan_gives_the_bits_of_the_torch_ops(dtype):
    """Eval mode, float32 too: the dithered state rounding of scan.c is floor(x q + U) / q with
    the offsets U of dither_offsets, as the loop's torch ops."""
    hw, x = _pair(dtype, dither=1, B=16, L=40)
    ya, _, _ = _run(hw, x, "loop", train=False)
    yb, _, _ = _run(hw, x, "native", train=False)
    assert torch.equal(ya, yb)


def test_block_scan_rejects_a_dither_of_the_wrong_shape_or_with_a_state_adc():
    M = torch.zeros(2, 5, 5)
    v = torch.zeros(3, 4, 2)
    fs = torch.ones(2, 4)
    with pytest.raises(es.EdgessmError, match="dither must be"):
        block_scan(M, v, fs, None, 8, dither=torch.full((2, 3, 4), 0.5))
    with pytest.raises(es.EdgessmError, match="no state ADC"):
        block_scan(M, v, fs, 8, 8, dither=torch.full((2, 4, 4), 0.5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("conv", ["adc+dac", "dac", "dither", "none"])
def test_sparse_scan_gives_the_dense_scan_bits(dtype, conv):
    """sparse (the zeros outside the complex pairs skipped): the same outputs, saturations and
    gradients, bit for bit, as the dense products; a block with other entries is refused."""
    from edgessm.errors import EdgessmError
    from edgessm.targets.crossbar.scan import pair_structure
    from edgessm.targets.crossbar.hw import dither_offsets
    g = torch.Generator().manual_seed(3)
    H, n2, B, L = 5, 8, 11, 40
    M0 = (torch.randn(H, n2 + 1, n2 + 1, generator=g) * 0.45 * pair_structure(n2 + 1)).to(dtype)
    v0 = (torch.randn(B, L, H, generator=g) * 0.6).to(dtype)
    fs = torch.full((H, n2), 0.8, dtype=dtype)
    adc = 6 if conv == "adc+dac" else None
    dac = None if conv == "none" else (8 if conv != "dither" else 10)
    dith = dither_offsets(0, H, n2, 0, L, dtype).transpose(0, 1).contiguous() if conv == "dither" else None
    out = []
    for sparse in (False, True):
        M, v = M0.clone().requires_grad_(), v0.clone().requires_grad_()
        y, sat = block_scan(M, v, fs, adc, dac, pairs=True, dither=dith, sparse=sparse)
        (y * torch.linspace(-1, 1, L, dtype=dtype).view(1, -1, 1)).sum().backward()
        out.append((y.detach(), sat, M.grad, v.grad))
    (ya, sa, gma, gva), (yb, sb, gmb, gvb) = out
    assert torch.equal(ya, yb) and sa == sb and torch.equal(gma, gmb) and torch.equal(gva, gvb)
    if conv == "adc+dac":
        assert sa > 0
    bad = M0.clone()
    bad[0, 0, 1] = 0.1                                      # couples two states: not a pair entry
    with pytest.raises(EdgessmError, match="outside the complex-pair structure"):
        block_scan(bad, v0, fs, adc, dac, pairs=True, dither=dith, sparse=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("state,t0", [("adc+dac", 0), ("adc+dac", 39), ("dither", 0), ("dither", 17)])
@pytest.mark.parametrize("threads", [1, 2])
def test_layer_scan_gives_the_bits_of_the_converters_around_the_scan(dtype, state, t0, threads):
    """layer_scan (the input DAC and the output ADC inside the layout changes) against converter,
    block_scan, converter: the same outputs from token t0 on, saturations, output peaks and
    gradients, bit for bit, for a batch that is not a multiple of 8, a strided output full scale
    and any thread count."""
    from edgessm.targets.crossbar.hw import dither_offsets
    from edgessm.targets.crossbar.scan import converter, layer_scan
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(5)
        H, n2, B, L = 6, 8, 13, 40
        M0 = (torch.randn(H, n2 + 1, n2 + 1, generator=g) * 0.45).to(dtype)
        u0 = (torch.randn(B, L, H, generator=g) * 2.0).to(dtype)
        r = torch.tensor(1.7, dtype=dtype)
        fs = torch.cat([torch.full((H, n2), 0.8, dtype=dtype), (torch.rand(H, 1, generator=g) + 0.3).to(dtype)], 1)
        dith = dither_offsets(0, H, n2, 0, L, dtype).transpose(0, 1).contiguous() if state == "dither" else None
        sadc = None if dith is not None else 6
        gy = torch.randn(B, L - t0, H, generator=g).to(dtype)
        out = []
        for fused in (False, True):
            M, u = M0.clone().requires_grad_(), u0.clone().requires_grad_()
            if fused:
                y, sat, peak = layer_scan(M, u, r, fs[:, :n2], fs[:, n2], 8, 6, sadc, 10, pairs=True, dither=dith,
                                          t0=t0)
            else:
                v, _ = converter(u, 1.0, 8, pre=r)
                ny, s1 = block_scan(M, v, fs[:, :n2], sadc, 10, pairs=True, dither=dith)
                peak = ny[:, t0:].detach().abs().amax((0, 1))
                y, s2 = converter(ny[:, t0:], fs[:, n2], 6, post=r)
                sat = s1 + s2
            y.backward(gy)
            out.append((y.detach(), sat, peak, M.grad, u.grad))
        (ya, sa, pa, gma, gua), (yb, sb, pb, gmb, gub) = out
        assert yb.shape == (B, L - t0, H) and yb.is_contiguous()
        assert torch.equal(ya, yb) and sa == sb > 0 and torch.equal(pa, pb)
        assert torch.equal(gma, gmb) and torch.equal(gua, gub) and (gub == 0).any()
    finally:
        torch.set_num_threads(1)


def test_layer_scan_rejects_a_first_token_outside_the_sequence_or_a_bad_full_scale():
    from edgessm.targets.crossbar.scan import layer_scan
    M, u, fs = torch.zeros(2, 5, 5), torch.zeros(3, 4, 2), torch.ones(2, 4)
    for t0 in (-1, 4):
        with pytest.raises(es.EdgessmError, match="first token out"):
            layer_scan(M, u, 1.0, fs, torch.ones(2), 8, 8, 8, 8, t0=t0)
    with pytest.raises(es.EdgessmError, match="fs_out must be"):
        layer_scan(M, u, 1.0, fs, torch.ones(3), 8, 8, 8, 8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_array_mvm_gives_the_bits_of_the_converters_around_the_products(dtype, bias):
    """array_mvm (one node) against converter, F.linear, converter, + bias: the same outputs,
    saturations and the full scales it is handed, and the same gradients to within rounding."""
    from edgessm.targets.crossbar.scan import array_mvm, converter
    g = torch.Generator().manual_seed(9)
    x0 = (torch.randn(7, 11, 6, generator=g) * 2).to(dtype)
    W0 = (torch.randn(5, 6, generator=g) * 0.5).to(dtype)
    b0 = torch.randn(5, generator=g).to(dtype) if bias else None
    r = torch.tensor(1.9, dtype=dtype)
    gy = torch.randn(7, 11, 5, generator=g).to(dtype)
    seen = []

    def full_scale(peak):
        seen.append(peak.clone())
        return peak * 0.7                                  # some columns clip

    out = []
    for fused in (False, True):
        x, W = x0.clone().requires_grad_(), W0.clone().requires_grad_()
        b = b0.clone().requires_grad_() if bias else None
        if fused:
            y, sat = array_mvm(x, W, b, r, 8, 6, full_scale)
        else:
            v, _ = converter(x, 1.0, 8, pre=r)
            n = torch.nn.functional.linear(v, W)
            y, sat = converter(n, full_scale(n.detach().abs().amax((0, 1))), 6, post=r)
            y = y + b if bias else y
        y.backward(gy)
        out.append((y.detach(), sat, x.grad, W.grad, b.grad if bias else None))
    (ya, sa, gxa, gwa, gba), (yb, sb, gxb, gwb, gbb) = out
    assert torch.equal(seen[0], seen[1])
    assert torch.equal(ya, yb) and sa == sb > 0
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for a, b in ((gxa, gxb), (gwa, gwb), (gba, gbb)):
        if a is not None:
            assert torch.allclose(a, b, rtol=tol, atol=tol)
    assert (gxb == 0).any()                                 # the DAC clipped somewhere


def test_array_mvm_rejects_a_matrix_that_does_not_fit():
    from edgessm.targets.crossbar.scan import array_mvm
    x = torch.zeros(3, 4)
    for W in (torch.zeros(2, 5), torch.zeros(4), torch.zeros(2, 4, dtype=torch.float64)):
        with pytest.raises(es.EdgessmError, match="W \\(out, 4\\)"):
            array_mvm(x, W, None, 1.0, 8, 8, lambda p: p)
