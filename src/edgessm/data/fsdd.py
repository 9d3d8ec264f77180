"""Free Spoken Digit Dataset (FSDD) as log-mel sequences.

Recordings: ``<root>/fsdd/recordings/{digit}_{speaker}_{index}.wav``, mono 16-bit PCM
at 8 kHz, 1,148 to 18,262 samples (v1.0.10: 6 speakers x 10 digits x 50 = 3,000).

Features: :class:`~edgessm.data.audio.FrontEnd` defaults (32 log-mel channels, 25 ms
Hamming windows, 10 ms hop). The longest recording (18,262 samples) gives
``1 + (18262 - 200) // 80 = 226`` frames, so every utterance becomes exactly
:data:`FSDD_SEQ_LEN` = 226 frames: features are normalized per channel with the mean
and std of all frames of the *train* split (the same statistics are used for its val
and test splits), then LEFT-padded with zeros so the last token is always the end of
the utterance. A longer recording (not in v1.0.10) would keep its last 226 frames.

Splits: by default the conventional one, recording index 0-4 of every digit and
speaker is test (300 recordings), the rest train (2,700); with ``speaker_holdout`` all
recordings of that speaker are test and the other speakers' are train. "val" is a
seeded subset of train as for every task, or, with ``val_speaker`` (another speaker than the
held-out one), all recordings of that speaker outside test: then the model is selected on a
voice it never trained on, and train is the remaining speakers. Features are computed once per process
(about a second for all 3,000) and cached in memory.

Normalization (``normalize``): ``"train"`` (default) as above; ``"cmn"`` subtracts each
utterance's own per-channel mean over its frames (cepstral mean normalization: a fixed
channel or gain becomes a constant offset in log-mel, and goes away), then divides by the
per-channel std of the mean-normalized train frames; ``"cmvn"`` also divides by the
utterance's own per-channel std (floored at :data:`CMVN_STD_FLOOR`). Padding stays zero.
``top_db`` > 0 first clamps each utterance's log-mel from below at its own maximum minus
``top_db`` dB (as librosa's ``power_to_db``), so digital silence (the front end's log floor, 160 dB
down) and a quiet room's noise floor both become the same floor relative to the voice.
``trim_db`` > 0 (before that) drops the leading and trailing frames whose energy (the log of
the frame's summed mel energies) is more than ``trim_db`` dB below the utterance's loudest frame,
so every utterance starts and ends with its voice whatever silence the recording had; the
lengths are then the trimmed frame counts.

Augmentation of training batches (:class:`Augment`, see :func:`augment_batch`): from the
waveform, each recording gets a gain, a time stretch, a time shift and white noise at an
SNR, then the front end (with a vocal-tract-length warp of its mel filters) and the split's
normalization, then SpecAugment-style time and frequency masks. Every draw comes from ``numpy.random.default_rng((seed, epoch, step, n))``,
so a batch depends only on its position in the run, never on a global random stream: a run
and its resumption draw the same augmentations.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import re
import shutil
import tarfile
from typing import NamedTuple

import numpy as np
import torch

from edgessm.errors import ConfigError, DataError, MissingDataError

from ._splits import split_indices
from .audio import FrontEnd, read_wav
from .download import SOURCES, download_file, missing_message

__all__ = [
    "FRONT_END",
    "FSDD_MAX_SAMPLES",
    "FSDD_SEQ_LEN",
    "FSDD_N_RECORDINGS",
    "Recording",
    "list_recordings",
    "split_recordings",
    "load_fsdd_split",
    "download_fsdd",
    "NORMALIZE",
    "Augment",
    "augment_batch",
    "speakers",
]

FRONT_END = FrontEnd()
#: Longest recording of FSDD v1.0.10, in samples.
FSDD_MAX_SAMPLES = 18262
#: Fixed sequence length in frames: ``FRONT_END.n_frames(18262)`` = 226.
FSDD_SEQ_LEN = FRONT_END.n_frames(FSDD_MAX_SAMPLES)
#: Number of recordings in FSDD v1.0.10 (checked after a download).
FSDD_N_RECORDINGS = 3000
#: Index < this is test in the conventional split.
TEST_INDEX_BELOW = 5

#: Normalizations of the log-mel frames (see the module doc).
NORMALIZE = ("train", "cmn", "cmvn")
#: Floor of the per-utterance std of ``"cmvn"`` (log-mel units; the train-split channel
#: stds are 2.5-4.3), so a channel that is nearly constant over a short utterance is not blown up.
CMVN_STD_FLOOR = 0.1

_NAME = re.compile(r"^([0-9])_([A-Za-z]+)_([0-9]+)\.wav$")
_ARCHIVE = "free-spoken-digit-dataset-1.0.10.tar.gz"


class Recording(NamedTuple):
    """One FSDD recording: its path and what its file name says."""

    path: str
    digit: int
    speaker: str
    index: int


def _scan(folder: pathlib.Path) -> tuple[tuple, tuple[Recording, ...]]:
    recs, sig = [], []
    with os.scandir(folder) as it:
        for e in it:
            m = _NAME.match(e.name)
            if m and e.is_file():
                st = e.stat()
                recs.append(Recording(e.path, int(m.group(1)), m.group(2).lower(), int(m.group(3))))
                sig.append((e.name, st.st_mtime_ns, st.st_size))
    order = sorted(range(len(recs)), key=lambda i: (recs[i].index, recs[i].speaker, recs[i].digit))
    return (str(folder), tuple(sig[i] for i in order)), tuple(recs[i] for i in order)


def list_recordings(root: pathlib.Path, *, download: bool = False) -> tuple[Recording, ...]:
    """All recordings under ``<root>/fsdd/recordings``, sorted by (index, speaker, digit).

    That order interleaves digits and speakers, so the first few samples of any split
    (``limit``) cover every class.
    """
    return _listing(root, download)[1]


def _listing(root: pathlib.Path, download: bool):
    folder = root / "fsdd" / "recordings"
    if not (folder.is_dir() and any(_NAME.match(n) for n in os.listdir(folder))):
        if not download:
            raise MissingDataError(missing_message(
                "FSDD", folder, root, ["the recordings {digit}_{speaker}_{index}.wav"]))
        download_fsdd(root)
    return _scan(folder)


def download_fsdd(root: pathlib.Path) -> pathlib.Path:
    """Fetch FSDD v1.0.10 into ``<root>/fsdd/recordings`` and check its file count.

    The GitHub tag archive has no stable checksum, so instead every extracted file name
    is validated and the count must be :data:`FSDD_N_RECORDINGS`. Only the WAV files of
    the archive's ``recordings/`` folder are written, under their base names (nothing
    else in the archive is extracted). The archive is deleted afterwards.
    """
    folder = root / "fsdd"
    rec = folder / "recordings"
    part = folder / ".recordings.part"
    archive = folder / _ARCHIVE
    src = SOURCES["fsdd"][_ARCHIVE]
    download_file(src.url, archive, src.md5)
    try:
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        count = 0
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for m in tar:
                    parts = m.name.split("/")
                    if not (m.isfile() and len(parts) >= 2 and parts[-2] == "recordings"
                            and _NAME.match(parts[-1])):
                        continue
                    f = tar.extractfile(m)
                    (part / parts[-1]).write_bytes(f.read())
                    count += 1
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"{archive} (from {src.url}) is not a readable tar.gz archive ({e}); retry the download.") from None
        if count != FSDD_N_RECORDINGS:
            raise DataError(f"the FSDD archive from {src.url} holds {count} recordings, expected "
                            f"{FSDD_N_RECORDINGS}; it is not FSDD v1.0.10; nothing was installed.")
        if rec.is_dir() and not any(rec.iterdir()):
            rec.rmdir()
        os.replace(part, rec)
    finally:
        shutil.rmtree(part, ignore_errors=True)
        if archive.exists():
            archive.unlink()
    return rec


def split_recordings(recs, split: str, *, digits=None, val_fraction: float = 0.1,
                     seed: int = 0, speaker_holdout: str | None = None,
                     val_speaker: str | None = None) -> np.ndarray:
    """Indices into ``recs`` (from :func:`list_recordings`) of one split, in order.

    digits: keep only these digits (e.g. (0, 1)); speaker_holdout, val_speaker: see the
    module doc (with val_speaker, val_fraction and seed play no part).
    """
    digit = np.array([r.digit for r in recs], dtype=np.int64)
    keep = np.ones(len(recs), dtype=bool) if digits is None else np.isin(digit, list(digits))
    if speaker_holdout is None:
        test = np.array([r.index < TEST_INDEX_BELOW for r in recs], dtype=bool)
    else:
        speakers = sorted({r.speaker for r in recs})
        who = str(speaker_holdout).lower()
        if who not in speakers:
            raise ConfigError(f"unknown FSDD speaker {speaker_holdout!r} for speaker_holdout; "
                              f"known speakers: {', '.join(speakers)}")
        test = np.array([r.speaker == who for r in recs], dtype=bool)
    if split == "test":
        return np.flatnonzero(keep & test)
    if val_speaker is not None:
        speakers = sorted({r.speaker for r in recs})
        v = str(val_speaker).lower()
        if v not in speakers:
            raise ConfigError(f"unknown FSDD speaker {val_speaker!r} for val_speaker; "
                              f"known speakers: {', '.join(speakers)}")
        if speaker_holdout is not None and v == str(speaker_holdout).lower():
            raise ConfigError(f"val_speaker must differ from speaker_holdout (both {v!r}): the "
                              f"held-out speaker is the test set")
        val = np.array([r.speaker == v for r in recs], dtype=bool)
        return np.flatnonzero(keep & ~test & (val if split == "val" else ~val))
    train = np.flatnonzero(keep & ~test)
    return train[split_indices(len(train), split, val_fraction, seed)]


def speakers(root: pathlib.Path) -> tuple[str, ...]:
    """The speakers of the recordings under ``root``, sorted (lower case)."""
    return tuple(sorted({r.speaker for r in list_recordings(root)}))


@functools.lru_cache(maxsize=2)
def _waveforms(sig: tuple) -> tuple[np.ndarray, ...]:
    folder = pathlib.Path(sig[0])
    return tuple(read_wav(folder / name, sample_rate=FRONT_END.sample_rate) for name, _, _ in sig[1])


@functools.lru_cache(maxsize=2)
def _features(sig: tuple) -> tuple[np.ndarray, ...]:
    return tuple(FRONT_END(w) for w in _waveforms(sig))


def _trim(f: np.ndarray, trim_db: float) -> np.ndarray:
    """Log-mel frames without the leading and trailing frames more than `trim_db` dB below the
    loudest frame (0: unchanged)."""
    if not trim_db:
        return f
    e = np.logaddexp.reduce(f.astype(np.float64), axis=1)
    keep = np.flatnonzero(e >= e.max() - trim_db * np.log(10.0) / 10.0)
    return f[keep[0]:keep[-1] + 1]


def _clamp(f: np.ndarray, top_db: float) -> np.ndarray:
    """Log-mel frames clamped from below at their maximum minus `top_db` dB (0: unchanged)."""
    if not top_db:
        return f
    return np.maximum(f, f.max() - np.float32(top_db * np.log(10.0) / 10.0))


def _centre(f: np.ndarray, normalize: str) -> np.ndarray:
    """Frames minus the utterance's own per-channel mean ("cmn", "cmvn"), as float64."""
    f = f.astype(np.float64)
    return f if normalize == "train" else f - f.mean(axis=0)


