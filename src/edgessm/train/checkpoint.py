"""Crash-safe training checkpoints and the trainer state that makes a resume exact.

A checkpoint directory (``OUT/last``, ``OUT/best``) is written as a whole: every file goes
into a new sibling directory ``NAME.new``, flushed to disk, which is then renamed into place;
the previous directory is kept (as ``NAME.old`` for the instant between the two renames)
until the new one is complete. :func:`recover_dir` finishes or undoes an interrupted
replacement, so a run killed at any moment (SIGKILL, power loss) leaves either the old or
the new checkpoint, never a mixture.

``OUT/last`` also holds the trainer state: the optimizer state, the position in the
schedule (epoch, step in epoch, global step), the best validation accuracy so far, the
running sums of a partial epoch, the averaged weights of ``[train] ema``, and every
random-number stream (torch CPU, CUDA when present, numpy's and Python's global generators),
so ``--resume`` continues exactly as if the run had not been interrupted.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import CheckpointError

TRAINER_TENSORS = "trainer.safetensors"
TRAINER_JSON = "trainer.json"


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")) + [path]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def recover_dir(path) -> None:
    """Finish or undo an interrupted :func:`replace_dir` of `path`."""
    path = Path(path)
    old, new = path.with_name(path.name + ".old"), path.with_name(path.name + ".new")
    if not path.exists() and old.is_dir():
        os.rename(old, path)          # killed between the two renames: the old one is whole
    if old.exists():
        shutil.rmtree(old)
    if new.exists():
        shutil.rmtree(new)            # never renamed into place: incomplete or superseded


def replace_dir(path, fill: Callable[[Path], None]) -> Path:
    """Write directory `path` as a whole: `fill(tmp)` writes the files into a new directory,
    which replaces `path` only once complete and on disk."""
    path = Path(path)
    recover_dir(path)
    new, old = path.with_name(path.name + ".new"), path.with_name(path.name + ".old")
    new.mkdir(parents=True)
    fill(new)
    _fsync_tree(new)
    if path.exists():
        os.rename(path, old)
    os.rename(new, path)
    _fsync_dir(path.parent)
    if old.exists():
        shutil.rmtree(old)
    return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- random-number streams ------------------------------------------------------------
def rng_state() -> tuple[dict, dict]:
    """(tensors, JSON-able values) of every global random stream training may draw from."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).view(np.int32).copy())
    py = random.getstate()
    return tensors, {"numpy": [kind, int(pos), int(has_gauss), float(gauss)],
                     "python": [py[0], list(py[1]), py[2]]}


def set_rng_state(tensors: dict, values: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    if "rng.numpy" in tensors and "numpy" in values:
        kind, pos, has_gauss, gauss = values["numpy"]
        np.random.set_state((kind, tensors["rng.numpy"].numpy().view(np.uint32), pos, has_gauss, gauss))
    if "python" in values:
        v, st, g = values["python"]
        random.setstate((v, tuple(st), g))


# ---- trainer state --------------------------------------------------------------------
def save_trainer(path: Path, opt: torch.optim.Optimizer, info: dict, ema: dict | None = None) -> None:
    """Optimizer state, schedule position, random streams and (``ema``: name -> tensor) the
    averaged weights into directory `path`."""
    from safetensors.torch import save_file
    sd = opt.state_dict()
    tensors, rng_values = rng_state()
    for k, v in (ema or {}).items():
        tensors[f"ema.{k}"] = v.detach().cpu()
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path / TRAINER_TENSORS))
    (path / TRAINER_JSON).write_text(json.dumps(
        {**info, "param_groups": sd["param_groups"], "rng": rng_values}, indent=1))


def load_trainer(path: Path, opt: torch.optim.Optimizer) -> dict:
    """Restore what :func:`save_trainer` wrote; returns the schedule position and counters,
    and under "ema" the averaged weights (name -> tensor) when there are any."""
    from safetensors.torch import load_file
    try:
        info = json.loads((path / TRAINER_JSON).read_text())
        tensors = load_file(str(path / TRAINER_TENSORS))
    except Exception as e:  # noqa: BLE001 - any failure means the checkpoint is unusable
        raise CheckpointError(f"cannot resume from {path}: trainer state unreadable ({e}); "
                              f"start without --resume or point at another run") from None
    state: dict = {}
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    try:
        opt.load_state_dict({"state": state, "param_groups": info.pop("param_groups")})
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"cannot resume from {path}: optimizer state does not fit ({e})") from None
    set_rng_state(tensors, info.pop("rng", {}))
    if ema:
        info["ema"] = ema
    return info


def write_checkpoint(path, save_model: Callable[[Path], object], opt=None, info: dict | None = None,
                     ema: dict | None = None) -> Path:
    """One checkpoint directory, whole: the model (`save_model(dir)`) and, with `opt`, the
    trainer state (with ``ema``, the averaged weights)."""
    def fill(tmp: Path):
        save_model(tmp)
        if opt is not None:
            save_trainer(tmp, opt, info or {}, ema)
    return replace_dir(path, fill)


def trim_metrics(path: Path, epoch: int) -> None:
    """Drop the records a resumed run will write again (epochs after `epoch`, the final line)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue                   # a line cut short by the interruption
        if isinstance(rec, dict) and "final" not in rec and rec.get("epoch", 0) <= epoch:
            keep.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(k + "\n" for k in keep))
    os.replace(tmp, path)
