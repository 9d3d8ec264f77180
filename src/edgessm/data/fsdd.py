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
seeded subset of train as for every task. Features are computed once per process
(about a second for all 3,000) and cached in memory.
"""

from __future__ import annotations

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
                     seed: int = 0, speaker_holdout: str | None = None) -> np.ndarray:
    """Indices into ``recs`` (from :func:`list_recordings`) of one split, in order.

    digits: keep only these digits (e.g. (0, 1)); speaker_holdout: see the module doc.
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
    train = np.flatnonzero(keep & ~test)
    return train[split_indices(len(train), split, val_fraction, seed)]


@functools.lru_cache(maxsize=2)
def _features(sig: tuple) -> tuple[np.ndarray, ...]:
    folder = pathlib.Path(sig[0])
    return tuple(FRONT_END(read_wav(folder / name, sample_rate=FRONT_END.sample_rate))
                 for name, _, _ in sig[1])


@functools.lru_cache(maxsize=16)
def _train_stats(sig: tuple, digits, val_fraction: float, seed: int, speaker_holdout):
    recs = _scan_cached(sig)
    feats = _features(sig)
    idx = split_recordings(recs, "train", digits=digits, val_fraction=val_fraction,
                           seed=seed, speaker_holdout=speaker_holdout)
    if len(idx) == 0:
        raise DataError("the FSDD train split is empty; cannot compute normalization statistics.")
    frames = np.concatenate([feats[i] for i in idx]).astype(np.float64)
    mean = frames.mean(axis=0)
    std = np.maximum(frames.std(axis=0), 1e-6)
    return mean.astype(np.float32), std.astype(np.float32)


def _scan_cached(sig: tuple) -> tuple[Recording, ...]:
    folder = sig[0]
    out = []
    for name, _, _ in sig[1]:
        m = _NAME.match(name)
        out.append(Recording(os.path.join(folder, name), int(m.group(1)), m.group(2).lower(), int(m.group(3))))
    return tuple(out)


def train_statistics(root: pathlib.Path, *, digits=None, val_fraction: float = 0.1, seed: int = 0,
                     speaker_holdout: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) of the log-mel frames of the train split used to normalize."""
    sig, _ = _listing(root, False)
    return _train_stats(sig, None if digits is None else tuple(digits), val_fraction, seed,
                        None if speaker_holdout is None else str(speaker_holdout).lower())


def load_fsdd_split(root: pathlib.Path, split: str, *, digits=None, download: bool = False,
                    val_fraction: float = 0.1, seed: int = 0, speaker_holdout: str | None = None):
    """``(x, y, lengths)`` of one split: x (N, FSDD_SEQ_LEN, 32) float32, y (N,) int64 digits,
    lengths (N,) int64 real (unpadded) frame counts."""
    sig, recs = _listing(root, download)
    digits = None if digits is None else tuple(digits)
    holdout = None if speaker_holdout is None else str(speaker_holdout).lower()
    idx = split_recordings(recs, split, digits=digits, val_fraction=val_fraction, seed=seed,
                           speaker_holdout=holdout)
    feats = _features(sig)
    mean, std = _train_stats(sig, digits, val_fraction, seed, holdout)
    L = FSDD_SEQ_LEN
    x = np.zeros((len(idx), L, FRONT_END.n_features), dtype=np.float32)
    lengths = np.empty(len(idx), dtype=np.int64)
    for row, i in enumerate(idx):
        f = feats[i][-L:]
        x[row, L - len(f):] = (f - mean) / std
        lengths[row] = len(f)
    y = np.array([recs[i].digit for i in idx], dtype=np.int64)
    return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(lengths)
