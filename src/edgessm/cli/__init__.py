"""The edgessm command line: one module per command group, each only parsing arguments, calling
the library and printing (through :func:`.common.emit`).

    train.py     train                          models.py  models, info, eval, import-s4d
    deploy.py    quantize, deploy               stream.py  stream, bench
    export.py    export-c, export-onnx          report.py  report, demo

Every command that prints figures takes --json and then prints one JSON object on stdout.
Errors print one message (no traceback) and exit with status 2. Modules import the library
inside their command functions, so ``edgessm --help`` does not import torch.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import EdgessmError


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, exit 2, like every other error
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from . import common, deploy, export, models, report, stream, train
    p = _Parser(prog="edgessm", description="S4D models for token-by-token streaming "
                                "on CPUs, neuromorphic and in-memory-compute hardware")
    p.add_argument("--version", action="version", version=f"edgessm {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    train.add_train(sub)
    models.add_models(sub)
    models.add_info(sub)
    models.add_eval(sub)
    stream.add_stream(sub)
    models.add_import_s4d(sub)
    stream.add_bench(sub)
    report.add_report(sub)
    report.add_demo(sub)
    deploy.add_commands(sub)
    export.add_export_c(sub)
    export.add_export_onnx(sub)
    return common.finish(p)


def main(argv=None) -> int:
    from .common import closed_pipe, setup
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:     # --help, --version, or a usage error already printed on one line
        return e.code if isinstance(e.code, int) else 2
    try:
        from ..options import validate_args
        validate_args(args)     # every option against its rule, before any work
        setup(args)
        args.func(args)
        sys.stdout.flush()
    except EdgessmError as e:
        print(f"edgessm: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return closed_pipe()
    except KeyboardInterrupt:
        print("edgessm: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
