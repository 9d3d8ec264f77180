"""Where data sets live on disk."""

from __future__ import annotations

import os
import pathlib

ENV_ROOT = "EDGESSM_DATA"
ENV_DOWNLOAD = "EDGESSM_DOWNLOAD"


def data_root() -> pathlib.Path:
    """The data root: ``$EDGESSM_DATA`` if set (and non-empty), else ``~/.cache/edgessm``."""
    env = os.environ.get(ENV_ROOT, "").strip()
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path.home() / ".cache" / "edgessm"


def resolve_root(root: str | os.PathLike | None) -> pathlib.Path:
    """``root`` as a path, or :func:`data_root` when it is None."""
    return data_root() if root is None else pathlib.Path(root).expanduser()


def download_allowed(download: bool) -> bool:
    """True when the caller passed ``download=True`` or ``$EDGESSM_DOWNLOAD`` is 1/true/yes."""
    if download:
        return True
    return os.environ.get(ENV_DOWNLOAD, "").strip().lower() in {"1", "true", "yes", "on"}
