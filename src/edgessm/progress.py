"""Progress bars (tqdm) on stderr, so stdout (and --json output) stays clean.

One switch for the whole process: :func:`set_enabled` (the command line turns bars off with
``--no-progress`` or ``--json``); by default bars show when stderr is a terminal.
"""
from __future__ import annotations

import sys

_ENABLED: bool | None = None


def set_enabled(on: bool | None) -> None:
    """True / False forces bars on / off; None: on when stderr is a terminal."""
    global _ENABLED
    _ENABLED = on


def enabled() -> bool:
    if _ENABLED is not None:
        return _ENABLED
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def bar(iterable=None, *, total=None, desc: str | None = None, unit: str = "it", **kw):
    """A tqdm bar on stderr (disabled when progress is off)."""
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled(),
                leave=False, dynamic_ncols=True, **kw)
