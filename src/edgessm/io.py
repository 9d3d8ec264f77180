"""Checkpoints on disk: safetensors weights + JSON metadata, never pickle.

A model directory holds ``weights.safetensors`` and ``model.json``::

    {"format": "edgessm-model", "format_version": 1,
     "config": {...ModelConfig...}, "metrics": {...}, "versions": {...},
     "weights_sha256": "..."}

``load(name_or_path)`` takes a directory or the name of a model shipped inside the
package (``edgessm models`` lists them).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import torch

from .errors import CheckpointError, UnknownNameError
from .fields import json_text
from .ssm.network import ModelConfig, SequenceModel


FORMAT = "edgessm-model"
FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
META = "model.json"
def _shipped_dir() -> Path:
    from .resources import package_path
    return package_path("models")


SHIPPED_DIR = _shipped_dir()


def shipped_models() -> dict[str, Path]:
    """Names of the models shipped in the package (package data) -> their directories."""
    if not SHIPPED_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(SHIPPED_DIR.iterdir()) if (p / META).is_file()}


def versions() -> dict[str, str]:
    from . import __version__
    return {"edgessm": __version__, "torch": torch.__version__, "python": platform.python_version()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(model: SequenceModel, path, metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Write `model` to directory `path` (created); returns the directory.

    Written to temporary names first and renamed, so an interrupted save never leaves a
    half-written checkpoint under the final name.
    """
    from safetensors.torch import save_file
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp_w = path / (WEIGHTS + ".tmp")
    save_file(tensors, str(tmp_w))
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "config": model.config.to_dict(), "metrics": metrics or {}, "versions": versions(),
            "weights_sha256": _sha256(tmp_w)}
    quant = getattr(model, "quant_meta", None)
    if callable(quant):
        meta["quant"] = quant()
    if extra:
        meta.update(extra)
    tmp_m = path / (META + ".tmp")
    tmp_m.write_text(json_text(meta, indent=2, sort_keys=True))
    os.replace(tmp_w, path / WEIGHTS)
    os.replace(tmp_m, path / META)
    return path


def resolve(name_or_path) -> Path:
    """A checkpoint directory from a path or a shipped model's name."""
    p = Path(name_or_path)
    if (p / META).is_file():
        return p
    shipped = shipped_models()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    if p.exists():
        raise CheckpointError(f"{p} is not an edgessm checkpoint: {META} is missing "
                              f"(expected a directory written by edgessm.save or `edgessm train`)")
    raise UnknownNameError(f"no checkpoint at {str(name_or_path)!r} and no shipped model of that name; "
                           f"shipped models: {', '.join(shipped) or 'none'}")


def read_meta(name_or_path) -> dict:
    path = resolve(name_or_path)
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path / META} is not valid JSON ({e}); the checkpoint is corrupt") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path / META} is not an edgessm model file (format != {FORMAT!r})")
    v = meta.get("format_version", 0)
    if isinstance(v, bool) or not isinstance(v, int):
        raise CheckpointError(f"{path / META}: format_version must be an integer, got {v!r}; "
                              f"the checkpoint is corrupt")
    if v > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer edgessm (format {meta['format_version']}); "
                              f"upgrade edgessm to load it")
    meta["_path"] = str(path)
    return meta


def load_state(path: Path, meta: dict) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    wpath = path / WEIGHTS
    if not wpath.is_file():
        raise CheckpointError(f"{wpath} is missing; the checkpoint is incomplete")
    want = meta.get("weights_sha256")
    if want and _sha256(wpath) != want:
        raise CheckpointError(f"{wpath} does not match the checksum in {META}; the file is corrupt "
                              f"or was replaced")
    try:
        return load_file(str(wpath))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{wpath} is not a readable safetensors file ({e})") from None


def check_tensors(state: dict, own: dict, path) -> None:
    """Every checkpoint tensor has the dtype its model declares and finite values; else
    CheckpointError naming the tensor (a silent cast would hide a wrong or corrupt file)."""
    for k, want in own.items():
        got = state[k]
        if got.dtype != want.dtype:
            raise CheckpointError(f"checkpoint {path}: tensor {k!r} has dtype "
                                  f"{str(got.dtype).replace('torch.', '')}, the model's config expects "
                                  f"{str(want.dtype).replace('torch.', '')}; the file is corrupt or "
                                  f"was written by other software")
        if got.is_floating_point() or got.is_complex():
            finite = torch.isfinite(got)
            if not bool(finite.all()):
                n = int((~finite).sum())
                raise CheckpointError(f"checkpoint {path}: tensor {k!r} has {n} NaN or infinite "
                                      f"value(s); the checkpoint is corrupt (e.g. saved after the "
                                      f"training diverged)")


