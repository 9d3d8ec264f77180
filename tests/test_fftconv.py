"""The fused CPU path of the FFT convolution (ssm/fftconv.py, fftconv.c) against the torch path
(kernel._FFTConv) and a direct causal convolution: outputs, both gradients, thread counts, the
FFT libraries, the buffer pool and the explicit fallback."""
import contextlib
import warnings

import pytest
import torch

from edgessm.errors import ConfigError, InputError
from edgessm.ssm import fftconv, kernel
from edgessm.toolchain import NativeLib

pytestmark = pytest.mark.skipif(not fftconv.available()[0], reason="no C compiler for fftconv.c")
LIBS = ["torch"] + (["ducc0"] if fftconv._DUCC is not None else [])


@pytest.fixture(params=LIBS)
def lib(request, monkeypatch):
    monkeypatch.setattr(fftconv, "FFT", request.param)
    return request.param


def _naive(u, K):
    L = u.shape[-1]
    y = torch.zeros_like(u)
    for l in range(L):
        y[..., l] = (u[..., : l + 1].flip(-1) * K[..., : l + 1]).sum(-1)
    return y


def _grads(f, u, K, g):
    y = f(u, K)
    return (y, *torch.autograd.grad(y, (u, K), g))


def _fused(u, K):
    return fftconv.conv(u, K, kernel._fft_len(2 * u.shape[-1] - 1), fftconv.fft_library())


@pytest.mark.parametrize("shape", [(1, 3, 1), (1, 4, 19), (3, 5, 50), (2, 2, 3, 33), (6, 101)])
def test_fused_matches_torch_and_direct_float64(lib, shape):
    torch.manual_seed(0)
    u = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    K = torch.randn(*shape[-2:], dtype=torch.float64, requires_grad=True)
    g = torch.randn(*shape, dtype=torch.float64)
    fused = _grads(_fused, u, K, g)
    ref = _grads(kernel._FFTConv.apply, u, K, g)
    direct = _grads(_naive, u, K, g)
    for a, b, c in zip(fused, ref, direct):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(a, c, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("B,H,L", [(1, 8, 77), (5, 16, 200), (4, 3, 784)])
def test_fused_matches_torch_float32(lib, B, H, L):
    torch.manual_seed(1)
    u = torch.randn(B, H, L, requires_grad=True)
    K = (torch.randn(H, L) * torch.exp(-torch.arange(L) / 50)).requires_grad_()
    g = torch.randn(B, H, L)
    for a, b in zip(_grads(_fused, u, K, g), _grads(kernel._FFTConv.apply, u, K, g)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-4 * b.abs().max().item())


def test_fused_gradcheck_float64(lib):
    torch.manual_seed(2)
    u = torch.randn(3, 2, 23, dtype=torch.float64, requires_grad=True)
    K = torch.randn(2, 23, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u, K: fftconv.FusedFFTConv.apply(u, K, 48, lib), (u, K))


def test_fft_conv_dispatches_cpu_float_to_the_fused_path(monkeypatch):
    calls = []
    real = fftconv.conv
    monkeypatch.setattr(fftconv, "conv", lambda *a: calls.append(a[0].dtype) or real(*a))
    u, K = torch.randn(2, 3, 10), torch.randn(3, 10)
    kernel.fft_conv(u, K)
    kernel.fft_conv(u.double(), K.double().requires_grad_())
    kernel.fft_conv(u, K.double())                            # mixed dtypes: torch path
    assert calls == [torch.float32, torch.float64]


def test_one_gradient_at_a_time_and_strided_inputs(lib):
    torch.manual_seed(3)
    u = torch.randn(4, 40, 6, dtype=torch.float64).transpose(1, 2)      # (4, 6, 40), strided
    K = torch.randn(6, 40, dtype=torch.float64)
    g = torch.randn(6, 4, 40, dtype=torch.float64).transpose(0, 1)      # strided gradient
    for need_u in (True, False):
        outs = []
        for f in (_fused, kernel._FFTConv.apply):
            uu, KK = u.clone().requires_grad_(need_u), K.clone().requires_grad_(not need_u)
            y = f(uu, KK)
            outs.append((y, *torch.autograd.grad(y, uu if need_u else KK, g)))
        torch.testing.assert_close(outs[0][0], _naive(u, K), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-10, atol=1e-10)


def test_results_do_not_depend_on_the_thread_count(lib):
    torch.manual_seed(4)
    u = torch.randn(7, 64, 300, requires_grad=True)
    K = torch.randn(64, 300, requires_grad=True)
    g = torch.randn(7, 64, 300)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _grads(_fused, u, K, g)
        torch.set_num_threads(3)
        three = _grads(_fused, u, K, g)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, three):
        assert torch.equal(a, b)


