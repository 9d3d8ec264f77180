"""Training configuration: a TOML file under configs/ loaded into dataclasses.

A run is config + seed and is reproducible. Sections::

    [model]  preset = "neuromorphic", then any ModelConfig field (d_model, d_state, ...)
    [data]   task, val_fraction, limit_train, limit_val, limit_test; fsdd tasks also
             speaker_holdout, val_speaker, normalize, top_db, trim_db and the training augmentation aug_*
             (edgessm.data.fsdd); scifar tasks the training augmentation aug_flip, aug_shift_px
             (edgessm.data.images)
    [train]  epochs, batch_size, lr, ssm_lr, weight_decay, warmup_epochs, grad_clip, seed, ...
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..fields import Rule, check_section, coerce
from ..resources import read_toml
from ..ssm.network import PRESETS, ModelConfig, SequenceModel
from .accel import PRECISIONS, check_device_name


@dataclass
class DataConfig:
    task: str = "smnist"
    val_fraction: float = 0.1
    limit_train: int = 0          # 0: all
    limit_val: int = 0
    limit_test: int = 0
    speaker_holdout: str = ""     # fsdd tasks: a speaker held out as the test set
    val_speaker: str = ""         # fsdd tasks: a training speaker as the val set (not val_fraction)
    normalize: str = "train"      # fsdd: train (split statistics), cmn, cmvn (per utterance)
    top_db: float = 0.0           # fsdd: clamp log-mel at the utterance's max - top_db dB; 0: off
    trim_db: float = 0.0          # fsdd: drop leading/trailing frames trim_db dB below the loudest
    # fsdd: augmentation of training batches (edgessm.data.fsdd.Augment); 0 = off
    aug_snr_db: float = 0.0       # white noise at an SNR in [aug_snr_db, aug_snr_db + 20] dB
    aug_gain_db: float = 0.0      # gain in [-x, x] dB
    aug_shift_ms: float = 0.0     # silence of up to x ms before or after the recording
    aug_stretch: float = 0.0      # length x (1 + a), a in [-x, x] (speed perturbation)
    aug_time_masks: int = 0       # SpecAugment time masks of up to aug_time_mask_frames frames
    aug_time_mask_frames: int = 0
    aug_freq_masks: int = 0       # SpecAugment channel masks of up to aug_freq_mask_channels
    aug_freq_mask_channels: int = 0
    aug_warp: float = 0.0         # vocal-tract-length warp of the mel filters by 1 + a, a in [-x, x]
    # scifar tasks: augmentation of training images (edgessm.data.images.ImageAugment)
    aug_flip: bool = False        # mirrored left-right with probability 1/2
    aug_shift_px: int = 0         # translated by up to x pixels each way (mean colour moved in)

    def task_options(self) -> dict:
        """The load_task keywords of this task's splits for evaluation (no augmentation)."""
        from ..data.tasks import split_options
        return split_options(self.task, dataclasses.asdict(self))

    def augment(self):
        """The training augmentation of this task (an edgessm.data.fsdd.Augment for audio, an
        edgessm.data.images.ImageAugment for images), or None when off."""
        from ..data.tasks import TASKS, augmentation_class
        kind = TASKS[self.task].augmentation if self.task in TASKS else ""
        if not kind:
            return None
        a = augmentation_class(kind)(**{f[4:]: getattr(self, f) for f in aug_fields(kind)})
        return a if a.active else None


def aug_fields(kind: str) -> tuple[str, ...]:
    """The [data] augmentation fields of a kind of task (TaskInfo.augmentation; "" has none):
    ``aug_`` + each field of its augmentation class."""
    if not kind:
        return ()
    from ..data.tasks import augmentation_class
    return tuple("aug_" + f.name for f in dataclasses.fields(augmentation_class(kind)))


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64          # global batch (split over processes under torchrun)
    lr: float = 4e-3              # encoder, mixing, decoder, C, D
    ssm_lr: float = 1e-3          # log_dt, A (and B): own group, no weight decay
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    seed: int = 0
    eval_batch_size: int = 256
    threads: int = 0              # 0: torch default
    device: str = "auto"          # auto (CUDA when present, else CPU), cpu, cuda, cuda:N
    precision: str = "fp32"       # fp32, bf16-mixed, fp16-mixed (CUDA only)
    compile: bool = False         # torch.compile the training step (see train/accel.py)
    select: str = "val_acc"       # OUT/best: val_acc (first epoch with the best), val_loss, last
    label_smoothing: float = 0.0  # training loss: cross-entropy against (1 - x) one-hot + x / classes
    mixup: float = 0.0            # mixup: pairs of training sequences and their targets mixed, weight ~ Beta(x, x); 0: off
    ema: float = 0.0              # weight averaging: validation, OUT/best and the test use an exponential moving average of the weights, this decay per step; 0: off


