"""Deploying a checkpoint: checkpoint -> target config -> program -> run and cost.

    from edgessm.deploy import Checkpoint, deploy
    ckpt = Checkpoint.load("smnist-loihi2")
    cfg  = edgessm.targets.get("loihi2").config_class.from_sets(["max_chips=2"])
    run  = deploy(ckpt, "loihi2", cfg, limit=50)        # a DeployRun
    run.accuracy, run.cost.energy_per_token_j, run.to_dict()   # = `edgessm deploy --json`

The pipeline asks a target only what it declares (``Target.capabilities``) and hands it a
typed config (``Target.config_class``); the demo, the benchmarks, the report and the command
line all run it. ``quantize_checkpoint`` is ``edgessm quantize`` (PTQ of a checkpoint).
"""
from .checkpoint import Checkpoint, task_for
from .pipeline import CheckCounts, DeployRun, deploy, deploy_dict, run_program
from .quantize import quantize_checkpoint

__all__ = ["Checkpoint", "task_for", "DeployRun", "CheckCounts", "deploy", "deploy_dict", "run_program",
           "quantize_checkpoint"]