@contextlib.contextmanager
def torch_threads(n):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("chunk_rows", [1, 128, 200])
def test_chunks_give_the_whole_tensors_result_and_the_same_bits_on_any_thread_count(lib, chunk_rows, monkeypatch):
    """Rows in chunks of whole batch elements (1, 2 or 3 of 5): the values of one
    chunk over the whole tensor (float64: to rounding); the bits do not depend on the threads
    (ducc0: the chunks shared by a pool of Python threads)."""
    torch.manual_seed(6)
    u = torch.randn(5, 64, 90, dtype=torch.float64, requires_grad=True)
    K = torch.randn(64, 90, dtype=torch.float64, requires_grad=True)
    g = torch.randn(5, 64, 90, dtype=torch.float64)
    monkeypatch.setattr(fftconv, "CHUNK_ROWS", 10 ** 9)
    whole = _grads(_fused, u, K, g)
    monkeypatch.setattr(fftconv, "CHUNK_ROWS", chunk_rows)
    runs = []
    for threads in (1, 2, 3):
        with torch_threads(threads):
            runs.append(_grads(_fused, u, K, g))
    for a, b in zip(whole, runs[0]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)
    assert len(fftconv._spans(5, 64)) == {1: 5, 128: 3, 200: 2}[chunk_rows]


def test_retained_graph_backward_twice_and_pool_reuse(lib):
    torch.manual_seed(5)
    u = torch.randn(3, 4, 30, requires_grad=True)
    K = torch.randn(4, 30, requires_grad=True)
    g = torch.randn(3, 4, 30)
    y = _fused(u, K)
    first = torch.autograd.grad(y, (u, K), g, retain_graph=True)
    for _ in range(3):                                   # other calls take buffers meanwhile
        _fused(torch.randn(3, 4, 30), torch.randn(4, 30))
    second = torch.autograd.grad(y, (u, K), g)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    del y
    again = _grads(_fused, u, K, g)                      # buffers back from the freed graph
    for a, b in zip(first, again[1:]):
        assert torch.equal(a, b)


def test_inference_mode_then_training(lib):
    torch.manual_seed(7)
    u = torch.randn(2, 3, 40, dtype=torch.float64)
    K = torch.randn(3, 40, dtype=torch.float64)
    fftconv.POOL.clear()
    with torch.inference_mode():
        y0 = _fused(u, K)
    uu = u.clone().requires_grad_()
    y = _fused(uu, K)                                  # the pool's buffers are writable here
    (du,) = torch.autograd.grad(y, uu, torch.ones_like(y))
    with torch.inference_mode():
        y1 = _fused(u, K)
    torch.testing.assert_close(y0, _naive(u, K), rtol=1e-10, atol=1e-10)
    assert torch.equal(y, y1) and torch.equal(y0, y1)
    torch.testing.assert_close(du, torch.autograd.grad(kernel._FFTConv.apply(uu, K), uu, torch.ones_like(y))[0],
                               rtol=1e-10, atol=1e-10)


