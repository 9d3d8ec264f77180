"""``edgessm report`` (an HTML report of a model on every target) and ``edgessm demo``."""
from __future__ import annotations

from .common import emit


def cmd_report(args):
    from .. import io
    from ..report import build_report
    io.read_meta(args.model)    # a model that is neither a checkpoint nor shipped fails at once
    path = build_report(args.out, args.model, args.task, None if args.full else args.limit)
    emit(args, {"report": str(path)}, f"report written to {path}")


def cmd_demo(args):
    from ..demo import run_demo
    run_demo(args)


def add_report(sub) -> None:
    s = sub.add_parser("report", help="write an HTML report with plots (measured on this machine)")
    s.add_argument("--out", default="report")
    s.add_argument("--model", default="smnist")
    s.add_argument("--task")
    s.add_argument("--limit", type=int, default=200, help="test samples per accuracy figure")
    s.add_argument("--full", action="store_true",
                   help="every accuracy on the full test set (overrides --limit; takes much longer)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_report)


def add_demo(sub) -> None:
    s = sub.add_parser("demo", help="the main job: shipped model, evaluated and streamed")
    s.add_argument("--limit", type=int, help="test samples to evaluate in float (default: all)")
    s.add_argument("--deploy-limit", type=int, default=500,
                   help="test samples run through the Loihi 2 integer engine (default 500)")
    s.add_argument("--trials", type=int, default=3, help="crossbar device instances (default 3)")
    s.add_argument("--calibrate", type=int, default=512, help="PTQ calibration samples for Loihi 2 (default 512)")
    s.add_argument("--report", default="report", help="directory of the report written at the end")
    s.add_argument("--no-report", action="store_true", help="skip the report")
    s.add_argument("--offline", action="store_true",
                   help="never download: data sets missing from the data root come from the embedded sample")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_demo)
