"""The report's only door to the targets: every run of a model on a target (``deploy``) and
every compiled program (``compile``, ``evaluate``) the sections use goes through here."""
from __future__ import annotations


def deploy(model, target: str, task: str | None, limit: int | None, **kw) -> dict:
    """The figures of ``edgessm deploy --json``: `model` on the first `limit` test samples of
    `task` on `target` (accuracy, resources, cost per token, engine stats); keywords as the
    library's deploy (spec, calibrate, trials, sets, batch_size, name)."""
    from ..deploy import deploy_dict as run
    return run(model, target, task, limit, **kw)


def compile(model, target: str, spec=None, calibration=None, **fields):
    """`model` compiled for `target` (a program): `fields` are typed values of the target's config
    fields (checked by its config class), `calibration` the inputs of a target that calibrates."""
    from ..targets import get
    return get(target).compile(model, spec, calibration=calibration, **fields)


def evaluate(program, dataset, batch_size: int = 256) -> dict:
    """Accuracy (prediction after the last token) of a compiled program on a dataset."""
    from ..targets import evaluate_program
    return evaluate_program(program, dataset, batch_size=batch_size)
