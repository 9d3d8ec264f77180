"""A checkpoint exported, every check made before anything is loaded or written: portable C
(``edgessm export-c``, optionally cross-compiled for a Cortex-M core) and ONNX
(``edgessm export-onnx``)."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


def export_checkpoint_c(model_name, out, *, name: str | None = None, verify: int | None = None,
                        task: str | None = None, spec=None, calibrate: int = 512, mcu: str | None = None,
                        flash_kb: float | None = None, ram_kb: float | None = None) -> dict:
    """`model_name` (a checkpoint or shipped name) as C99 in `out`: quantized first (PTQ with
    `spec` on `calibrate` training samples of `task`) when it is a float model; with `verify`,
    compiled and compared with the integer engine on that many test sequences; with `mcu`,
    cross-compiled for that core (within `flash_kb` / `ram_kb`). Returns the figures
    ``edgessm export-c --json`` prints."""
    from .. import io
    from ..data import load_task
    from ..deploy import task_for
    from .c import _needs_calibration, check_name, check_out_dir, check_runnable, default_name, export_c, find_compiler
    # every check before anything is loaded or written
    if verify is not None and verify < 1:
        raise ConfigError(f"--verify takes a positive number of test sequences, got {verify}")
    if calibrate < 1:
        raise ConfigError(f"--calibrate must be >= 1, got {calibrate}")
    out = check_out_dir(out)
    name = check_name(name) if name else default_name(model_name)
    if mcu is not None:
        from .mcu import check_budget_args, check_mcu, find_toolchain
        check_mcu(mcu)
        check_budget_args(flash_kb, ram_kb)
        find_toolchain(need_qemu=verify is not None)
    elif flash_kb is not None or ram_kb is not None:
        raise ConfigError("--flash-kb / --ram-kb need --mcu (the core whose build is measured)")
    if verify is not None:
        find_compiler()
    model = io.load(model_name)
    check_runnable(model)
    calibration, X = None, None
    if _needs_calibration(model, spec):
        task = task_for(model, task)
        calibration = load_task(task, "train", limit=calibrate).x
    if verify is not None:
        task = task_for(model, task)
        X = load_task(task, "test", limit=verify).x
    r = export_c(model, out, name, spec=spec, calibration=calibration, calibrate=calibrate,
                 verify=X, source=str(model_name), mcu=mcu, flash_kb=flash_kb, ram_kb=ram_kb, task=task)
    res = {"model": str(model_name), "out": r["out"], "files": r["files"],
           "verified": r.get("verified", False), "mismatches": r.get("mismatches"),
           "compared": r.get("compared", 0), "code_bytes": r["code_bytes"], "data_bytes": r["data_bytes"],
           "state_bytes": r["state_bytes"], "c_us_per_token": r.get("c_us_per_token"), "n": r.get("n", 0),
           "task": task, "calibrated_now": calibration is not None}
    res.update({k: v for k, v in r.items() if k not in res})
    return res


def export_checkpoint_onnx(model_name, out, mode: str = "step", *, verify: int | None = None,
                           task: str | None = None) -> dict:
    """A float checkpoint as an ONNX graph (`mode` "step" or "sequence") written to `out`; with
    `verify`, that many test sequences run through onnxruntime and PyTorch and compared. Returns
    the figures ``edgessm export-onnx --json`` prints."""
    if verify is not None and verify < 1:
        raise ConfigError(f"--verify must be >= 1 (test sequences), got {verify}")
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give the .onnx file to write")
    from .. import io
    from ..deploy import task_for
    io.read_meta(model_name)                    # an unknown model fails before any work
    from . import onnx as ox
    model = io.load(model_name).eval()
    ox._check_exportable(model)
    ox.require_onnx()
    if verify:
        ox.require_onnxruntime()                 # before anything is written
    seq_len = None
    if mode == "sequence" or verify:
        from ..data import TASKS
        task = task_for(model, task)
        seq_len = TASKS[task].seq_len
    else:
        task = None
    path = ox.export_onnx(model, out, mode, seq_len=seq_len)
    res = {"model": str(model_name), "out": str(path), "mode": mode, "bytes": path.stat().st_size,
           "inputs": ["x", "state"] + (["total", "count"] if model.config.readout == "mean" else [])
           if mode == "step" else ["x"], "seq_len": seq_len}
    if verify:
        from ..data import load_task
        X = load_task(task, "test", limit=verify).x
        res.update(task=task, verify=ox.verify_onnx(model, path, X, mode))
    return res
