"""Sequence tasks: the registry :data:`TASKS`, :class:`SequenceDataset` and :func:`load_task`.

Every task is a classification problem over fixed-length sequences ``(L, d_input)``;
models read the class out at the last token.

Splits: ``"test"`` is the official test set. ``"val"`` is a fixed, seeded random subset
(``val_fraction`` of it, ``numpy.random.default_rng(seed).permutation``) of the official
train set and ``"train"`` is the rest, both kept in the original file order. The same
``(val_fraction, seed)`` always gives the same split.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np
import torch

from edgessm.errors import ConfigError, MissingDataError, UnknownNameError

from ._root import download_allowed, resolve_root
from ._splits import split_indices
from .fsdd import FSDD_SEQ_LEN

__all__ = [
    "TaskInfo",
    "TASKS",
    "split_options",
    "SequenceDataset",
    "load_task",
    "split_indices",
    "PSMNIST_SEED",
    "psmnist_permutation",
    "MNIST_MEAN",
    "MNIST_STD",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "CIFAR_GRAY_MEAN",
    "CIFAR_GRAY_STD",
    "LUMA_WEIGHTS",
]

SPLITS = ("train", "val", "test")

#: MNIST pixel mean/std (pixels in [0, 1]), the standard published constants.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
#: Seed of the fixed psMNIST pixel permutation: ``np.random.default_rng(92916).permutation(784)``.
PSMNIST_SEED = 92916
#: CIFAR-10 per-channel (R, G, B) mean/std, the standard published constants.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
#: ITU-R BT.601 luma weights for grayscale.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
#: Grayscale mean/std: the mean is the BT.601 luma of the published channel means; the std
#: was measured (float64) on the 50,000 training images of the JPEG re-encoded copy in CI
#: (canonical pixels differ slightly; the constant is fixed so results do not depend on it).
CIFAR_GRAY_MEAN, CIFAR_GRAY_STD = 0.4809, 0.2388


#: The :func:`load_task` keywords that choose a task's splits or features beyond
#: ``val_fraction``/``seed``, with their defaults (a task lists those it accepts in
#: :attr:`TaskInfo.options`).
SPLIT_OPTION_DEFAULTS = {"speaker_holdout": None, "val_speaker": None, "normalize": "train",
                         "top_db": 0.0, "trim_db": 0.0}
_FSDD_OPTIONS = ("speaker_holdout", "val_speaker", "normalize", "top_db", "trim_db")


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """What a task looks like: sequences ``(seq_len, d_input)``, ``d_output`` classes.

    ``options``: the keys of :data:`SPLIT_OPTION_DEFAULTS` that this task accepts; a model
    trained with other values than the defaults is evaluated with the same (see
    :func:`split_options`). ``augmentation``: what augmentation the train split takes, "" (none),
    "audio" (an :class:`edgessm.data.fsdd.Augment`) or "image" (an
    :class:`edgessm.data.images.ImageAugment`)."""

    name: str
    d_input: int
    d_output: int
    seq_len: int
    description: str
    options: tuple[str, ...] = ()
    augmentation: str = ""          # "", "audio" or "image"


def augmentation_class(kind: str) -> type:
    """The augmentation class of a kind of task (:attr:`TaskInfo.augmentation`, "audio" or
    "image"); each of its fields ``f`` is the run config's ``[data]`` field ``aug_f``."""
    from .fsdd import Augment
    from .images import ImageAugment
    classes = {"audio": Augment, "image": ImageAugment}
    if kind not in classes:
        raise ConfigError(f"unknown kind of augmentation {kind!r}; known: {', '.join(classes)}")
    return classes[kind]


def _is_set(option: str, value) -> bool:
    """Whether a split option's value differs from its default (None and "" count as unset)."""
    return value not in (None, "") and value != SPLIT_OPTION_DEFAULTS[option]


def split_options(task: str, values) -> dict:
    """The :func:`load_task` keywords among `values` (a mapping, e.g. a run config's [data])
    that choose `task`'s splits and features: those the task accepts whose value is not the
    default. {} for a task without such options."""
    info = TASKS.get(task)
    if info is None:
        return {}
    out = {}
    for k in info.options:
        v = values.get(k)
        if _is_set(k, v):
            out[k] = v
    return out