# One rule per field (type and valid range), checked when a config is loaded, before any
# work. A field without a rule is checked for its type only.
DATA_RULES = {
    "val_fraction": Rule(float, ge=0, lt=1),
    "limit_train": Rule(int, ge=0, le=10**9, note="0: all"),
    "limit_val": Rule(int, ge=0, le=10**9, note="0: all"),
    "limit_test": Rule(int, ge=0, le=10**9, note="0: all"),
    "normalize": Rule(str, choices=("train", "cmn", "cmvn")),
    "aug_snr_db": Rule(float, ge=0, le=60, note="0: off"),
    "aug_gain_db": Rule(float, ge=0, le=20, note="0: off"),
    "aug_shift_ms": Rule(float, ge=0, le=500, note="0: off"),
    "aug_stretch": Rule(float, ge=0, le=0.5, note="0: off"),
    "aug_time_masks": Rule(int, ge=0, le=10, note="0: off"),
    "aug_time_mask_frames": Rule(int, ge=0, le=100, note="frames"),
    "aug_freq_masks": Rule(int, ge=0, le=4, note="0: off"),
    "aug_freq_mask_channels": Rule(int, ge=0, le=16, note="mel channels"),
    "aug_warp": Rule(float, ge=0, le=0.2, note="0: off"),
    "aug_flip": Rule(bool),
    "aug_shift_px": Rule(int, ge=0, le=16, note="pixels, 0: off"),
    "top_db": Rule(float, ge=0, le=120, note="dB, 0: off"),
    "trim_db": Rule(float, ge=0, le=120, note="dB, 0: off"),
}
TRAIN_RULES = {
    "epochs": Rule(int, ge=1, le=10**6),
    "batch_size": Rule(int, ge=1, le=2**20),
    "lr": Rule(float, gt=0, le=10),
    "ssm_lr": Rule(float, ge=0, le=10),
    "weight_decay": Rule(float, ge=0, le=10),
    "warmup_epochs": Rule(float, ge=0, le=10**6),
    "grad_clip": Rule(float, ge=0, note="0: no clipping"),
    "seed": Rule(int, ge=0, le=2**31 - 1),
    "eval_batch_size": Rule(int, ge=1, le=2**20),
    "threads": Rule(int, ge=0, le=1024, note="0: torch default"),
    "precision": Rule(str, choices=PRECISIONS),
    "compile": Rule(bool),
    "select": Rule(str, choices=("val_acc", "val_loss", "last")),
    "label_smoothing": Rule(float, ge=0, lt=1, note="0: off"),
    "mixup": Rule(float, ge=0, le=10, note="Beta(x, x); 0: off"),
    "ema": Rule(float, ge=0, lt=1, note="decay per step; 0: off"),
}
SECTIONS = ("model", "data", "train", "quant", "hw")   # quant, hw: kept verbatim for --quant/--hw


INIT_ADJUSTABLE = ("readout", "dropout", "tie_dropout")    # [model] fields a warm start (--init) may change


@dataclass
class RunConfig:
    model: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    extra: dict = field(default_factory=dict)   # other sections (e.g. quant, hw), kept verbatim

    def model_config(self, d_input: int, d_output: int) -> ModelConfig:
        m = dict(self.model)
        preset = m.pop("preset", "standard")
        if preset not in PRESETS and preset != "custom":
            raise ConfigError(f"unknown preset {preset!r} in [model]; expected one of {', '.join(PRESETS)}")
        base = dict(PRESETS.get(preset, {}))
        return ModelConfig.from_dict({**base, "preset": preset, "d_input": d_input,
                                      "d_output": d_output, **m})

    def warm_start(self, model):
        """The model a run started with ``--init`` trains: `model` (the checkpoint's weights and
        model config) with the ``[model]`` fields that hold no weights (``INIT_ADJUSTABLE``:
        the readout, dropout and its tying) set as this config gives them. Every other field ``[model]``
        gives must equal the checkpoint's; a difference is refused, naming the field (the
        weights fix the architecture)."""
        c = model.config
        given = dict(self.model)
        diffs = {}
        for k, v in given.items():
            have = getattr(c, k, None)
            if k not in INIT_ADJUSTABLE:
                if k in ("d_input", "d_output") or have == v:
                    continue
                raise ConfigError(f"--init: [model] {k} = {v!r} differs from the checkpoint's "
                                  f"{have!r}; the checkpoint's weights fix the architecture, and only "
                                  f"{', '.join(INIT_ADJUSTABLE)} may change on a warm start (remove "
                                  f"{k} from [model] or make it match)")
            elif have != v:
                diffs[k] = v
        if not diffs:
            return model
        from ..quant.model import QuantSequenceModel
        if isinstance(model, QuantSequenceModel) or type(model) is not SequenceModel:
            raise ConfigError(f"--init: [model] changes {', '.join(sorted(diffs))} of a "
                              f"{type(model).__name__}; only a float checkpoint's can change")
        new = SequenceModel(ModelConfig.from_dict({**c.to_dict(), **diffs})).to(model.encoder.weight)
        new.load_state_dict(model.state_dict())
        for attr in ("metrics", "checkpoint_meta"):
            if hasattr(model, attr):
                setattr(new, attr, dict(getattr(model, attr) or {}))
        return new.train(model.training)

    def to_dict(self) -> dict:
        return {"model": dict(self.model), "data": dataclasses.asdict(self.data),
                "train": dataclasses.asdict(self.train), **self.extra}