def test_lengths_sharing_one_fft_length(lib):
    torch.manual_seed(8)
    for L in (52, 50, 52, 51, 50):                     # one n for all: the pad buffers' tails
        u = torch.randn(2, 3, L, dtype=torch.float64, requires_grad=True)
        K = torch.randn(3, L, dtype=torch.float64, requires_grad=True)
        g = torch.randn(2, 3, L, dtype=torch.float64)
        fused = _grads(lambda u, K: fftconv.conv(u, K, 108, lib), u, K, g)
        for a, b in zip(fused, _grads(_naive, u, K, g)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_length_zero_is_an_input_error():
    with pytest.raises(InputError, match="length 0"):
        kernel.fft_conv(torch.randn(2, 3, 0), torch.randn(3, 0))


def test_without_the_native_library_one_warning_and_the_torch_path(monkeypatch, tmp_path):
    broken = tmp_path / "broken.c"
    broken.write_text("this is not C\n")
    monkeypatch.setattr(fftconv, "_LIB", NativeLib(broken, ["-O2", "-fPIC", "-shared"], bind=lambda lib: None,
                                                   purpose="a broken test library"))
    torch.manual_seed(6)
    u = torch.randn(2, 3, 25, dtype=torch.float64, requires_grad=True)
    K = torch.randn(3, 25, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        y = kernel.fft_conv(u, K)
        kernel.fft_conv(u, K)
    msgs = [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]
    assert len(msgs) == 1 and "native kernel unavailable" in msgs[0] and "torch.fft" in msgs[0]
    assert not fftconv.available()[0]
    assert y.grad_fn.name().endswith("_FFTConvBackward")
    torch.testing.assert_close(y, _naive(u, K), rtol=1e-10, atol=1e-10)


# ---- the last output alone (a last-token readout's last layer) ----------------------------------
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 3, 7), (4, 5, 50), (3, 16, 131)])
def test_last_output_is_the_convolutions_last_sample(shape):
    torch.manual_seed(9)
    u = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    K = torch.randn(*shape[1:], dtype=torch.float64, requires_grad=True)
    g = torch.randn(*shape[:2], dtype=torch.float64)
    got = _grads(fftconv.last_output, u, K, g)
    want = _grads(lambda a, b: _naive(a, b)[..., -1], u, K, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fftconv.last_output, (u, K))
    u32, K32 = u.detach().float(), K.detach().float()
    torch.testing.assert_close(kernel.conv_last(u32, K32), kernel.fft_conv(u32, K32)[..., -1],
                               rtol=1e-4, atol=1e-4)
    with torch.no_grad():                                     # no graph: no gradient buffers
        torch.testing.assert_close(kernel.conv_last(u, K), want[0])


def test_last_output_one_gradient_and_any_thread_count():
    torch.manual_seed(10)
    u = torch.randn(9, 32, 200, requires_grad=True)
    K = torch.randn(32, 200, requires_grad=True)
    g = torch.randn(9, 32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _grads(fftconv.last_output, u, K, g)
        torch.set_num_threads(3)
        three = _grads(fftconv.last_output, u, K, g)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, three):
        assert torch.equal(a, b)
    (dK,) = torch.autograd.grad(fftconv.last_output(u.detach(), K), (K,), g)
    assert torch.equal(dK, one[2])
    (du,) = torch.autograd.grad(fftconv.last_output(u, K.detach()), (u,), g)
    assert torch.equal(du, one[1])


def test_fft_library_choice(monkeypatch):
    monkeypatch.setattr(fftconv, "_DUCC", object())            # the rule, whether or not ducc0 is here
    for threads in (1, 2):
        with torch_threads(threads):
            monkeypatch.setattr(fftconv, "FFT", "auto")
            assert fftconv.fft_library() == "ducc0" and fftconv.describe() == "ducc0"
            monkeypatch.setattr(fftconv, "FFT", "torch")
            assert fftconv.fft_library() == "torch" and fftconv.describe() == "torch.fft"
            monkeypatch.setattr(fftconv, "FFT", "ducc0")
            assert fftconv.fft_library() == "ducc0"
    assert fftconv.fft_primes("ducc0") == (2, 3, 5) and fftconv.fft_primes("torch") == (2, 3, 5, 7)
    monkeypatch.setattr(fftconv, "_DUCC", None)
    monkeypatch.setattr(fftconv, "FFT", "auto")
    assert fftconv.fft_library() == "torch" and "not installed" in fftconv.describe()
    monkeypatch.setattr(fftconv, "FFT", "ducc0")
    with pytest.raises(ConfigError, match="not installed"):
        fftconv.fft_library()
    monkeypatch.setattr(fftconv, "FFT", "fftw")
    with pytest.raises(ConfigError, match="auto, ducc0, torch"):
        fftconv.fft_library()


