"""What a training run is set up from: the run config with its command-line overrides, and the
model wrapper (quantization-aware, or hardware-aware for a target that declares it)."""
from __future__ import annotations

from ..errors import ConfigError
from .config import RunConfig, from_dict, load_config


def run_config(path, sets=None, *, seed: int | None = None, epochs: int | None = None,
               device: str | None = None, precision: str | None = None,
               compile: bool | None = None) -> RunConfig:
    """The TOML run config at `path` with SECTION.KEY=VALUE `sets` applied, then the given
    [train] fields (None: the config's)."""
    cfg = load_config(path)
    if sets:
        from ..resources import read_toml
        from .tracking import apply_sets
        cfg = from_dict(apply_sets(read_toml(path), sets))
    for name, value in (("seed", seed), ("epochs", epochs), ("device", device), ("precision", precision),
                        ("compile", compile)):
        if value is not None:
            setattr(cfg.train, name, value)
    return cfg


def training_wrap(cfg: RunConfig, config_name: str = "the config", *, quant=None, hw: str | None = None,
                  hw_device: str | None = None, hw_sets=None):
    """The ``wrap`` of ``train``: quantization-aware with spec `quant`, hardware-aware for target
    `hw` (device `hw_device`, else the config's [hw] device, else the target's default; fields:
    the config's [hw] table, then the ``KEY=VALUE`` strings `hw_sets`), else None."""
    if quant and hw:
        raise ConfigError("--quant and --hw are exclusive: --hw crossbar already quantizes to the device levels")
    if quant:
        from ..quant import quant_wrap
        return quant_wrap(quant, task=cfg.data.task)
    if hw:
        from ..targets import available, get, parse_sets
        tgt = get(hw)   # an unknown target: a clear error
        if not tgt.capabilities.hw_training:
            able = [n for n in available() if get(n).capabilities.hw_training]
            raise ConfigError(f"target {hw!r} has no hardware-aware training; use --hw {' or '.join(able)}")
        fields = dict(cfg.extra.get("hw", {}))   # the config's [hw] table, then --hw-device / --hw-set
        device = hw_device or fields.pop("device", None)
        fields.pop("device", None)
        sets = {k: tgt.config_class.convert(k, v, strings=True) for k, v in parse_sets(hw_sets).items()}
        if sets.get("device") is not None:
            device = sets["device"]
        sets.pop("device", None)
        return tgt.hw_wrap(device, {**fields, **sets})
    if "hw" in cfg.extra:
        raise ConfigError(f"{config_name} has an [hw] table: train it with --hw crossbar")
    return None
