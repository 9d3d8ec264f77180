"""MNIST from the four canonical IDX gzip files in ``<root>/mnist/``.

The IDX format: a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), then one big-endian uint32 per dimension, then the data in C order.
We parse it ourselves and check every size, so a truncated or corrupt file raises
:class:`~edgessm.errors.DataError` naming the file instead of returning garbage.
"""

from __future__ import annotations

import functools
import gzip
import pathlib
import struct
import zlib

import numpy as np

from edgessm.errors import DataError

from .download import ensure_files

__all__ = ["MNIST_FILES", "parse_idx", "read_idx_gz", "load_mnist_arrays"]

#: split -> (images file, labels file), canonical names.
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_COUNTS = {"train": 60000, "test": 10000}

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode an (uncompressed) IDX byte string into an array; DataError if malformed."""
    if len(data) < 4:
        raise DataError(f"{name} is not an IDX file: only {len(data)} bytes; delete it and download it again.")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _IDX_DTYPES or not 1 <= ndim <= 4:
        raise DataError(
            f"{name} is not an IDX file (bad magic number {data[:4].hex()}); delete it and download it again."
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name} is truncated inside its IDX header; delete it and download it again.")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        raise DataError(
            f"{name} has {got} data bytes but its IDX header {tuple(dims)} says {expected}: "
            f"the file is truncated or corrupt; delete it and download it again."
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx_gz(path: pathlib.Path) -> np.ndarray:
    """Read a gzip-compressed IDX file; DataError naming the file if it is corrupt."""
    try:
        with open(path, "rb") as f:
            raw = gzip.decompress(f.read())
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataError(
            f"{path} is not a readable gzip file ({e}): it is truncated or corrupt; "
            f"delete it and download it again."
        ) from None
    return parse_idx(raw, str(path))


def _signature(paths) -> tuple:
    out = []
    for p in paths:
        st = p.stat()
        out.append((str(p), st.st_mtime_ns, st.st_size))
    return tuple(out)


@functools.lru_cache(maxsize=4)
def _load_cached(sig: tuple, verify: bool) -> dict[str, np.ndarray]:
    del verify  # part of the cache key only
    paths = [pathlib.Path(s[0]) for s in sig]
    out: dict[str, np.ndarray] = {}
    for i, split in enumerate(("train", "test")):
        ip, lp = paths[2 * i], paths[2 * i + 1]
        images, labels = read_idx_gz(ip), read_idx_gz(lp)
        n = _COUNTS[split]
        if images.shape != (n, 28, 28) or images.dtype != np.uint8:
            raise DataError(f"{ip} holds {images.dtype} {images.shape}, expected uint8 ({n}, 28, 28); replace the file.")
        if labels.shape != (n,) or labels.dtype != np.uint8 or labels.max() > 9:
            raise DataError(f"{lp} holds {labels.dtype} {labels.shape}, expected uint8 ({n},) labels 0-9; replace the file.")
        images.setflags(write=False)
        labels.setflags(write=False)
        out[f"{split}_images"], out[f"{split}_labels"] = images, labels
    return out


def load_mnist_arrays(root: pathlib.Path, *, download: bool = False, verify: bool = True) -> dict[str, np.ndarray]:
    """``{"train_images": (60000,28,28) uint8, "train_labels", "test_images", "test_labels"}``.

    Files are MD5-checked (``verify``) and decoded once per process (cached on their
    paths, modification times and sizes). The arrays are read-only: copy before editing.
    """
    names = [n for pair in (MNIST_FILES["train"], MNIST_FILES["test"]) for n in pair]
    paths = ensure_files("mnist", root, names, download=download, verify=verify, label="MNIST")
    return _load_cached(_signature(paths), verify)