def test_owned_buffers_return_to_the_pool_only_when_their_last_view_is_freed():
    import gc
    pool = fftconv._Pool(keep=2)
    a = pool.take_owned((3, 8), torch.float32)
    a.fill_(1.0)
    view = a[:, :5]                       # what a crop hands out
    ptr = a.data_ptr()
    del a
    gc.collect()
    b = pool.take_owned((3, 8), torch.float32)       # the first is still viewed: new memory
    ptr_b = b.data_ptr()
    assert ptr_b != ptr and torch.equal(view, torch.ones(3, 5))
    del view, b
    gc.collect()
    key = ((3, 8), torch.float32, "owned")
    assert len(pool.returned) == 2                   # both back, reused from here on
    c = pool.take_owned((3, 8), torch.float32)
    assert c.data_ptr() in (ptr, ptr_b) and len(pool.held[key]) == 1


def test_a_buffer_collected_while_the_pool_is_locked_does_not_deadlock():
    """The last view of an owned buffer can be collected inside any allocation, also one the
    pool makes while holding its lock (the garbage collector runs there): its return must not
    wait for the lock."""
    import gc
    import threading
    pool = fftconv._Pool(keep=2)
    a = pool.take_owned((3, 8), torch.float32)
    cycle = [a[:, :5]]
    cycle.append(cycle)                    # freed only by the cyclic collector
    del a, cycle
    done = threading.Event()

    def collect_under_the_lock():
        with pool.lock:
            gc.collect()
        done.set()

    t = threading.Thread(target=collect_under_the_lock, daemon=True)
    t.start()
    t.join(timeout=20)
    assert done.is_set(), "the pool deadlocked returning a buffer while locked"
    b = pool.take_owned((3, 8), torch.float32)       # the returned buffer, reused
    assert b.shape == (3, 8) and not pool.returned


def test_the_convolution_output_is_a_strided_view_with_the_same_values(lib):
    torch.manual_seed(11)
    u = torch.randn(4, 6, 90, requires_grad=True)
    K = torch.randn(6, 90, requires_grad=True)
    y = _fused(u, K)
    assert y.shape == (4, 6, 90) and not y.is_contiguous()      # rows of the full inverse transform
    torch.testing.assert_close(y, kernel._FFTConv.apply(u, K), rtol=1e-4, atol=1e-4)
    first = y.detach().clone()
    for _ in range(3):                                          # later calls do not write into it
        _fused(torch.randn(4, 6, 90), K.detach())
    assert torch.equal(y.detach(), first)


