"""CIFAR-10 from ``<root>/cifar10/``, in any of three forms, tried in this order:

1. ``cifar10_train.npz`` + ``cifar10_test.npz`` (``images`` uint8 (N, 32, 32, 3) RGB,
   ``labels`` uint8 (N,)), loaded with ``allow_pickle=False``. The copy in CI is stored
   sorted by class, so each file is put once in a fixed pseudo-random order
   (``np.random.default_rng(NPZ_ORDER_SEED).permutation(N)``, seed 10) like the
   canonical batches; otherwise "the first N samples" (``limit``) would be one class;

2. the extracted canonical folder ``cifar-10-batches-py/`` (``data_batch_1`` ...
   ``data_batch_5``, ``test_batch``);
3. the canonical archive ``cifar-10-python.tar.gz`` (MD5-checked, read in place, never
   extracted to disk), which is also what ``download=True`` fetches.

The canonical batches are Python pickles. They are only ever read through
:class:`RestrictedUnpickler`, which resolves exactly the globals numpy needs to rebuild
an array and rejects anything else (e.g. ``os.system``) with a DataError before it can
be called.
"""

from __future__ import annotations

import functools
import io
import pathlib
import pickle
import tarfile
import zipfile

import numpy as np

from edgessm.errors import DataError, MissingDataError

from .download import SOURCES, download_file, missing_message, verify_checksum

__all__ = ["RestrictedUnpickler", "restricted_loads", "load_cifar10_arrays",
           "NPZ_FILES", "NPZ_ORDER_SEED", "BATCH_DIR", "BATCH_FILES", "ARCHIVE"]

NPZ_FILES = ("cifar10_train.npz", "cifar10_test.npz")
BATCH_DIR = "cifar-10-batches-py"
BATCH_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
ARCHIVE = "cifar-10-python.tar.gz"

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray

