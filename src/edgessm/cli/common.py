"""What every command of the command line shares: help texts of the common options, defaults
shown in --help, -v/-q/--no-progress, logging setup, a quiet exit on a closed pipe, and the one
output emitter (:func:`emit`)."""
from __future__ import annotations

import argparse
import logging
import os
import sys

# help of options several commands share (a command's own help text wins)
COMMON_HELP = {
    "json": "print one JSON object on stdout instead of text (also turns progress bars off)",
    "no_progress": "no progress bars on stderr",
    "download": "download data sets missing from the data root from their canonical sources (checksummed)",
    "task": "task of the data (default: the task the checkpoint was trained on)",
    "model": "checkpoint directory or shipped model name (see `edgessm models`)",
    "seed": "random seed (default: the config's)",
    "epochs": "number of epochs (default: the config's)",
    "config": "training config (TOML file)",
    "index": "index of the test sample",
    "tokens": "tokens per measurement",
    "threads": "torch threads (0: torch's default)",
    "batch_size": "samples per batch",
    "limit": "only the first N test samples",
    "out": "output directory",
    "split": "which split: the official test set, a seeded validation subset of the train set, or the rest of it",
    "what": "what to measure",
    "target": "executor: cpu (C kernel / torch), fixed (integer engine), loihi2, crossbar",
}


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help unless the help already names its default or
    the option has none (None, False)."""

    def _get_help_string(self, action):
        h = action.help or ""
        if (not action.option_strings or action.default in (None, False, argparse.SUPPRESS)
                or "default" in h or isinstance(action, argparse._VersionAction)):
            return h
        return f"{h} (default: %(default)s)"


def subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def _verbosity_args(p: argparse.ArgumentParser, default):
    have = {o for a in p._actions for o in a.option_strings}
    kw = {} if default is None else {"default": default}
    if "-v" not in have:
        p.add_argument("-v", "--verbose", action="count", help="more log messages on stderr (-vv: debug)", **kw)
    if "-q" not in have:
        p.add_argument("-q", "--quiet", action="count", help="fewer log messages: warnings and errors only", **kw)
    if "--no-progress" not in have:
        p.add_argument("--no-progress", action="store_true", help=COMMON_HELP["no_progress"], **kw)


def finish(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Common options, help texts and the defaults-showing formatter on `p` and its commands."""
    _verbosity_args(p, None)
    p.set_defaults(verbose=0, quiet=0, no_progress=False)
    p.formatter_class = HelpFormatter
    for sp in subparsers(p).values():
        sp.formatter_class = HelpFormatter
        _verbosity_args(sp, argparse.SUPPRESS)     # also accepted after the command
        for a in sp._actions:
            if not a.help and a.dest in COMMON_HELP:
                a.help = COMMON_HELP[a.dest]
    return p


def setup(args) -> None:
    """Logging level from -v/-q (INFO by default, to stderr) and progress bars from
    --no-progress/--json."""
    from .. import progress
    level = logging.INFO + 10 * ((getattr(args, "quiet", 0) or 0) - (getattr(args, "verbose", 0) or 0))
    root = logging.getLogger("edgessm")
    root.handlers.clear()
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(logging.Formatter("%(message)s" if level >= logging.INFO else "%(name)s: %(message)s"))
    root.addHandler(h)
    root.setLevel(max(logging.DEBUG, min(level, logging.ERROR)))
    root.propagate = False
    if getattr(args, "no_progress", False) or getattr(args, "json", False) or level > logging.INFO:
        progress.set_enabled(False)
    else:
        progress.set_enabled(None)


def closed_pipe() -> int:
    """stdout's reader went away (``edgessm info smnist | head``): stop quietly, as `yes | head` does."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141     # 128 + SIGPIPE, what a shell reports for a writer killed by a closed pipe


def jsonable(o):
    """JSON fallback of the printed records: numbers as floats, anything else as its text."""
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)


def emit(args, obj: dict, text: str | None = None) -> None:
    """Print a command's result: one JSON object with --json, else `text` (default: the object
    as indented JSON)."""
    from ..fields import json_text
    if getattr(args, "json", False):
        print(json_text(obj, default=jsonable))
    else:
        print(text if text is not None else json_text(obj, indent=2, default=jsonable))
