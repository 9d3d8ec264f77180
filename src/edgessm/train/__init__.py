"""Training: configs (TOML -> dataclasses), the loop, evaluation, checkpoints."""
from .config import DataConfig, RunConfig, TrainConfig, from_dict, load_config
from .loop import evaluate, make_optimizer, train

__all__ = ["RunConfig", "DataConfig", "TrainConfig", "load_config", "from_dict", "train",
           "evaluate", "make_optimizer"]
