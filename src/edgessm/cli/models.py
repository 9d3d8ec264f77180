"""``edgessm models``, ``info``, ``eval`` and ``import-s4d``: the shipped models, a checkpoint's
record, its accuracy on a task, and a state-spaces/s4 S4D layer imported."""
from __future__ import annotations

from .common import emit


def cmd_models(args):
    from ..io import shipped_summaries
    rows = shipped_summaries()
    text = "\n".join(f"{r['name']:<16} {r['task'] or '?':<10} {r['preset']:<13} H={r['d_model']} "
                     f"N={r['d_state']} layers={r['n_layers']}  test accuracy "
                     + (f"{100 * r['test_accuracy']:.2f}% ({r['test_n']})" if r['test_accuracy'] is not None else "?")
                     + f"  {r['bytes'] / 1024:.0f} KiB" for r in rows) or "no shipped models"
    if rows:
        text = ("test accuracy: what `edgessm eval NAME` gives on the full test set (samples)\n" + text)
    emit(args, {"models": rows}, text)


def cmd_info(args):
    from ..io import checkpoint_info
    emit(args, checkpoint_info(args.model))


def cmd_eval(args):
    from ..deploy import Checkpoint
    from ..deploy.evaluate import evaluate_checkpoint
    from ..progress import enabled
    out = evaluate_checkpoint(Checkpoint.load(args.model), args.task, args.split, limit=args.limit,
                              batch_size=args.batch_size, download=args.download, progress=enabled())
    emit(args, out, f"{args.model} on {out['task']} ({args.split}, {out['n']} samples): "
                    f"accuracy {100 * out['accuracy']:.2f}%  loss {out['loss']:.4f}")


def cmd_import_s4d(args):
    from .. import io
    from ..ssm.reference import from_reference_s4d
    block = from_reference_s4d(io.read_state_dict(args.checkpoint, args.prefix))
    path = io.save_block(block, args.out)
    emit(args, {"out": str(path), "d_model": block.s4d.d_model, "d_state": block.s4d.d_state})


def add_models(sub) -> None:
    s = sub.add_parser("models", help="list the models shipped with edgessm")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_models)


def add_info(sub) -> None:
    s = sub.add_parser("info", help="show a checkpoint's configuration and metrics")
    s.add_argument("model", help="checkpoint directory or shipped model name")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_info)


def add_eval(sub) -> None:
    s = sub.add_parser("eval", help="accuracy of a model on a task's test (or val) split")
    s.add_argument("model", help="checkpoint directory or shipped model name")
    s.add_argument("--task", help="task name (default: the task it was trained on)")
    s.add_argument("--split", default="test", choices=["test", "val", "train"])
    s.add_argument("--limit", type=int, help="only the first N samples")
    s.add_argument("--batch-size", type=int, default=256)
    s.add_argument("--download", action="store_true", help="download missing data")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_eval)


def add_import_s4d(sub) -> None:
    s = sub.add_parser("import-s4d", help="import a state-spaces/s4 S4D layer state_dict")
    s.add_argument("checkpoint", help=".pt (loaded with weights_only) or .safetensors")
    s.add_argument("out", help="output directory")
    s.add_argument("--prefix", default="", help="key prefix of the layer inside a larger state_dict")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_import_s4d)
