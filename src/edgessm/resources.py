"""Files shipped inside the package (package data), found through importlib.resources so they
are found the same way from a source checkout, an editable install and an installed wheel; and
the one TOML reader of run configs, quantization specs and device presets (:func:`read_toml`)."""
from __future__ import annotations

import importlib.resources
import tomllib
from pathlib import Path

from .errors import ConfigError, EdgessmError


def package_path(*parts: str) -> Path:
    """A file or folder of package data as a filesystem path (``package_path("targets", "cpu",
    "kernel.c")``). Wheels install as plain files, so this is a Path; a zipped install is refused
    with a clear error because the C compiler and safetensors need real files."""
    t = importlib.resources.files("edgessm").joinpath(*parts)
    if isinstance(t, Path):
        return t
    raise EdgessmError(f"edgessm's package data ({'/'.join(parts)}) is not on the file system "
                       f"(zipped install?); install edgessm unzipped, e.g. with pip")


def preset_dir(kind: str) -> Path:
    """The folder of TOML presets of one kind: ``quant`` or ``crossbar``."""
    return package_path("presets", kind)


def preset_file(kind: str, name: str) -> Path | None:
    """``presets/KIND/NAME.toml`` shipped with the package, or None."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    p = preset_dir(kind) / f"{name}.toml"
    return p if p.is_file() else None


def preset_names(kind: str) -> list[str]:
    d = preset_dir(kind)
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def read_toml(path) -> dict:
    """A TOML file as a dict; invalid TOML is a ConfigError naming the file."""
    try:
        return tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (not valid UTF-8); expected a TOML config") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None


def cache_root() -> Path:
    """Where edgessm keeps what it builds (C libraries, compiled training code):
    ``$EDGESSM_CACHE``, else ``~/.cache/edgessm``."""
    import os
    return Path(os.environ.get("EDGESSM_CACHE") or Path.home() / ".cache" / "edgessm")
