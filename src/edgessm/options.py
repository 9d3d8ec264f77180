"""Command-line options: one rule per option name, the same in every command, checked
before any work starts (``validate_args``, called by the CLI right after parsing).

A rule is one line of :data:`OPTION_RULES` (see :class:`edgessm.fields.Rule`); an option
absent from a command, or not given (None), is skipped.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import ConfigError
from .fields import Rule

OPTION_RULES: dict[str, Rule] = {
    "batch_size": Rule(int, ge=1, le=2**20),
    "threads": Rule(int, ge=1, le=1024),
    "limit": Rule(int, ge=1, le=10**9),
    "deploy_limit": Rule(int, ge=1, le=10**9),
    "index": Rule(int, ge=0, le=10**9),
    "epochs": Rule(int, ge=1, le=10**6),
    "seed": Rule(int, ge=0, le=2**31 - 1),
    "max_minutes": Rule(float, gt=0, le=10**7),
    "tokens": Rule(int, ge=1, le=10**9),
    "trials": Rule(int, ge=1, le=10**4),
    "calibrate": Rule(int, ge=1, le=10**7),
    "verify": Rule(int, ge=1, le=10**6),
}
BATCH_LIST_RULE = Rule(int, ge=1, le=2**16)
OUT_DIRS = ("out", "report")    # options naming a directory the command writes


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_batch_list(text: str) -> tuple[int, ...]:
    """'1,8,64' -> (1, 8, 64), each a valid batch size."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or any(not p for p in parts):
        raise ConfigError(f"--batch takes comma-separated batch sizes, e.g. 1,8,64, got {text!r}")
    return tuple(BATCH_LIST_RULE.check("--batch", p) for p in parts)


def check_writable_dir(label: str, path) -> None:
    """`path` is, or can be created as, a directory this process can write into."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{label} {path}: exists and is a file, not a directory")
    q = p
    while not q.exists():
        if q.parent == q:
            break
        q = q.parent
    if not q.is_dir():
        raise ConfigError(f"{label} {path}: cannot be created ({q} is a file, not a directory)")
    try:
        if not os.access(q, os.W_OK | os.X_OK):
            raise PermissionError
        with tempfile.TemporaryFile(dir=q):
            pass
    except OSError as e:
        raise ConfigError(f"{label} {path}: cannot write in {q} "
                          f"({e.strerror or 'permission denied'})") from None


def validate_args(args) -> None:
    """Check (and normalize) every option of a parsed command line against its rule."""
    for dest, rule in OPTION_RULES.items():
        v = getattr(args, dest, None)
        if v is not None:
            setattr(args, dest, rule.check(_flag(dest), v))
    if getattr(args, "command", None) == "bench" and getattr(args, "batch", None) is not None:
        check_batch_list(args.batch)
    for dest in OUT_DIRS:
        v = getattr(args, dest, None)
        if isinstance(v, (str, os.PathLike)) and not (dest == "report" and getattr(args, "no_report", False)):
            check_writable_dir(_flag(dest), v)