def _section(cls, d: dict, name: str, rules: dict):
    if not isinstance(d, dict):
        raise ConfigError(f"[{name}] must be a table")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in [{name}]; known: {', '.join(known)}")
    out = {}
    for k, v in d.items():
        out[k] = coerce(f"[{name}] {k}", v, type(getattr(cls(), k)), strings=False)
    return cls(**check_section(name, out, rules))


def from_dict(d: dict) -> RunConfig:
    d = dict(d)
    unknown = [k for k in d if k not in SECTIONS]
    if unknown:
        raise ConfigError(f"unknown section(s) {', '.join(f'[{k}]' for k in unknown)}; "
                          f"known: {', '.join(f'[{k}]' for k in SECTIONS)}")
    model = d.pop("model", {})
    if not isinstance(model, dict):
        raise ConfigError("[model] must be a table")
    data = _section(DataConfig, d.pop("data", {}), "data", DATA_RULES)
    train = _section(TrainConfig, d.pop("train", {}), "train", TRAIN_RULES)
    from ..data.tasks import SPLIT_OPTION_DEFAULTS, TASKS
    if data.task not in TASKS:
        raise ConfigError(f"[data] task must be one of {', '.join(TASKS)}, got {data.task!r}")
    info = TASKS[data.task]

    def takes(i, k):   # whether the task i takes the [data] field k
        return k in i.options or k in aug_fields(i.augmentation)

    set_ = [f.name for f in dataclasses.fields(DataConfig)
            if getattr(data, f.name) != f.default and not takes(info, f.name)
            and (f.name in SPLIT_OPTION_DEFAULTS or f.name.startswith("aug_"))]
    if set_:
        takers = [t for t, i in TASKS.items() if all(takes(i, k) for k in set_)]
        raise ConfigError(f"[data] {', '.join(set_)} apply to the tasks {', '.join(takers) or '(none)'} "
                          f"only, not {data.task!r}")
    for n, w in (("aug_time_masks", "aug_time_mask_frames"), ("aug_freq_masks", "aug_freq_mask_channels")):
        if bool(getattr(data, n)) != bool(getattr(data, w)):
            raise ConfigError(f"[data] {n} and {w} go together: set both > 0 or both 0 "
                              f"(got {getattr(data, n)} and {getattr(data, w)})")
    if data.val_speaker and data.val_speaker.lower() == data.speaker_holdout.lower():
        raise ConfigError(f"[data] val_speaker must differ from speaker_holdout (both "
                          f"{data.val_speaker!r}): the held-out speaker is the test set")
    cfg = RunConfig(model=model, data=data, train=train, extra=d)
    check_device_name(cfg.train.device, "[train] device")
    if model:   # the model fields: their own checks (ModelConfig), before any work
        cfg.model_config(1, 1)
    return cfg


def load_config(path) -> RunConfig:
    """The run config in a TOML file; a file renamed to the naming convention (``naming``) is
    still found under its old name, with a deprecation message."""
    path = Path(path)
    if not path.is_file():
        from ..naming import RENAMED, current
        if path.name in RENAMED["config"] and (path.parent / RENAMED["config"][path.name]).is_file():
            path = path.parent / current("config", path.name)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; configs live under configs/ "
                          f"(e.g. configs/smnist.toml)")
    return from_dict(read_toml(path))
