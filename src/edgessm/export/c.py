"""``edgessm export-c``: a model as portable C99 for microcontrollers.

    res = export_c(model, "out/", name="smnist", calibration=X)     # writes out/smnist.h, out/smnist.c
    res = export_c(qmodel, "out/", verify=X_test)                   # also compile, run, compare

A float model is quantized first (PTQ through ``targets/fixed/program.py::lower``), a
quantized one is exported as calibrated; the C itself comes from the integer engine's
generator (``targets/fixed/cgen/``, documented there), so the export is bit-exact to the
engine by construction and ``verify`` checks it on real sequences.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from ..quant.intnet import IntNet
from ..targets.fixed.cgen import TARGET, c_identifier, check_name, generate
from ..targets.fixed.verify import as_inputs, find_compiler, verify_c


def default_name(model_arg) -> str:
    """The C name for a model given as a shipped name or checkpoint path: its directory name
    (``runs/smnist/best`` -> ``smnist_best``)."""
    parts = [p for p in Path(str(model_arg)).parts if p not in ("/", ".", "..")]
    if not parts:
        return "model"
    if parts[-1] in ("best", "last", "final") and len(parts) > 1:
        return c_identifier(parts[-2] + "_" + parts[-1])
    return c_identifier(parts[-1])


def check_out_dir(out) -> Path:
    """The output directory must be a directory or not exist yet (it is created)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} exists and is not a directory; give a directory "
                          f"(it is created if missing)")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {str(out)!r}: {str(parent)!r} is a file, not a directory")
            break
    return out


# ---- lowering -----------------------------------------------------------------------------------
def _needs_calibration(model, spec) -> bool:
    from ..quant.model import QuantSequenceModel
    from ..quant.spec import QuantSpec
    if isinstance(model, IntNet):
        return False
    if not isinstance(model, QuantSequenceModel):
        return True
    if spec is None:
        return False
    return not (QuantSpec.load(spec).to_dict() == model.spec.to_dict() and bool(model.calibrated))


def check_runnable(model) -> None:
    """Raise the integer targets' error for a model the integer engine cannot run (LayerNorm,
    GELU, GLU) before any data is loaded."""
    if isinstance(model, IntNet):
        return
    from ..quant.model import unsupported
    from ..targets.fixed.program import lower
    if unsupported(model.config):
        lower(model, None, None, 0, TARGET)     # raises "the C-export target cannot run this model: ..."


def integer_network(model, spec=None, calibration=None, task: str | None = None, n: int = 512) -> IntNet:
    """The IntNet to export: as given, from a quantized model, or after PTQ of a float model
    (``targets/fixed/program.py::lower``; calibration data, or the first `n` training samples
    of `task`)."""
    if isinstance(model, IntNet):
        if spec is not None or calibration is not None:
            raise ConfigError("an IntNet is exported as it is: spec and calibration do not apply")
        return model
    from ..quant.ptq import calibration_data
    from ..targets.fixed.program import lower
    check_runnable(model)
    if calibration is None and task is not None and _needs_calibration(model, spec):
        calibration = calibration_data(task, n)
    return lower(model, spec, calibration, n, TARGET).integer_network()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def export_c(model, out_dir, name: str | None = None, *, spec=None, calibration=None,
             task: str | None = None, calibrate: int = 512, verify=None, min_seconds: float = 0.2,
             source: str = "", mcu: str | None = None, flash_kb: float | None = None,
             ram_kb: float | None = None, trace_tokens: int = 3) -> dict:
    """Write ``out_dir/<name>.h`` and ``out_dir/<name>.c`` for `model`.

    model: a QuantSequenceModel (exported as calibrated), a float SequenceModel (PTQ with
    `spec`, default loihi2, on `calibration` or the first `calibrate` training samples of
    `task`), or an IntNet. verify: test inputs (B, L, d_in): compile, run and compare with
    the integer engine (:func:`verify_c`). Everything is checked before a file is written.

    Returns {"name", "out", "files", "spec", "code_bytes" (bytes of the generated source
    files), "data_bytes" (bytes of the const arrays), "state_bytes" (sizeof the state struct),
    "scratch_bytes" (stack buffers of one step), ...} and, with verify, the figures of
    :func:`verify_c`.

    mcu: a Cortex-M core of ``export/mcu.py`` (``MCUS``: "cortex-m4", "cortex-m0plus",
    "cortex-m7"): cross-compile at -Os and -O2 and report the model's flash, RAM, stack
    (``res["mcu"]``); with verify also run the inputs on the emulated core, compare every
    logit with the integer engine and count instructions and cycles per token (the first
    `trace_tokens` tokens of the first sequence). flash_kb / ram_kb: a budget checked at -Os
    (BudgetError, nothing written). `task` names the token rate of the real-time factor.
    """
    out = check_out_dir(out_dir)
    name = check_name(name if name is not None else "model")
    if calibrate < 1:
        raise ConfigError(f"calibrate must be >= 1, got {calibrate}")
    tc = None
    if mcu is not None:
        from .mcu import check_budget_args, check_mcu, find_toolchain
        check_mcu(mcu)
        check_budget_args(flash_kb, ram_kb)
        tc = find_toolchain(need_qemu=verify is not None)
    elif flash_kb is not None or ram_kb is not None:
        raise ConfigError("a flash / RAM budget needs a target core: give mcu (--mcu)")
    cc = find_compiler() if verify is not None else None
    net = integer_network(model, spec, calibration, task, calibrate)
    Xv = as_inputs(verify, net.d_input) if verify is not None else None
    code = generate(net, name, source)
    mcu_res = None
    if mcu is not None:                         # built and checked before anything is written
        import tempfile

        from ..targets.fixed.verify import engine_reference
        from .mcu import mcu_check
        with tempfile.TemporaryDirectory(prefix="edgessm-mcu-src-") as td:
            (Path(td) / f"{name}.h").write_text(code["h"])
            (Path(td) / f"{name}.c").write_text(code["c"])
            xm = ref = None
            if Xv is not None:
                xm, logits, over = engine_reference(net, Xv)
                ref = (logits, over)
            mcu_res = mcu_check(net, code, Path(td), name, mcu, xm=xm, ref=ref, task=task,
                                flash_kb=flash_kb, ram_kb=ram_kb, trace_tokens=trace_tokens, tc=tc)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / f"{name}.h", out / f"{name}.c"]
    _write_atomic(files[0], code["h"])
    _write_atomic(files[1], code["c"])
    res = {"name": name, "out": str(out), "files": [str(f) for f in files], "spec": net.spec_name,
           "d_input": net.d_input, "d_output": net.d_output, "in_exp": net.in_exp, "in_bits": net.in_bits,
           "out_exp": net.out_exp,
           "code_bytes": sum(len(code[k].encode()) for k in ("h", "c")),
           "data_bytes": code["data_bytes"], "const_arrays": code["const_arrays"],
           "state_bytes": code["state_bytes"], "scratch_bytes": code["scratch_bytes"]}
    if net.compile_overflows:
        res["compile_overflows"] = dict(net.compile_overflows)
    if Xv is not None:
        res.update(verify_c(net, out, name, Xv, cc=cc, min_seconds=min_seconds))
    if mcu_res is not None:
        res["mcu"] = mcu_res
    return res