def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` limited to latin-1: how protocol-2 pickles written by Python 3
    store bytes (e.g. a re-pickled batch). Any other codec is refused."""
    if encoding.lower().replace("-", "").replace("_", "") != "latin1" or not isinstance(text, str):
        raise DataError(f"pickle asks for _codecs.encode with {encoding!r}; refusing to unpickle it.")
    return text.encode("latin-1")


#: (module, name) -> object: everything a CIFAR-10 batch needs, nothing more.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"): _latin1_encode,
    ("numpy.core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _multiarray._reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds numpy arrays and plain containers.

    ``find_class`` resolves the numpy array reconstruction globals listed in
    ``_ALLOWED_GLOBALS`` (``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``,
    ``numpy.dtype``, and ``_codecs.encode`` restricted to latin-1) and raises
    :class:`DataError` for any other global, so a malicious pickle cannot reach a
    callable such as ``os.system``.
    """

    source = "<pickle>"

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self.source} refers to {module}.{name}, which a CIFAR-10 batch never "
                f"needs; refusing to unpickle it (the file is corrupt or malicious); "
                f"delete it and download CIFAR-10 again."
            ) from None

    def persistent_load(self, pid):
        raise DataError(f"{self.source} uses persistent ids; refusing to unpickle it.")


def restricted_loads(data: bytes, source: str = "<pickle>"):
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; any failure is a DataError."""
    up = RestrictedUnpickler(io.BytesIO(data), encoding="bytes")
    up.source = source
    try:
        return up.load()
    except DataError:
        raise
    except Exception as e:  # UnpicklingError, EOFError, ValueError, TypeError, ...
        raise DataError(f"{source} is not a readable CIFAR-10 batch ({type(e).__name__}: {e}); "
                        f"delete it and download CIFAR-10 again.") from None


def _check(images: np.ndarray, labels: np.ndarray, n: int | None, source: str):
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise DataError(f"{source}: images are {images.dtype} {images.shape}, expected uint8 (N, 32, 32, 3).")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(f"{source}: {labels.shape} labels for {images.shape[0]} images.")
    if n is not None and images.shape[0] != n:
        raise DataError(f"{source}: {images.shape[0]} images, expected {n}; the file is incomplete.")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{source}: labels outside 0-9.")


def _batch_to_arrays(obj, source: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(obj, dict):
        raise DataError(f"{source} is not a CIFAR-10 batch (a {type(obj).__name__}, not a dict).")
    get = lambda k: obj.get(k.encode(), obj.get(k))  # noqa: E731 - py2 pickles have bytes keys
    data, labels = get("data"), get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{source}: 'data' is not a uint8 (N, 3072) array.")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{source}: 'labels' is not a list of integers.") from None
    # Canonical layout: 1024 red, then 1024 green, then 1024 blue values, each row-major.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    _check(images, labels, None, source)
    return images, labels.astype(np.uint8)


def _from_batches(read, sources) -> dict[str, np.ndarray]:
    parts = {name: _batch_to_arrays(restricted_loads(read(name), src), src)
             for name, src in zip(BATCH_FILES, sources)}
    train = [parts[n] for n in BATCH_FILES[:5]]
    out = {
        "train_images": np.ascontiguousarray(np.concatenate([p[0] for p in train])),
        "train_labels": np.concatenate([p[1] for p in train]),
        "test_images": np.ascontiguousarray(parts["test_batch"][0]),
        "test_labels": parts["test_batch"][1],
    }
    return out


#: Seed of the fixed order the npz form is put in (see the module docstring).
NPZ_ORDER_SEED = 10


def _load_npz(paths) -> dict[str, np.ndarray]:
    out = {}
    for split, p in zip(("train", "test"), paths):
        try:
            with np.load(p, allow_pickle=False) as z:
                images, labels = z["images"], z["labels"]
        except KeyError as e:
            raise DataError(f"{p} lacks the array {e}; expected 'images' and 'labels'.") from None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"{p} is not a readable npz file ({e}); replace it.") from None
        _check(images, labels, None, str(p))
        order = np.random.default_rng(NPZ_ORDER_SEED).permutation(len(labels))
        out[f"{split}_images"] = images[order]
        out[f"{split}_labels"] = labels[order].astype(np.uint8)
    return out


def _load_folder(folder: pathlib.Path) -> dict[str, np.ndarray]:
    return _from_batches(lambda n: (folder / n).read_bytes(), [str(folder / n) for n in BATCH_FILES])


def _load_archive(path: pathlib.Path) -> dict[str, np.ndarray]:
    try:
        with tarfile.open(path, "r:gz") as tar:
            blobs = {}
            for n in BATCH_FILES:
                try:
                    f = tar.extractfile(f"{BATCH_DIR}/{n}")
                except KeyError:
                    f = None
                if f is None:
                    raise DataError(f"{path} lacks {BATCH_DIR}/{n}; delete it and download it again.")
                blobs[n] = f.read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable tar.gz archive ({e}); delete it and download it again.") from None
    return _from_batches(blobs.__getitem__, [f"{path}:{BATCH_DIR}/{n}" for n in BATCH_FILES])


def _sig(paths) -> tuple:
    return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)


@functools.lru_cache(maxsize=2)
def _load_cached(kind: str, sig: tuple) -> dict[str, np.ndarray]:
    paths = [pathlib.Path(s[0]) for s in sig]
    if kind == "npz":
        out = _load_npz(paths)
    elif kind == "folder":
        out = _load_folder(paths[0].parent)
    else:
        out = _load_archive(paths[0])
    for a in out.values():
        a.setflags(write=False)
    return out


def load_cifar10_arrays(root: pathlib.Path, *, download: bool = False) -> dict[str, np.ndarray]:
    """``{"train_images": (50000,32,32,3) uint8, "train_labels", "test_images", "test_labels"}``.

    Decoded once per process (cached on file paths, mtimes and sizes); arrays are read-only.
    """
    folder = root / "cifar10"
    npz = [folder / n for n in NPZ_FILES]
    if all(p.is_file() for p in npz):
        return _load_cached("npz", _sig(npz))
    bdir = folder / BATCH_DIR
    if bdir.is_dir():
        batches = [bdir / n for n in BATCH_FILES]
        missing = [n for n, p in zip(BATCH_FILES, batches) if not p.is_file()]
        if missing:
            raise DataError(
                f"CIFAR-10 folder {bdir} is incomplete: {', '.join(missing)} missing; delete the "
                f"folder and download again (download=True), or set EDGESSM_DATA to a complete data root."
            )
        return _load_cached("folder", _sig(batches))
    archive = folder / ARCHIVE
    src = SOURCES["cifar10"][ARCHIVE]
    if not archive.is_file():
        if not download:
            raise MissingDataError(missing_message(
                "CIFAR-10", folder, root, [f"{' + '.join(NPZ_FILES)} (or {ARCHIVE}, or the extracted {BATCH_DIR}/)"]))
        download_file(src.url, archive, src.md5)
    if src.md5 is not None:
        verify_checksum(archive, src.md5)
    return _load_cached("archive", _sig([archive]))
