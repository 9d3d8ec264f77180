"""Canonical sources, checksums and downloads.

The table :data:`SOURCES` names, per data set, every file a loader needs, the canonical
URL it comes from and its MD5 checksum. Downloads go through :mod:`urllib` into a
temporary file next to the destination; the file is renamed into place only after its
checksum matches, so an interrupted or corrupt download never leaves a file that looks
valid. :data:`SOURCES` is a plain dict so tests (and users behind a mirror) can point an
entry at another URL, e.g. a ``file://`` one.

FSDD has no fixed checksum: it comes as a GitHub-generated tarball of the v1.0.10 tag,
and GitHub does not guarantee byte-stable archives, so instead of an MD5 the extracted
``recordings/`` folder is checked for its 3,000 correctly named WAV files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import pathlib
import tempfile
import urllib.error
import urllib.request
from typing import Iterable

from edgessm.errors import DataError, MissingDataError
from edgessm.progress import bar

__all__ = [
    "Source",
    "SOURCES",
    "md5sum",
    "verify_checksum",
    "download_file",
    "ensure_files",
    "missing_message",
]


@dataclasses.dataclass(frozen=True)
class Source:
    """One downloadable file: where it comes from and its MD5 (None: no fixed checksum)."""

    url: str
    md5: str | None


_MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"

#: dataset -> file name (relative to ``<root>/<dataset>/``) -> Source.
SOURCES: dict[str, dict[str, Source]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": Source(
            _MNIST_MIRROR + "train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"
        ),
        "train-labels-idx1-ubyte.gz": Source(
            _MNIST_MIRROR + "train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"
        ),
        "t10k-images-idx3-ubyte.gz": Source(
            _MNIST_MIRROR + "t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"
        ),
        "t10k-labels-idx1-ubyte.gz": Source(
            _MNIST_MIRROR + "t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"
        ),
    },
    "cifar10": {
        "cifar-10-python.tar.gz": Source(
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
        ),
    },
    "fsdd": {
        # GitHub archive of the v1.0.10 tag; no stable checksum (see module docstring).
        "free-spoken-digit-dataset-1.0.10.tar.gz": Source(
            "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz",
            None,
        ),
    },
}

_CHUNK = 1 << 20
# (resolved path, mtime_ns, size, md5) of files already verified in this process.
_VERIFIED: set[tuple[str, int, int, str]] = set()


def md5sum(path: str | os.PathLike) -> str:
    """Hex MD5 digest of a file."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_checksum(path: str | os.PathLike, md5: str) -> None:
    """Raise :class:`DataError` unless the file at ``path`` has MD5 ``md5``.

    A result is remembered per (path, modification time, size), so verifying the same
    unchanged file again is free.
    """
    p = pathlib.Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise DataError(f"cannot verify {p}: {e.strerror or e}") from None
    key = (str(p.resolve()), st.st_mtime_ns, st.st_size, md5.lower())
    if key in _VERIFIED:
        return
    got = md5sum(p)
    if got != md5.lower():
        raise DataError(
            f"{p} fails its MD5 checksum (got {got}, expected {md5.lower()}): the file is "
            f"corrupt or truncated; delete it and download it again (download=True) or "
            f"copy a good copy there."
        )
    _VERIFIED.add(key)


def download_file(url: str, dest: str | os.PathLike, md5: str | None = None,
                  *, timeout: float = 60.0) -> pathlib.Path:
    """Download ``url`` to ``dest`` atomically, checking ``md5`` when given.

    The bytes go to a temporary file in ``dest``'s folder, which is renamed to ``dest``
    only when complete and (if ``md5`` is given) matching; otherwise it is deleted and
    :class:`DataError` raised.
    """
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = pathlib.Path(tmp_name)
    h = hashlib.md5()
    got = 0
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                size = resp.headers.get("Content-Length")
                with bar(total=int(size) if size and size.isdigit() else None, desc=dest.name,
                         unit="B", unit_scale=True, unit_divisor=1024) as pb:
                    for chunk in iter(lambda: resp.read(_CHUNK), b""):
                        h.update(chunk)
                        out.write(chunk)
                        pb.update(len(chunk))
                        got += len(chunk)
            if size and size.isdigit() and got != int(size):
                raise OSError(f"the transfer was interrupted after {got} of {size} bytes")
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            reason = (f"HTTP {e.code} {e.reason}" if isinstance(e, urllib.error.HTTPError)
                      else getattr(e, "reason", None) or e)
            raise DataError(
                f"could not download {url} to {dest}: {reason}; check the network or "
                f"place the file there by hand."
            ) from None
        if md5 is not None and h.hexdigest() != md5.lower():
            raise DataError(
                f"download of {url} fails its MD5 checksum (got {h.hexdigest()}, expected "
                f"{md5.lower()}); nothing was saved to {dest}; retry, or fetch the file "
                f"from another mirror."
            )
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def missing_message(dataset: str, folder: pathlib.Path, root: pathlib.Path,
                    missing: Iterable[str], hint: str = "") -> str:
    """The one-sentence error for data that is absent and may not be downloaded."""
    names = ", ".join(missing)
    extra = f" ({hint})" if hint else ""
    return (
        f"{dataset} data not found: {names} missing from {folder} (data root {root}){extra}; "
        f"set EDGESSM_DATA to a data root that holds them, or pass download=True "
        f"(command line: --download, or EDGESSM_DOWNLOAD=1) to fetch them from the "
        f"canonical source."
    )


def ensure_files(dataset: str, root: pathlib.Path, names: Iterable[str], *,
                 download: bool, verify: bool = True, label: str | None = None) -> list[pathlib.Path]:
    """Paths of ``names`` under ``<root>/<dataset>/``, downloading missing ones if allowed.

    Files present on disk are checked against their MD5 when ``verify`` (cached per
    path and mtime). Missing files without ``download`` raise one :class:`DataError`
    naming all of them, the folder and how to get them.
    """
    folder = root / dataset
    table = SOURCES[dataset]
    names = list(names)
    paths = [folder / n for n in names]
    missing = [n for n, p in zip(names, paths) if not p.is_file()]
    if missing and not download:
        raise MissingDataError(missing_message(label or dataset, folder, root, missing))
    for n in missing:
        src = table[n]
        download_file(src.url, folder / n, src.md5)
    if verify:
        for n, p in zip(names, paths):
            md5 = table[n].md5
            if md5 is not None:
                verify_checksum(p, md5)
    return paths