@functools.lru_cache(maxsize=16)
def _train_stats(sig: tuple, digits, val_fraction: float, seed: int, speaker_holdout,
                 normalize: str = "train", val_speaker=None, top_db: float = 0.0, trim_db: float = 0.0):
    recs = _scan_cached(sig)
    feats = _features(sig)
    idx = split_recordings(recs, "train", digits=digits, val_fraction=val_fraction,
                           seed=seed, speaker_holdout=speaker_holdout, val_speaker=val_speaker)
    if len(idx) == 0:
        raise DataError("the FSDD train split is empty; cannot compute normalization statistics.")
    frames = np.concatenate([_centre(_clamp(_trim(feats[i], trim_db), top_db), normalize) for i in idx])
    mean = frames.mean(axis=0)
    std = np.maximum(frames.std(axis=0), 1e-6)
    return mean.astype(np.float32), std.astype(np.float32)


def _normalized(f: np.ndarray, normalize: str, mean: np.ndarray, std: np.ndarray,
                top_db: float = 0.0, trim_db: float = 0.0) -> np.ndarray:
    """One utterance's frames (T, C) trimmed (`trim_db`), clamped (`top_db`) and normalized as
    `normalize` says (float32)."""
    f = _clamp(_trim(f, trim_db), top_db)
    if normalize == "train":
        return (f - mean) / std
    c = _centre(f, normalize)
    if normalize == "cmn":
        return (c / std).astype(np.float32)
    return (c / np.maximum(c.std(axis=0), CMVN_STD_FLOOR)).astype(np.float32)


