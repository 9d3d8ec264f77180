"""Command line: ``edgessm export-c`` (portable C99 for microcontrollers).

    edgessm export-c MODEL --out DIR [--name NAME] [--verify N] [--task T] [--spec SPEC]
                     [--calibrate N] [--json]

MODEL is a checkpoint path or a shipped model's name. A quantized checkpoint is exported as
calibrated; a float one is quantized first (PTQ with --spec, default loihi2, on the first
--calibrate training samples of --task, default the checkpoint's task). --verify N compiles
the export with a test harness, runs the first N test sequences of the task through it and
through the integer engine and compares every token's integer logits.

cli.py wires this in with ``from .export.cli import add_commands as add_export``.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


def cmd_export_c(args):
    from .. import io
    from ..cli_deploy import _emit, _task_of
    from ..data import load_task
    from .c import _needs_calibration, check_name, check_out_dir, check_runnable, default_name, export_c, find_compiler
    # every check before anything is loaded or written
    if args.verify is not None and args.verify < 1:
        raise ConfigError(f"--verify takes a positive number of test sequences, got {args.verify}")
    if args.calibrate < 1:
        raise ConfigError(f"--calibrate must be >= 1, got {args.calibrate}")
    out = check_out_dir(args.out)
    name = check_name(args.name) if args.name else default_name(args.model)
    if args.verify is not None:
        find_compiler()
    model = io.load(args.model)
    check_runnable(model)
    task, calibration, X = args.task, None, None
    if _needs_calibration(model, args.spec):
        task = _task_of(model, args.task)
        calibration = load_task(task, "train", limit=args.calibrate).x
    if args.verify is not None:
        task = _task_of(model, task)
        X = load_task(task, "test", limit=args.verify).x
    r = export_c(model, out, name, spec=args.spec, calibration=calibration, calibrate=args.calibrate,
                 verify=X, source=str(args.model))
    res = {"model": str(args.model), "out": r["out"], "files": r["files"],
           "verified": r.get("verified", False), "mismatches": r.get("mismatches"),
           "compared": r.get("compared", 0), "code_bytes": r["code_bytes"], "data_bytes": r["data_bytes"],
           "state_bytes": r["state_bytes"], "c_us_per_token": r.get("c_us_per_token"), "n": r.get("n", 0),
           "task": task, "calibrated_now": calibration is not None}
    res.update({k: v for k, v in r.items() if k not in res})
    _emit(args, res, _text(res))


def _text(r: dict) -> str:
    lines = [f"exported {r['model']} (spec {r['spec']}) as {r['name']}: " + ", ".join(r["files"]),
             f"const data {r['data_bytes']} B, state {r['state_bytes']} B per stream, "
             f"step scratch {r['scratch_bytes']} B (stack), source {r['code_bytes']} B"]
    if "verified" in r and r.get("compared"):
        ok = "bit-exact" if r["verified"] else "NOT bit-exact"
        lines.append(f"verified on {r['n']} {r['task']} test sequences: {ok}, {r['mismatches']} of "
                     f"{r['compared']} integer logits differ; overflows C {r['overflows']} / engine "
                     f"{r['overflows_engine']}")
        lines.append(f"C step on this CPU: {r['c_us_per_token']:.2f} us per token "
                     f"({r['compiler']} {r['cflags']}; host .text {r['host_text_bytes']} B)")
    else:
        lines.append("not verified (use --verify N to compile and compare with the integer engine)")
    return "\n".join(lines)


def add_commands(sub) -> None:
    """Add `export-c` to an argparse subparsers object."""
    e = sub.add_parser("export-c", help="portable C99 of a quantized model, for microcontrollers")
    e.add_argument("model", help="checkpoint directory or shipped model name")
    e.add_argument("--out", required=True, type=Path, help="output directory (created): NAME.h, NAME.c")
    e.add_argument("--name", help="C identifier prefix (default: from the model's name)")
    e.add_argument("--verify", type=int, metavar="N",
                   help="compile with a test harness, run N test sequences, compare with the integer engine")
    e.add_argument("--task", help="task of the calibration / test data (default: the checkpoint's)")
    e.add_argument("--spec", help="quantization spec (default: the model's, or loihi2 for float models)")
    e.add_argument("--calibrate", type=int, default=512, help="PTQ calibration samples for float models")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_export_c)