def load(name_or_path, model: SequenceModel | None = None) -> SequenceModel:
    """Load a checkpoint (directory or shipped name); into `model` if given.

    Into an existing model, a checkpoint of another configuration raises
    CheckpointError and leaves the model unchanged.
    """
    meta = read_meta(name_or_path)
    path = Path(meta["_path"])
    try:
        config = ModelConfig.from_dict(meta["config"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path / META} has no valid model config ({e})") from None
    state = load_state(path, meta)
    if model is None:
        if "quant" in meta:
            from .quant import build_quantized  # lazy: quant is optional for float models
            model = build_quantized(config, meta["quant"])
        else:
            model = SequenceModel(config)
    elif model.config.to_dict() != config.to_dict():
        diff = {k: (v, config.to_dict()[k]) for k, v in model.config.to_dict().items()
                if config.to_dict()[k] != v}
        raise CheckpointError(f"checkpoint {path} has another model configuration "
                              f"(field: (model, checkpoint)) {diff}; build the model from the "
                              f"checkpoint with edgessm.load(path)")
    own = model.state_dict()
    bad = [k for k in own if k not in state or tuple(state[k].shape) != tuple(own[k].shape)]
    extra = [k for k in state if k not in own]
    if bad or extra:
        raise CheckpointError(f"checkpoint {path} does not fit its model: mismatched or missing "
                              f"tensors {bad[:5]}, unexpected {extra[:5]}")
    check_tensors(state, own, path)
    model.load_state_dict(state)
    model.metrics = meta.get("metrics", {})
    model.checkpoint_meta = {k: v for k, v in meta.items() if k != "_path"}
    model.eval()
    return model


BLOCK_FORMAT = "edgessm-block"


def _block_config(block) -> dict:
    s = block.s4d
    return {"d_model": s.d_model, "d_state": s.d_state, "activation": type(block.act).__name__.lower(),
            "mixing": block.mixing, "residual": block.residual, "norm": block.norm_kind,
            "prenorm": block.prenorm, "init": s.init, "discretization": s.discretization,
            "learn_B": isinstance(s.B, torch.nn.Parameter), "mix_norm": block.mix_norm is not None}


def save_block(block, path) -> Path:
    """Write one Block (e.g. imported from the reference S4D) to directory `path`."""
    from safetensors.torch import save_file
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in block.state_dict().items()}, str(path / WEIGHTS))
    meta = {"format": BLOCK_FORMAT, "format_version": FORMAT_VERSION, "config": _block_config(block),
            "dtype": str(block.s4d.log_dt.dtype).replace("torch.", ""), "versions": versions(),
            "weights_sha256": _sha256(path / WEIGHTS)}
    (path / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return path


def load_block(path):
    """Load a Block written by save_block."""
    from .ssm.network import Block
    path = Path(path)
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path / META} is missing or not valid JSON ({e})") from None
    if meta.get("format") != BLOCK_FORMAT:
        raise CheckpointError(f"{path} is not an edgessm block checkpoint (format {meta.get('format')!r})")
    c = dict(meta["config"])
    block = Block(c.pop("d_model"), c.pop("d_state"), **c).to(getattr(torch, meta.get("dtype", "float32")))
    state, own = load_state(path, meta), block.state_dict()
    if set(state) != set(own) or any(tuple(state[k].shape) != tuple(own[k].shape) for k in own):
        raise CheckpointError(f"block checkpoint {path} does not fit its config")
    check_tensors(state, own, path)
    block.load_state_dict(state)
    return block.eval()


def checkpoint_meta(model) -> dict:
    """The metadata `load` attached to a model (run config, metrics, hw, ...); {} for a model
    that was not loaded from a checkpoint."""
    return dict(getattr(model, "checkpoint_meta", None) or {})


def trained_task(model) -> str | None:
    """The task a loaded checkpoint was trained on (its run config's [data] task), else None."""
    run = checkpoint_meta(model).get("run", {}) or {}
    return (run.get("data") or {}).get("task")


def shipped_summaries() -> list[dict]:
    """One row per shipped model: name, task, preset, size, and the test accuracy `edgessm eval
    NAME` gives. A model trained through a hardware wrapper (--hw) records that run's figure
    apart (hw_test_accuracy)."""
    rows = []
    for name, path in shipped_models().items():
        meta = read_meta(path)
        c = meta["config"]
        m = meta.get("metrics", {})
        hw = "hw" in meta
        acc = m.get("projected_float_test_accuracy") if hw else m.get("test_accuracy")
        rows.append({"name": name, "preset": c.get("preset"), "task": meta.get("run", {}).get("data", {}).get("task"),
                     "d_model": c["d_model"], "d_state": c["d_state"], "n_layers": c["n_layers"],
                     "test_accuracy": acc, "test_n": m.get("test_n"),
                     "hw_test_accuracy": m.get("test_accuracy") if hw else None,
                     "quant": meta.get("quant", {}).get("name"),
                     "bytes": (path / WEIGHTS).stat().st_size})
    return rows


def checkpoint_info(name_or_path) -> dict:
    """A checkpoint's path, model config, metrics, parameter count, versions and quantization."""
    meta = read_meta(name_or_path)
    model = load(name_or_path)
    n = sum(p.numel() for p in model.parameters())
    return {"path": meta["_path"], "config": meta["config"], "metrics": meta.get("metrics", {}),
            "parameters": n, "versions": meta.get("versions", {}), "quant": meta.get("quant")}


def read_state_dict(src: str, prefix: str = "") -> dict:
    """A state_dict from a .safetensors file or a .pt file (read with torch's restricted
    unpickler), unwrapped from {"state_dict": ...}; with `prefix`, the keys under it, stripped."""
    try:
        if str(src).endswith(".safetensors"):
            from safetensors.torch import load_file
            sd = load_file(src)
        else:
            sd = torch.load(src, map_location="cpu", weights_only=True)  # restricted unpickler
    except FileNotFoundError:
        raise CheckpointError(f"{src} not found") from None
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot read {src} as a state_dict ({type(e).__name__}: {e})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{src} is not a state_dict (a mapping of names to tensors); got "
                              f"{type(sd).__name__}")
    if prefix:
        sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def trained_task_options(model, task: str | None = None) -> dict:
    """``load_task`` keywords that reproduce the splits and features a checkpoint was trained
    on (the options of its run config's [data] that its task accepts, when not the defaults:
    :func:`edgessm.data.tasks.split_options`), for evaluating it on `task`; {} when `task` is
    another task than the trained one."""
    from .data.tasks import split_options
    run = (getattr(model, "checkpoint_meta", {}) or {}).get("run", {}) or {}
    data = run.get("data") or {}
    trained = data.get("task")
    if not trained or (task is not None and task != trained):
        return {}
    return split_options(trained, data)
