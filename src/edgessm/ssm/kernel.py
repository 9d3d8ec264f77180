"""The S4D convolution kernel and the FFT convolution.

K_l = 2 Re( sum_n C_n dB_n dA_n^l ),  l = 0 .. L-1,   shape (H, L).
"""
from __future__ import annotations

import torch


def vandermonde_kernel(Cb: torch.Tensor, log_dA: torch.Tensor, L: int) -> torch.Tensor:
    """Cb = C * dB (H, N/2) complex, log_dA (H, N/2) complex -> K (H, L) real.

    Uses dA^l = exp(l log dA) so every power is computed directly (no accumulated error).
    """
    l = torch.arange(L, device=Cb.device, dtype=Cb.real.dtype)
    V = torch.exp(log_dA.unsqueeze(-1) * l)            # (H, N/2, L)
    return 2 * torch.einsum("hn,hnl->hl", Cb, V).real


class _FFTConv(torch.autograd.Function):
    """Causal FFT convolution with a hand-written backward made of real FFTs only.

    Autograd through ``rfft`` would differentiate with full complex FFTs; the gradients
    are themselves FFT correlations:  du = irfft(G conj(K^)),  dK = irfft(sum_b G conj(U^)),
    with G the rfft of the output gradient (zero padding to n >= 2L keeps them causal).
    """

    @staticmethod
    def forward(ctx, u, K):
        L = u.shape[-1]
        n = _fft_len(2 * L)
        Uf = torch.fft.rfft(u, n=n)
        Kf = torch.fft.rfft(K, n=n)
        ctx.save_for_backward(Uf, Kf)
        ctx.L, ctx.n, ctx.u_shape = L, n, u.shape
        return torch.fft.irfft(Uf * Kf, n=n)[..., :L]

    @staticmethod
    def backward(ctx, gy):
        Uf, Kf = ctx.saved_tensors
        L, n = ctx.L, ctx.n
        Gf = torch.fft.rfft(gy, n=n)
        du = dK = None
        if ctx.needs_input_grad[0]:
            du = torch.fft.irfft(Gf * Kf.conj(), n=n)[..., :L]
        if ctx.needs_input_grad[1]:
            prod = Gf * Uf.conj()
            prod = prod.reshape(-1, *prod.shape[-2:]).sum(0) if prod.dim() > 2 else prod
            dK = torch.fft.irfft(prod, n=n)[..., :L]
        return du, dK


def fft_conv(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Causal convolution y_l = sum_{j<=l} K_j u_{l-j} along the last axis.

    u (..., H, L), K (H, L) -> (..., H, L). Zero-padded to n >= 2L, so no wrap-around.
    """
    if u.requires_grad or K.requires_grad:
        return _FFTConv.apply(u, K)
    L = u.shape[-1]
    n = _fft_len(2 * L)
    return torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(K, n=n), n=n)[..., :L]


def _fft_len(n: int) -> int:
    """Smallest length >= n with only factors 2, 3, 5 (fast for pocketfft)."""
    if not isinstance(n, int) or n < 1:
        from ..errors import InputError
        raise InputError(f"FFT length must be a positive integer, got {n!r} (a sequence of length 0?)")
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1
