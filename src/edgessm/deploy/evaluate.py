"""Accuracy of a checkpoint on a split of a task, in PyTorch (``edgessm eval``)."""
from __future__ import annotations

import time

from ..errors import ConfigError
from .checkpoint import Checkpoint


def evaluate_checkpoint(checkpoint, task: str | None = None, split: str = "test", *, limit: int | None = None,
                        batch_size: int = 256, download: bool = False, progress: bool = False) -> dict:
    """Accuracy and loss of the checkpoint's own network on `split` of `task` (default: the
    task it was trained on); a model whose input or output width does not fit the task is a
    ConfigError."""
    import torch

    from ..data import load_task
    from ..train import evaluate
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(checkpoint)
    model = ckpt.model
    task = ckpt.task_for(task)
    from ..io import trained_task_options
    ds = load_task(task, split, limit=limit, download=download, **trained_task_options(model, task))
    if ds.info.d_input != model.config.d_input or ds.info.d_output != model.config.d_output:
        raise ConfigError(f"model {ckpt.name} (d_input={model.config.d_input}, d_output="
                          f"{model.config.d_output}) does not fit task {task} (d_input="
                          f"{ds.info.d_input}, d_output={ds.info.d_output})")
    t0 = time.time()
    with torch.no_grad():
        r = evaluate(model, ds, batch_size, progress=progress)
    return {"model": ckpt.name, "task": task, "split": split, "accuracy": r["accuracy"],
            "loss": r["loss"], "n": r["n"], "seconds": time.time() - t0}