@pytest.mark.parametrize("act,p", [("gelu", 0.3), ("relu", 0.3), ("relu", 0.0), ("none", 0.2)])
@pytest.mark.parametrize("chunk_rows", [64, 10 ** 9])
def test_activation_epilogue_equals_act_dropout_after_the_convolution(lib, act, p, chunk_rows, monkeypatch):
    """``fused.ActDrop`` inside the convolution (each chunk of the output activated in cache;
    its gradient written into the transform's buffer): the bits of ``act_dropout`` after the
    convolution, forward and both gradients, for any chunk size and thread count."""
    from edgessm.ssm import fused
    if not fused.available()[0]:
        pytest.skip("no fused block library")
    monkeypatch.setattr(fftconv, "CHUNK_ROWS", chunk_rows)
    torch.manual_seed(7)
    u = torch.randn(3, 32, 100, requires_grad=True)
    K = (0.1 * torch.randn(32, 100)).requires_grad_()
    g = torch.randn(3, 32, 100)
    n = kernel._fft_len(2 * 100 - 1, fftconv.fft_primes(lib))
    ref = _grads(lambda u, K: fused.act_dropout(fftconv.conv(u, K, n, lib), act, p, seed=11), u, K, g)
    for threads in (1, 2):
        with torch_threads(threads):
            got = _grads(lambda u, K: fftconv.conv(u, K, n, lib, fused.ActDrop(act, p, seed=11)), u, K, g)
        for a, b in zip(ref, got):
            assert torch.equal(a, b)
    with torch.no_grad():                                  # inference: the same output
        assert torch.equal(fftconv.conv(u, K, n, lib, fused.ActDrop(act, p, seed=11)), ref[0])
    # the unfused path (another device or tracing) applies the epilogue after the convolution
    monkeypatch.setattr(fftconv, "ENABLED", False)
    y = kernel.fft_conv(u, K, fused.ActDrop(act, p, seed=11))
    torch.testing.assert_close(y, ref[0], rtol=1e-4, atol=1e-5)


def test_epilogue_gradcheck_float64():
    from edgessm.ssm import fused
    if not fused.available()[0]:
        pytest.skip("no fused block library")
    torch.manual_seed(8)
    u = torch.randn(2, 4, 12, dtype=torch.float64, requires_grad=True)
    K = torch.randn(4, 12, dtype=torch.float64, requires_grad=True)
    n = kernel._fft_len(23)
    for act in ("gelu", "relu"):
        torch.autograd.gradcheck(lambda u, K: fftconv.conv(u, K, n, fftconv.fft_library(),
                                                           fused.ActDrop(act, 0.25, seed=3)), (u, K))


def test_inverse_transform_rows_4kib_apart_are_padded_for_ducc0_only():
    assert fftconv._row_len(2048, torch.float32, "ducc0") == 2048 + 16
    assert fftconv._row_len(1024, torch.float32, "ducc0") == 1024 + 16
    assert fftconv._row_len(512, torch.float64, "ducc0") == 512 + 8
    assert fftconv._row_len(1600, torch.float32, "ducc0") == 1600       # 6400 bytes: not padded
    assert fftconv._row_len(512, torch.float32, "ducc0") == 512         # 2 KiB
    assert fftconv._row_len(2048, torch.float32, "torch") == 2048


@pytest.mark.skipif(fftconv._DUCC is None, reason="ducc0 is not installed (the fft extra)")
@pytest.mark.parametrize("epilogue", [False, True])
def test_padded_inverse_transform_rows_give_the_same_bits(epilogue, monkeypatch):
    """L = 512: n = 1024 float32 rows are 4 KiB apart, so ducc0 writes them into padded rows;
    outputs and both gradients equal those of unpadded rows bit for bit."""
    from edgessm.ssm import fused
    monkeypatch.setattr(fftconv, "FFT", "ducc0")
    torch.manual_seed(12)
    u0 = torch.randn(3, 8, 512)
    K0 = torch.randn(8, 512) * torch.exp(-torch.arange(512) / 80)
    g = torch.randn(3, 8, 512)
    n = kernel._fft_len(2 * 512 - 1, fftconv.fft_primes("ducc0"))
    assert n == 1024

    def run(pad):
        monkeypatch.setattr(fftconv, "ROW_PAD_BYTES", pad)
        fftconv.POOL.clear()
        u, K = u0.clone().requires_grad_(), K0.clone().requires_grad_()
        epi = fused.ActDrop("relu", 0.2, seed=5) if epilogue else None
        y = fftconv.conv(u, K, n, "ducc0", epi)
        return (y.detach().clone(), *torch.autograd.grad(y, (u, K), g)), y

    (a, y_pad), (b, y_plain) = run(64), run(0)
    if not epilogue:
        assert y_pad.stride(-2) == 1024 + 16 and y_plain.stride(-2) == 1024
    for x, z in zip(a, b):
        assert torch.equal(x, z)
