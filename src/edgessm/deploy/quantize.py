"""Post-training quantization of a checkpoint (``edgessm quantize``): calibrate, optionally
evaluate float against quantized, save the quantized checkpoint with its provenance."""
from __future__ import annotations

import time

from ..errors import ConfigError
from .checkpoint import Checkpoint


def quantize_checkpoint(checkpoint, spec, out, *, task: str | None = None, calibrate: int = 512,
                        limit: int | None = None, batch_size: int = 256) -> dict:
    """PTQ of `checkpoint` with `spec` on the first `calibrate` training samples of `task`
    (default: the checkpoint's), saved to `out`; with `limit`, float and quantized accuracy on
    the first `limit` test samples. Returns the figures ``edgessm quantize --json`` prints."""
    from .. import io
    from ..data import load_task
    from ..quant import quantize
    from ..quant.spec import QuantSpec
    if calibrate < 1:
        raise ConfigError(f"--calibrate must be >= 1, got {calibrate}")
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(checkpoint)
    model = ckpt.model
    task = ckpt.task_for(task)
    spec = QuantSpec.load(spec)
    t0 = time.time()
    from ..io import trained_task_options
    split = trained_task_options(model, task)          # the split and features it was trained on
    X = load_task(task, "train", limit=calibrate, **split).x
    q = quantize(model, spec, calibration=X, n=calibrate)
    res = {"out": str(out), "spec": spec.name, "task": task, "calibrate": calibrate,
           "exponents": {"input": int(q.exp_in), "encoder": int(q.exp_enc),
                         "ssm_out": q.exp_y.tolist(), "mixing": q.exp_z.tolist(),
                         "state": q.exp_x.tolist(), "logits": int(q.exp_out)},
           "compile_overflows": q.integer_network().compile_overflows}
    if limit:
        from ..train.loop import evaluate
        te = load_task(task, "test", limit=limit, **split)
        fl = evaluate(model, te, batch_size)
        q.reset_overflows()
        qa = evaluate(q, te, batch_size)
        res.update(float_accuracy=fl["accuracy"], accuracy=qa["accuracy"], n=qa["n"],
                   overflows=dict(q.overflows))
    run = ckpt.run_config
    metrics = {"ptq": {k: v for k, v in res.items() if k != "out"}}
    io.save(q, out, metrics=metrics, extra={"run": run} if run else None)
    res["seconds"] = time.time() - t0
    return res
