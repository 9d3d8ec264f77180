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


def try_arrays(name: str, split: str, *, val_fraction: float, seed: int, speaker_holdout) -> dict | None:
    """The raw arrays of the task's split in the sample (``kind`` "mnist": ``images`` (N, 784)
    uint8 and ``labels``; "fsdd01": ``frames`` of all recordings one after the other, ``lengths``
    and ``labels``) when the fallback is on and the sample has that split, else None. The task
    loader (``tasks.load_task``) turns them into a SequenceDataset."""
    if not _state["on"] or name not in TASKS or split not in ("test", "train"):
        return None
    if val_fraction != 0.1 or seed != 0 or speaker_holdout is not None:
        return None      # the sample holds the default split only
    a = _arrays(TASKS[name])
    if TASKS[name] == "mnist":
        return {"kind": "mnist", "images": a[f"{split}_images"].reshape(-1, 784), "labels": a[f"{split}_labels"]}
    return {"kind": "fsdd01", "frames": a[f"{split}_frames"], "lengths": a[f"{split}_lengths"],
            "labels": a[f"{split}_labels"]}


def note_used(name: str, split: str, n: int) -> None:
    """Record that `n` samples of the task's split came from the sample (see :func:`used`)."""
    _state["used"].setdefault(name, {})[split] = n
