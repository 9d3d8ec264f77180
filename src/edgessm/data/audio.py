"""A small speech front end in numpy: WAV reading, log-mel and MFCC features.

Pipeline (defaults in :class:`FrontEnd`, for 8 kHz speech):

1. :func:`read_wav`: stdlib :mod:`wave`, validated as mono 16-bit PCM at the expected
   rate, scaled to [-1, 1).
2. Pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]`` (``y[0] = x[0]``).
3. Framing: 25 ms windows (200 samples) every 10 ms (80 samples); only whole frames, so
   ``n_frames = 1 + (n - 200) // 80`` (a signal shorter than one window is zero-padded
   to one frame).
4. Hamming window (symmetric), power spectrum ``|rfft(frame, 256)|^2 / 256``.
5. Triangular mel filterbank, HTK mel scale ``mel = 2595 log10(1 + f / 700)``,
   ``n_mels`` (default 32) filters spread evenly in mel between ``fmin`` and ``fmax``
   (default 0 Hz to Nyquist), each rising linearly from 0 at its left edge to 1 at its
   centre and falling to 0 at its right edge, evaluated at the exact FFT bin
   frequencies (so no filter is empty even at low frequencies).
6. ``log(max(energy, log_floor))``: natural log with a floor (default 1e-8) so digital
   silence gives a finite value.
7. Optionally (``n_mfcc``) an orthonormal DCT-II over the mel channels, keeping the
   first ``n_mfcc`` coefficients (MFCC). Log-mel is the default.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import wave

import numpy as np

from edgessm.errors import ConfigError, DataError

__all__ = [
    "read_wav",
    "hz_to_mel",
    "mel_to_hz",
    "mel_filterbank",
    "dct_ii_matrix",
    "hamming",
    "frame_signal",
    "vtlp_warp",
    "FrontEnd",
]

#: Boundary of :func:`vtlp_warp` as a fraction of Nyquist: below ``VTLP_BOUNDARY * nyquist *
#: min(alpha, 1) / alpha`` the warp is ``f -> alpha f``.
VTLP_BOUNDARY = 0.8


def read_wav(path: str | os.PathLike, *, sample_rate: int = 8000) -> np.ndarray:
    """Samples of a mono 16-bit PCM WAV file as float32 in [-1, 1).

    Raises :class:`DataError` naming the file if it is not a readable WAV file, is not
    mono, not 16-bit, not at ``sample_rate`` Hz, empty or truncated.
    """
    try:
        with wave.open(os.fspath(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            n = w.getnframes()
            problems = []
            if channels != 1:
                problems.append(f"{channels} channels (expected mono)")
            if width != 2:
                problems.append(f"{8 * width}-bit samples (expected 16-bit)")
            if rate != sample_rate:
                problems.append(f"{rate} Hz (expected {sample_rate} Hz)")
            if problems:
                raise DataError(f"{path}: unsupported WAV format, {', '.join(problems)}; "
                                f"convert it to mono 16-bit PCM at {sample_rate} Hz or remove it.")
            data = w.readframes(n)
    except (wave.Error, EOFError, struct.error, OSError) as e:
        why = f"{type(e).__name__}: {e}" if str(e) else "unexpected end of file"
        raise DataError(f"{path} is not a readable WAV file ({why}); replace it.") from None
    if n == 0 or len(data) != 2 * n:
        raise DataError(f"{path} is empty or truncated ({len(data) // 2} of {n} samples); replace it.")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) * np.float32(1.0 / 32768.0)


def hz_to_mel(f):
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def vtlp_warp(f, alpha: float, nyquist: float) -> np.ndarray:
    """Piecewise-linear vocal-tract-length warp of frequencies ``f`` (Hz) by ``alpha`` > 0.

    ``f -> alpha f`` up to ``b = VTLP_BOUNDARY * nyquist * min(alpha, 1) / alpha``, then the
    straight line from ``(b, alpha b)`` to ``(nyquist, nyquist)``: monotone, 0 and Nyquist fixed
    (Jaitly and Hinton, 2013)."""
    if not (np.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"vtlp warp factor must be a finite number > 0, got {alpha!r}")
    f = np.asarray(f, dtype=np.float64)
    b = VTLP_BOUNDARY * nyquist * min(alpha, 1.0) / alpha
    high = nyquist - (nyquist - alpha * b) / (nyquist - b) * (nyquist - f)
    return np.where(f <= b, alpha * f, high)


def mel_filterbank(n_mels: int = 32, n_fft: int = 256, sample_rate: int = 8000,
                   fmin: float = 0.0, fmax: float | None = None, warp: float = 1.0) -> np.ndarray:
    """Triangular mel filters as an ``(n_mels, n_fft // 2 + 1)`` float32 matrix.

    Filter ``m`` has edges at ``mel_to_hz`` of ``n_mels + 2`` points evenly spaced in mel
    between ``fmin`` and ``fmax``: left ``edges[m]``, peak ``edges[m + 1]`` (value 1 when
    a bin falls exactly there), right ``edges[m + 2]``. ``warp`` != 1 evaluates the filters
    at the bins' :func:`vtlp_warp` frequencies (vocal-tract-length perturbation).
    """
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    if not (n_mels >= 1 and n_fft >= 2 and 0.0 <= fmin < fmax <= sample_rate / 2.0):
        raise ConfigError(f"bad mel filterbank: n_mels={n_mels}, n_fft={n_fft}, "
                          f"fmin={fmin}, fmax={fmax}, sample_rate={sample_rate}")
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins = np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)
    if warp != 1.0:
        bins = vtlp_warp(bins, warp, sample_rate / 2.0)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - left) / (centre - left)
    falling = (right - bins) / (right - centre)
    fb = np.maximum(0.0, np.minimum(rising, falling))
    if np.any(fb.max(axis=1) <= 0):
        raise ConfigError(f"{n_mels} mel filters are too narrow for n_fft={n_fft} at "
                          f"{sample_rate} Hz (some filter covers no FFT bin); use fewer mels or a larger n_fft.")
    return fb.astype(np.float32)


def dct_ii_matrix(n_in: int, n_out: int | None = None) -> np.ndarray:
    """Orthonormal DCT-II as an ``(n_out, n_in)`` matrix: ``c = D @ x``.

    ``D[k, n] = s_k cos(pi k (2n + 1) / (2 n_in))``, ``s_0 = sqrt(1/n_in)``,
    ``s_k = sqrt(2/n_in)``; the full square matrix is orthogonal.
    """
    n_out = n_in if n_out is None else n_out
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    d = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    d[0] *= np.sqrt(0.5)
    return d.astype(np.float32)


def hamming(n: int) -> np.ndarray:
    """Symmetric Hamming window ``0.54 - 0.46 cos(2 pi k / (n - 1))``."""
    if n == 1:
        return np.ones(1, dtype=np.float32)
    k = np.arange(n)
    return (0.54 - 0.46 * np.cos(2.0 * np.pi * k / (n - 1))).astype(np.float32)


def hann(n: int) -> np.ndarray:
    """Symmetric Hann window ``0.5 - 0.5 cos(2 pi k / (n - 1))``."""
    if n == 1:
        return np.ones(1, dtype=np.float32)
    k = np.arange(n)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * k / (n - 1))).astype(np.float32)


def frame_signal(x: np.ndarray, win_length: int, hop_length: int) -> np.ndarray:
    """Whole frames of ``x`` as a ``(n_frames, win_length)`` view (zero-padded to one frame if short)."""
    x = np.asarray(x)
    if x.shape[0] < win_length:
        x = np.pad(x, (0, win_length - x.shape[0]))
    n_frames = 1 + (x.shape[0] - win_length) // hop_length
    return np.lib.stride_tricks.sliding_window_view(x, win_length)[::hop_length][:n_frames]


@dataclasses.dataclass(frozen=True)
class FrontEnd:
    """Log-mel (or MFCC) front end; call it on a float signal to get ``(n_frames, n_features)``.

    Times are in samples at ``sample_rate`` Hz: 200 samples = 25 ms, 80 = 10 ms at 8 kHz.
    """

    sample_rate: int = 8000
    win_length: int = 200
    hop_length: int = 80
    n_fft: int = 256
    n_mels: int = 32
    fmin: float = 0.0
    fmax: float | None = None
    preemphasis: float = 0.97
    window: str = "hamming"
    log_floor: float = 1e-8
    n_mfcc: int | None = None

    def __post_init__(self):
        if self.window not in ("hamming", "hann"):
            raise ConfigError(f"window must be 'hamming' or 'hann', got {self.window!r}")
        if not (0 < self.hop_length <= self.win_length <= self.n_fft):
            raise ConfigError(f"need 0 < hop_length <= win_length <= n_fft, got "
                              f"{self.hop_length}, {self.win_length}, {self.n_fft}")
        if self.n_mfcc is not None and not 1 <= self.n_mfcc <= self.n_mels:
            raise ConfigError(f"n_mfcc must be in [1, n_mels={self.n_mels}], got {self.n_mfcc}")
        if not self.log_floor > 0:
            raise ConfigError(f"log_floor must be > 0, got {self.log_floor}")

    @property
    def n_features(self) -> int:
        return self.n_mels if self.n_mfcc is None else self.n_mfcc

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for a signal of ``n_samples`` samples."""
        return 1 + max(0, n_samples - self.win_length) // self.hop_length

    def _matrices(self):
        # Built once per (hashable, frozen) configuration.
        return _frontend_matrices(self)

    def power_spectrum(self, signal: np.ndarray) -> np.ndarray:
        """``(n_frames, n_fft // 2 + 1)`` power spectrum after pre-emphasis and windowing."""
        x = np.asarray(signal, dtype=np.float32)
        if x.ndim != 1:
            raise ConfigError(f"front end expects a 1-D signal, got shape {x.shape}")
        if self.preemphasis:
            x = np.concatenate([x[:1], x[1:] - np.float32(self.preemphasis) * x[:-1]])
        window = self._matrices()[0]
        frames = frame_signal(x, self.win_length, self.hop_length) * window
        spec = np.fft.rfft(frames, n=self.n_fft, axis=-1)
        return (spec.real ** 2 + spec.imag ** 2).astype(np.float32) / np.float32(self.n_fft)

    def __call__(self, signal: np.ndarray, warp: float = 1.0) -> np.ndarray:
        """``(n_frames, n_features)`` float32 log-mel (or MFCC) features of ``signal``; ``warp``:
        the vocal-tract-length warp factor of the filterbank (1: none)."""
        _, fb, dct = self._matrices()
        if warp != 1.0:
            fb = mel_filterbank(self.n_mels, self.n_fft, self.sample_rate, self.fmin, self.fmax, warp)
        mel = self.power_spectrum(signal) @ fb.T
        feats = np.log(np.maximum(mel, np.float32(self.log_floor)))
        if dct is not None:
            feats = feats @ dct.T
        return feats.astype(np.float32, copy=False)


_MATRIX_CACHE: dict[FrontEnd, tuple] = {}


def _frontend_matrices(fe: FrontEnd):
    m = _MATRIX_CACHE.get(fe)
    if m is None:
        window = hamming(fe.win_length) if fe.window == "hamming" else hann(fe.win_length)
        fb = mel_filterbank(fe.n_mels, fe.n_fft, fe.sample_rate, fe.fmin, fe.fmax)
        dct = None if fe.n_mfcc is None else dct_ii_matrix(fe.n_mels, fe.n_mfcc)
        m = _MATRIX_CACHE[fe] = (window, fb, dct)
    return m