def _scan_cached(sig: tuple) -> tuple[Recording, ...]:
    folder = sig[0]
    out = []
    for name, _, _ in sig[1]:
        m = _NAME.match(name)
        out.append(Recording(os.path.join(folder, name), int(m.group(1)), m.group(2).lower(), int(m.group(3))))
    return tuple(out)


def _check_normalize(normalize) -> str:
    if normalize not in NORMALIZE:
        raise ConfigError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
    return normalize


#: Largest ``top_db`` (the front end's log floor is 160 dB below full scale).
TOP_DB_MAX = 120.0


def check_top_db(top_db, name: str = "top_db") -> float:
    """`top_db` (or `trim_db`) as a float in [0, TOP_DB_MAX] (0: off), else a ConfigError."""
    if isinstance(top_db, bool) or not isinstance(top_db, (int, float, np.floating)) \
            or not (np.isfinite(top_db) and 0.0 <= top_db <= TOP_DB_MAX):
        raise ConfigError(f"{name} must be a finite number in [0, {TOP_DB_MAX:g}] dB (0: off), got {top_db!r}")
    return float(top_db)


def train_statistics(root: pathlib.Path, *, digits=None, val_fraction: float = 0.1, seed: int = 0,
                     speaker_holdout: str | None = None, normalize: str = "train",
                     val_speaker: str | None = None, top_db: float = 0.0,
                     trim_db: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) of the log-mel frames of the train split used to normalize
    (for ``"cmn"``: of the frames after each utterance's mean is taken off; mean is then 0)."""
    sig, _ = _listing(root, False)
    return _train_stats(sig, None if digits is None else tuple(digits), val_fraction, seed,
                        None if speaker_holdout is None else str(speaker_holdout).lower(),
                        _check_normalize(normalize), None if val_speaker is None else str(val_speaker).lower(),
                        check_top_db(top_db), check_top_db(trim_db, "trim_db"))


def _place(x: np.ndarray, row: int, f: np.ndarray) -> int:
    """Left-pad frames `f` into x[row] (keeping the last L); returns the frames kept."""
    L = x.shape[1]
    f = f[-L:]
    x[row, L - len(f):] = f
    return len(f)


def load_fsdd_split(root: pathlib.Path, split: str, *, digits=None, download: bool = False,
                    val_fraction: float = 0.1, seed: int = 0, speaker_holdout: str | None = None,
                    normalize: str = "train", augment: "Augment | None" = None,
                    val_speaker: str | None = None, top_db: float = 0.0, trim_db: float = 0.0):
    """``(x, y, lengths)`` of one split: x (N, FSDD_SEQ_LEN, 32) float32, y (N,) int64 digits,
    lengths (N,) int64 real (unpadded) frame counts.

    With `augment` (an :class:`Augment` that augments anything) a fourth item is returned: a
    function ``batch(rows, key)`` giving the augmented x of those rows of the split for
    ``key = (seed, epoch, step)`` (see :func:`augment_batch`)."""
    _check_normalize(normalize)
    top_db, trim_db = check_top_db(top_db), check_top_db(trim_db, "trim_db")
    sig, recs = _listing(root, download)
    digits = None if digits is None else tuple(digits)
    holdout = None if speaker_holdout is None else str(speaker_holdout).lower()
    vspk = None if val_speaker is None else str(val_speaker).lower()
    idx = split_recordings(recs, split, digits=digits, val_fraction=val_fraction, seed=seed,
                           speaker_holdout=holdout, val_speaker=vspk)
    feats = _features(sig)
    mean, std = _train_stats(sig, digits, val_fraction, seed, holdout, normalize, vspk, top_db, trim_db)
    x = np.zeros((len(idx), FSDD_SEQ_LEN, FRONT_END.n_features), dtype=np.float32)
    lengths = np.empty(len(idx), dtype=np.int64)
    for row, i in enumerate(idx):
        lengths[row] = _place(x, row, _normalized(feats[i], normalize, mean, std, top_db, trim_db))
    y = np.array([recs[i].digit for i in idx], dtype=np.int64)
    out = (torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(lengths))
    if augment is None or not augment.active:
        return out
    waves = _waveforms(sig)

    def batch(rows, key) -> torch.Tensor:
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        return augment_batch([waves[idx[r]] for r in rows], augment, key, normalize, mean, std,
                             top_db, trim_db)
    return (*out, batch)


# ---- augmentation --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Augment:
    """Augmentation of training recordings (0 turns each one off); the ``[data]`` fields ``aug_*``.

    snr_db: white Gaussian noise at an SNR drawn uniformly in [snr_db, snr_db + 20] dB
    (signal power = the recording's mean square). gain_db: gain uniform in [-gain_db, gain_db] dB.
    shift_ms: s uniform in [-shift_ms, shift_ms]; s > 0 puts s ms of silence before the
    recording, s < 0 |s| ms after it. stretch: the recording resampled (linear interpolation)
    to (1 + a) times its length, a uniform in [-stretch, stretch] (speed perturbation: tempo and
    pitch together). time_masks x time_mask_frames: that many masks, each of a width uniform in
    [0, time_mask_frames] frames at a uniform position in the utterance's real frames, set to 0
    (the normalized mean); freq_masks x freq_mask_channels: the same over mel channels.
    warp: vocal-tract-length perturbation, the front end's mel filters warped by a factor
    uniform in [1 - warp, 1 + warp] (:func:`edgessm.data.audio.vtlp_warp`).
    """

    snr_db: float = 0.0
    gain_db: float = 0.0
    shift_ms: float = 0.0
    stretch: float = 0.0
    time_masks: int = 0
    time_mask_frames: int = 0
    freq_masks: int = 0
    freq_mask_channels: int = 0
    warp: float = 0.0

    @property
    def active(self) -> bool:
        return any((self.snr_db, self.gain_db, self.shift_ms, self.stretch, self.warp,
                    self.time_masks and self.time_mask_frames, self.freq_masks and self.freq_mask_channels))


def _augment_wave(w: np.ndarray, a: Augment, rng: np.random.Generator) -> np.ndarray:
    w = w.astype(np.float64)
    if a.gain_db:
        w = w * 10.0 ** (rng.uniform(-a.gain_db, a.gain_db) / 20.0)
    if a.stretch:
        n = max(2, int(round(len(w) * (1.0 + rng.uniform(-a.stretch, a.stretch)))))
        w = np.interp(np.linspace(0.0, len(w) - 1.0, n), np.arange(len(w)), w)
    if a.shift_ms:
        s = int(round(rng.uniform(-a.shift_ms, a.shift_ms) * FRONT_END.sample_rate / 1000.0))
        pad = np.zeros(abs(s))
        w = np.concatenate([pad, w] if s > 0 else [w, pad])
    if a.snr_db:
        snr = rng.uniform(a.snr_db, a.snr_db + 20.0)
        power = float(np.mean(w ** 2))
        w = w + rng.standard_normal(len(w)) * np.sqrt(power / 10.0 ** (snr / 10.0))
    return w.astype(np.float32)


def _masks(f: np.ndarray, a: Augment, rng: np.random.Generator) -> np.ndarray:
    T, C = f.shape
    for _ in range(a.time_masks if a.time_mask_frames else 0):
        w = min(int(rng.integers(0, a.time_mask_frames + 1)), T)
        t0 = int(rng.integers(0, T - w + 1))
        f[t0:t0 + w] = 0.0
    for _ in range(a.freq_masks if a.freq_mask_channels else 0):
        w = min(int(rng.integers(0, a.freq_mask_channels + 1)), C)
        c0 = int(rng.integers(0, C - w + 1))
        f[:, c0:c0 + w] = 0.0
    return f


def augment_batch(waves, a: Augment, key, normalize: str, mean: np.ndarray, std: np.ndarray,
                  top_db: float = 0.0, trim_db: float = 0.0) -> torch.Tensor:
    """Augmented features (B, FSDD_SEQ_LEN, 32) of the waveforms `waves` for ``key`` (a tuple
    of non-negative ints such as (seed, epoch, step)): recording n of the batch draws from
    ``numpy.random.default_rng((*key, n))``, so the batch is a function of key alone."""
    x = np.zeros((len(waves), FSDD_SEQ_LEN, FRONT_END.n_features), dtype=np.float32)
    for n, w in enumerate(waves):
        rng = np.random.default_rng([int(k) for k in key] + [n])
        w = _augment_wave(w, a, rng)
        alpha = 1.0 + rng.uniform(-a.warp, a.warp) if a.warp else 1.0
        f = _normalized(FRONT_END(w, warp=alpha), normalize, mean, std, top_db, trim_db)
        _place(x, n, _masks(np.array(f[-FSDD_SEQ_LEN:], dtype=np.float32), a, rng))
    return torch.from_numpy(x)
