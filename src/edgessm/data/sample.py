"""A small sample of the test sets the demo uses, shipped inside the package, so `edgessm demo`
runs on a machine with no data root and no network.

``data/sample/mnist.npz``: the first 500 MNIST test digits and the first 512 digits of the
train split (``split_indices(60000, "train", 0.1, 0)``, for calibration), as the canonical uint8
images and labels; sMNIST and psMNIST are made from them exactly as from the full files.
``data/sample/fsdd01.npz``: the fsdd-01 test split (the 60 recordings of the digits 0 and 1 with
index 0-4) and the first 128 recordings of its train split as the normalized log-mel features
the loader computes (statistics of the full train split), stored unpadded.
Licences and attribution: ``data/sample/ATTRIBUTION.md`` (MNIST CC BY-SA 3.0, FSDD CC BY-SA 4.0).

The sample is used only where the caller allows it (:func:`fallback`, what the demo does) and
only for data missing from the data root; every data set taken from it is recorded
(:func:`used`) so the figures computed on it can say so.
"""
from __future__ import annotations

import contextlib
import functools

import numpy as np
import torch

MNIST_TEST, MNIST_TRAIN = 500, 512
FSDD_TRAIN = 128
TASKS = {"smnist": "mnist", "psmnist": "mnist", "fsdd-01": "fsdd01"}
FULL_SIZES = {"mnist": {"test": 10000, "train": 54000}, "fsdd01": {"test": 60, "train": 486}}

_state = {"on": False, "used": {}}


def sample_file(name: str):
    import importlib.resources
    return importlib.resources.files("edgessm.data").joinpath("sample", f"{name}.npz")


@contextlib.contextmanager
def fallback(on: bool = True):
    """Inside, :func:`edgessm.data.load_task` reads a task missing from the data root (and not
    downloadable) from the shipped sample instead of raising."""
    old = _state["on"]
    _state["on"] = on
    try:
        yield
    finally:
        _state["on"] = old


def used() -> dict:
    """task -> {split: samples available} of the data sets read from the sample so far."""
    return {k: dict(v) for k, v in _state["used"].items()}


def reset_used() -> None:
    _state["used"].clear()


def describe(task: str) -> str:
    """One phrase saying what the sample of `task` holds."""
    if TASKS.get(task) == "mnist":
        return f"the embedded sample of the first {MNIST_TEST} of 10,000 MNIST test digits"
    if TASKS.get(task) == "fsdd01":
        return "the embedded sample: all 60 fsdd-01 test recordings (features), 128 of 486 train recordings"
    return "no sample"


@functools.lru_cache(maxsize=4)
def _arrays(name: str) -> dict:
    with np.load(sample_file(name)) as z:
        return {k: z[k] for k in z.files}


def try_load(name: str, split: str, *, val_fraction: float, seed: int, limit: int | None,
             speaker_holdout) -> "SequenceDataset | None":
    """The task's split from the sample when the fallback is on and the sample has it, else None."""
    from .tasks import MNIST_MEAN, MNIST_STD, TASKS as ALL, SequenceDataset, psmnist_permutation
    if not _state["on"] or name not in TASKS or split not in ("test", "train"):
        return None
    if val_fraction != 0.1 or seed != 0 or speaker_holdout is not None:
        return None      # the sample holds the default split only
    info = ALL[name]
    a = _arrays(TASKS[name])
    if TASKS[name] == "mnist":
        images = a[f"{split}_images"].reshape(-1, 784)
        labels = a[f"{split}_labels"]
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        if name == "psmnist":
            images = images[:, psmnist_permutation()]
        x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32)
        x.mul_(1.0 / (255.0 * MNIST_STD)).sub_(MNIST_MEAN / MNIST_STD)
        ds = SequenceDataset(x.unsqueeze(-1), torch.from_numpy(labels.astype(np.int64)), info)
    else:
        lengths = a[f"{split}_lengths"].astype(np.int64)
        y = a[f"{split}_labels"].astype(np.int64)
        frames = a[f"{split}_frames"]
        starts = np.concatenate([[0], np.cumsum(lengths)])
        n = len(y) if limit is None else min(limit, len(y))
        L = info.seq_len
        x = np.zeros((n, L, frames.shape[1]), dtype=np.float32)
        for i in range(n):
            x[i, L - lengths[i]:] = frames[starts[i]:starts[i + 1]]
        ds = SequenceDataset(torch.from_numpy(x), torch.from_numpy(y[:n]),
                             info, lengths=torch.from_numpy(lengths[:n]))
    _state["used"].setdefault(name, {})[split] = len(ds)
    return ds


def build(root, out_dir) -> None:
    """Write the sample files from the full data sets under the data root `root` (how the shipped
    files were made: ``python -c "from edgessm.data.sample import build; build(ROOT, 'src/edgessm/data/sample')"``)."""
    import pathlib

    from ._splits import split_indices
    from .mnist import load_mnist_arrays
    from .tasks import load_task
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