TASKS: dict[str, TaskInfo] = {
    "smnist": TaskInfo(
        "smnist", 1, 10, 784,
        "Sequential MNIST: 28x28 digits read pixel by pixel in row-major order (784 x 1), "
        "pixels scaled to [0, 1] then normalized with mean 0.1307, std 0.3081; 10 classes.",
    ),
    "psmnist": TaskInfo(
        "psmnist", 1, 10, 784,
        f"Permuted sequential MNIST: sMNIST with one fixed pixel permutation, "
        f"numpy.random.default_rng(seed={PSMNIST_SEED}).permutation(784) (784 x 1); 10 classes.",
    ),
    "scifar": TaskInfo(
        "scifar", 3, 10, 1024,
        "Sequential CIFAR-10: 32x32 RGB images read pixel by pixel in row-major order "
        "(1024 x 3), per-channel normalized with mean (0.4914, 0.4822, 0.4465), "
        "std (0.2470, 0.2435, 0.2616); 10 classes.",
        augmentation="image",
    ),
    "scifar-gray": TaskInfo(
        "scifar-gray", 1, 10, 1024,
        f"Sequential grayscale CIFAR-10: ITU-R BT.601 luma (0.299 R + 0.587 G + 0.114 B) "
        f"read pixel by pixel in row-major order (1024 x 1), normalized with mean "
        f"{CIFAR_GRAY_MEAN}, std {CIFAR_GRAY_STD}; 10 classes.",
        augmentation="image",
    ),
    "fsdd": TaskInfo(
        "fsdd", 32, 10, FSDD_SEQ_LEN,
        "Free Spoken Digit Dataset: 8 kHz recordings of spoken digits as 32-channel log-mel "
        "frames (25 ms Hamming windows, 10 ms hop), normalized per channel with train-split "
        f"statistics and left-padded with zeros to {FSDD_SEQ_LEN} frames (the longest "
        "recording, 18,262 samples; a longer one would keep its last frames) so the last "
        "token ends the utterance; 10 classes.",
        _FSDD_OPTIONS, "audio",
    ),
    "fsdd-01": TaskInfo(
        "fsdd-01", 32, 2, FSDD_SEQ_LEN,
        "FSDD restricted to the digits 0 and 1 (labels 0/1), same log-mel front end as fsdd; "
        "2 classes.",
        _FSDD_OPTIONS, "audio",
    ),
}


