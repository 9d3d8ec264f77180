"""`edgessm export-onnx`: a float model as an ONNX graph (step or whole sequence), checked with
onnxruntime against PyTorch (--verify N)."""
from __future__ import annotations

from pathlib import Path


def cmd_export_onnx(args):
    from .cli_common import emit, task_for
    from .errors import ConfigError
    if args.verify is not None and args.verify < 1:
        raise ConfigError(f"--verify must be >= 1 (test sequences), got {args.verify}")
    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give the .onnx file to write")
    from . import io
    io.read_meta(args.model)                    # an unknown model fails before any work
    from .export import onnx as ox
    model = io.load(args.model).eval()
    ox._check_exportable(model)
    ox.require_onnx()
    if args.verify:
        ox.require_onnxruntime()                 # before anything is written
    task = seq_len = None
    if args.mode == "sequence" or args.verify:
        from .data import TASKS
        task = task_for(model, getattr(args, "task", None))
        seq_len = TASKS[task].seq_len
    path = ox.export_onnx(model, out, args.mode, seq_len=seq_len)
    res = {"model": str(args.model), "out": str(path), "mode": args.mode, "bytes": path.stat().st_size,
           "inputs": ["x", "state"] + (["total", "count"] if model.config.readout == "mean" else [])
           if args.mode == "step" else ["x"], "seq_len": seq_len}
    text = f"{args.model}: {args.mode} graph written to {path} ({res['bytes'] / 1024:.0f} KiB)"
    if args.verify:
        from .data import load_task
        X = load_task(task, "test", limit=args.verify).x
        v = ox.verify_onnx(model, path, X, args.mode)
        res.update(task=task, verify=v)
        text += (f"\nonnxruntime vs PyTorch on {args.verify} {task} test sequences: max |logit difference| "
                 f"{v['max_abs_diff']:.3g}, {v['predictions_differing']} of {v['predictions_compared']} "
                 f"predictions differ")
    emit(args, res, text)


def add_commands(sub) -> None:
    e = sub.add_parser("export-onnx", help="a float model as an ONNX graph (onnxruntime and other runtimes)")
    e.add_argument("model", help="checkpoint directory or shipped model name (a float model)")
    e.add_argument("--out", required=True, help="the .onnx file to write")
    e.add_argument("--mode", choices=["step", "sequence"], default="step",
                   help="step: one token, the state (real pairs) in and out; sequence: a whole sequence of "
                        "the task's length")
    e.add_argument("--verify", type=int, metavar="N",
                   help="run N test sequences through onnxruntime and PyTorch and compare the logits "
                        "(needs the onnx extra)")
    e.add_argument("--task", help="task of the test data and sequence length (default: the checkpoint's)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_export_onnx)
