"""Data sets as sequence tasks: MNIST (sMNIST, psMNIST), CIFAR-10 (sCIFAR), FSDD.

Depends on torch and numpy only, and on nothing in edgessm but :mod:`edgessm.errors`.

>>> from edgessm.data import load_task, TASKS
>>> ds = load_task("smnist", "train", limit=128)   # ds.x (128, 784, 1) float32, ds.y (128,) int64
"""

from ._root import data_root
from .tasks import TASKS, SequenceDataset, TaskInfo, load_task

__all__ = ["TASKS", "TaskInfo", "SequenceDataset", "load_task", "data_root"]