class SequenceDataset(torch.utils.data.Dataset):
    """Materialized sequences: ``x`` (N, L, d_input) float32, ``y`` (N,) int64.

    ``lengths`` (optional, (N,) int64) is the number of real (unpadded) tokens of each
    sequence, for tasks that pad; ``None`` when every sequence is full length.
    ``augment`` (optional): ``augment(rows, key)`` -> augmented x of those rows for a batch
    ``key`` (see :meth:`batch`).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, info: TaskInfo,
                 lengths: torch.Tensor | None = None, augment=None):
        if x.dtype != torch.float32 or x.dim() != 3:
            raise ConfigError(f"SequenceDataset x must be float32 (N, L, d), got {x.dtype} {tuple(x.shape)}")
        if y.dtype != torch.int64 or y.shape != (x.shape[0],):
            raise ConfigError(f"SequenceDataset y must be int64 ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
        self.x = x
        self.y = y
        self.info = info
        self.lengths = lengths
        self.augment = augment

    def batch(self, rows: torch.Tensor, key: tuple) -> torch.Tensor:
        """The inputs of a training batch: ``x[rows]``, augmented when the split was loaded
        with augmentation. key (e.g. (seed, epoch, step)) alone decides the random draws."""
        if self.augment is None:
            return self.x[rows]
        return self.augment(rows.numpy(), key)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __repr__(self) -> str:
        return f"SequenceDataset({self.info.name!r}, n={len(self)}, x={tuple(self.x.shape)})"


def psmnist_permutation() -> np.ndarray:
    """The fixed psMNIST permutation: ``np.random.default_rng(92916).permutation(784)``."""
    return np.random.default_rng(seed=PSMNIST_SEED).permutation(784)


def _limit(idx: np.ndarray, limit: int | None) -> np.ndarray:
    return idx if limit is None else idx[:limit]


def _pick(n_train: int, n_test: int, split: str, val_fraction: float, seed: int,
          limit: int | None) -> tuple[str, np.ndarray]:
    if split == "test":
        return "test", _limit(np.arange(n_test), limit)
    return "train", _limit(split_indices(n_train, split, val_fraction, seed), limit)


def _load_mnist_task(info: TaskInfo, root: pathlib.Path, split: str, download: bool,
                     val_fraction: float, seed: int, limit: int | None) -> SequenceDataset:
    from .mnist import load_mnist_arrays

    arrays = load_mnist_arrays(root, download=download)
    source, idx = _pick(60000, 10000, split, val_fraction, seed, limit)
    images = arrays[f"{source}_images"].reshape(-1, 784)[idx]
    if info.name == "psmnist":
        images = images[:, psmnist_permutation()]
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32)
    x.mul_(1.0 / (255.0 * MNIST_STD)).sub_(MNIST_MEAN / MNIST_STD)
    y = torch.from_numpy(arrays[f"{source}_labels"][idx].astype(np.int64))
    return SequenceDataset(x.unsqueeze(-1), y, info)


def _load_cifar_task(info: TaskInfo, root: pathlib.Path, split: str, download: bool,
                     val_fraction: float, seed: int, limit: int | None,
                     augment=None) -> SequenceDataset:
    from .cifar import load_cifar10_arrays

    arrays = load_cifar10_arrays(root, download=download)
    source, idx = _pick(len(arrays["train_labels"]), len(arrays["test_labels"]),
                        split, val_fraction, seed, limit)
    images = torch.from_numpy(np.ascontiguousarray(arrays[f"{source}_images"][idx]))
    x = images.reshape(len(idx), 1024, 3).to(torch.float32).mul_(1.0 / 255.0)
    if info.name == "scifar-gray":
        x = (x @ torch.tensor(LUMA_WEIGHTS, dtype=torch.float32)).unsqueeze(-1)
        x.sub_(CIFAR_GRAY_MEAN).div_(CIFAR_GRAY_STD)
    else:
        x.sub_(torch.tensor(CIFAR_MEAN)).div_(torch.tensor(CIFAR_STD))
    y = torch.from_numpy(arrays[f"{source}_labels"][idx].astype(np.int64))
    batch = None
    if augment is not None and augment.active:
        from .images import augment_images

        def batch(rows, key) -> torch.Tensor:
            return augment_images(x[torch.as_tensor(rows, dtype=torch.int64)], augment, key)
    return SequenceDataset(x, y, info, augment=batch)


def _load_fsdd_task(info: TaskInfo, root: pathlib.Path, split: str, download: bool,
                    val_fraction: float, seed: int, limit: int | None,
                    speaker_holdout: str | None, normalize: str, augment,
                    val_speaker: str | None = None, top_db: float = 0.0,
                    trim_db: float = 0.0) -> SequenceDataset:
    from .fsdd import load_fsdd_split

    x, y, lengths, *batch = load_fsdd_split(
        root, split, digits=(0, 1) if info.name == "fsdd-01" else None,
        download=download, val_fraction=val_fraction, seed=seed,
        speaker_holdout=speaker_holdout, normalize=normalize, augment=augment,
        val_speaker=val_speaker, top_db=top_db, trim_db=trim_db,
    )
    if limit is not None:
        x, y, lengths = x[:limit], y[:limit], lengths[:limit]
    return SequenceDataset(x, y, info, lengths=lengths, augment=batch[0] if batch else None)


def load_task(name: str, split: str, *, root: str | os.PathLike | None = None,
              download: bool = False, val_fraction: float = 0.1, seed: int = 0,
              limit: int | None = None, speaker_holdout: str | None = None,
              normalize: str = "train", augment=None,
              val_speaker: str | None = None, top_db: float = 0.0,
              trim_db: float = 0.0) -> SequenceDataset:
    """Load one split of a task as a :class:`SequenceDataset`.

    name: a key of :data:`TASKS`. split: "train", "val" (a seeded ``val_fraction`` subset
    of the official train set) or "test". root: data root (default :func:`data_root`).
    download: fetch missing files from the canonical source (also ``EDGESSM_DOWNLOAD=1``).
    limit: keep only the first ``limit`` samples of the split.
    speaker_holdout: FSDD only; put every recording of that speaker in the test split
    and the other speakers' recordings in train/val (instead of the index 0-4 split).
    normalize: FSDD only; "train" (per-channel train-split statistics), "cmn" or "cmvn"
    (per utterance; see :mod:`edgessm.data.fsdd`). augment: train split only; an
    :class:`edgessm.data.fsdd.Augment` (FSDD tasks) or an
    :class:`edgessm.data.images.ImageAugment` (sCIFAR tasks), whose draws
    :meth:`SequenceDataset.batch` makes.
    val_speaker: FSDD only; "val" is that speaker's recordings (outside test) and "train" the
    other speakers' (instead of the seeded ``val_fraction`` subset); not the held-out speaker.
    top_db: FSDD only; clamp each utterance's log-mel at its maximum minus top_db dB (0: off).
    trim_db: FSDD only; drop leading/trailing frames more than trim_db dB below the loudest (0: off).

    Raises UnknownNameError for an unknown task, ConfigError for a bad argument and
    DataError when the data are missing or corrupt.
    """
    if not isinstance(name, str) or name not in TASKS:
        raise UnknownNameError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r} for task {name!r}; use one of {', '.join(SPLITS)}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0):
        raise ConfigError(f"limit must be None or a non-negative integer, got {limit!r}")
    info = TASKS[name]
    from .fsdd import NORMALIZE, check_top_db
    top_db, trim_db = check_top_db(top_db), check_top_db(trim_db, "trim_db")
    if normalize not in NORMALIZE:
        raise ConfigError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
    given = dict(speaker_holdout=speaker_holdout, val_speaker=val_speaker, normalize=normalize,
                 top_db=top_db, trim_db=trim_db)
    for k, v in given.items():
        if _is_set(k, v) and k not in info.options:
            takers = [t for t, i in TASKS.items() if k in i.options]
            raise ConfigError(f"{k} applies to the tasks {', '.join(takers)} only, not {name!r}")
    if augment is not None:
        kind = next((k for k in ("audio", "image") if type(augment) is augmentation_class(k)), None)
        if kind is None:
            raise ConfigError(f"augment must be an edgessm.data.fsdd.Augment (audio) or an "
                              f"edgessm.data.images.ImageAugment (image), got {type(augment).__name__}")
        if info.augmentation != kind or split != "train":
            takers = [t for t, i in TASKS.items() if i.augmentation == kind]
            raise ConfigError(f"{kind} augmentation applies to the train split of the tasks "
                              f"{', '.join(takers)} only, not the {split!r} split of {name!r}")
    rootp = resolve_root(root)
    dl = download_allowed(download)
    try:
        if name in ("smnist", "psmnist"):
            return _load_mnist_task(info, rootp, split, dl, val_fraction, seed, limit)
        if name in ("scifar", "scifar-gray"):
            return _load_cifar_task(info, rootp, split, dl, val_fraction, seed, limit, augment)
        return _load_fsdd_task(info, rootp, split, dl, val_fraction, seed, limit, speaker_holdout,
                               normalize, augment, val_speaker, top_db, trim_db)
    except MissingDataError:   # inside data.sample.fallback(): the shipped sample, if it has the task
        if normalize != "train" or augment is not None or val_speaker is not None or top_db or trim_db:
            raise                 # the sample holds the default features only
        ds = _from_sample(name, split, val_fraction, seed, limit, speaker_holdout)
        if ds is None:
            raise
        return ds


def _from_sample(name, split, val_fraction, seed, limit, speaker_holdout) -> "SequenceDataset | None":
    """The task's split from the package's embedded sample (``data.sample``), normalized as the
    full loaders do, or None when the sample does not hold it."""
    from . import sample
    a = sample.try_arrays(name, split, val_fraction=val_fraction, seed=seed, speaker_holdout=speaker_holdout)
    if a is None:
        return None
    info = TASKS[name]
    if a["kind"] == "mnist":
        images, labels = a["images"], a["labels"]
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        if name == "psmnist":
            images = images[:, psmnist_permutation()]
        x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32)
        x.mul_(1.0 / (255.0 * MNIST_STD)).sub_(MNIST_MEAN / MNIST_STD)
        ds = SequenceDataset(x.unsqueeze(-1), torch.from_numpy(labels.astype(np.int64)), info)
    else:
        lengths = a["lengths"].astype(np.int64)
        y = a["labels"].astype(np.int64)
        frames = a["frames"]
        starts = np.concatenate([[0], np.cumsum(lengths)])
        n = len(y) if limit is None else min(limit, len(y))
        L = info.seq_len
        x = np.zeros((n, L, frames.shape[1]), dtype=np.float32)
        for i in range(n):
            x[i, L - lengths[i]:] = frames[starts[i]:starts[i + 1]]
        ds = SequenceDataset(torch.from_numpy(x), torch.from_numpy(y[:n]),
                             info, lengths=torch.from_numpy(lengths[:n]))
    sample.note_used(name, split, len(ds))
    return ds


def build_sample(root, out_dir) -> None:
    """Write the embedded sample files (``data.sample``) from the full data sets under the data root
    `root` (how the shipped files were made: ``python -c "from edgessm.data.tasks import
    build_sample; build_sample(ROOT, 'src/edgessm/data/sample')"``)."""
    import pathlib

    from .mnist import load_mnist_arrays
    from .sample import FSDD_TRAIN, MNIST_TEST, MNIST_TRAIN
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = load_mnist_arrays(pathlib.Path(root))
    tr = split_indices(60000, "train", 0.1, 0)[:MNIST_TRAIN]
    np.savez_compressed(out / "mnist.npz", test_images=m["test_images"][:MNIST_TEST],
                        test_labels=m["test_labels"][:MNIST_TEST],
                        train_images=m["train_images"][tr], train_labels=m["train_labels"][tr])
    arrays = {}
    for split, lim in (("test", None), ("train", FSDD_TRAIN)):
        ds = load_task("fsdd-01", split, root=root, limit=lim)
        L = ds.x.shape[1]
        arrays[f"{split}_frames"] = np.concatenate([ds.x[i, L - int(n):].numpy()
                                                    for i, n in enumerate(ds.lengths)])
        arrays[f"{split}_lengths"] = ds.lengths.numpy().astype(np.int16)
        arrays[f"{split}_labels"] = ds.y.numpy().astype(np.int8)
    np.savez_compressed(out / "fsdd01.npz", **arrays)
