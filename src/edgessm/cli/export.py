"""``edgessm export-c`` (portable C99 for microcontrollers) and ``edgessm export-onnx``.

    edgessm export-c MODEL --out DIR [--name NAME] [--verify N] [--task T] [--spec SPEC]
                     [--calibrate N] [--mcu CORE [--flash-kb K] [--ram-kb K]] [--json]

MODEL is a checkpoint path or a shipped model's name. A quantized checkpoint is exported as
calibrated; a float one is quantized first (PTQ with --spec, default loihi2, on the first
--calibrate training samples of --task, default the checkpoint's task). --verify N compiles
the export with a test harness, runs the first N test sequences of the task through it and
through the integer engine and compares every token's integer logits.

--mcu cortex-m4 | cortex-m0plus | cortex-m7 also cross-compiles the export for that core
(arm-none-eabi-gcc, -Os and -O2, -mthumb) and reports the model's flash, RAM and stack; with
--verify it runs the test sequences on the emulated core (qemu-system-arm), compares every
logit with the integer engine and counts cycles per token (``export/mcu.py``). --flash-kb /
--ram-kb: a budget the -Os build must fit (else an error naming the largest arrays).

``edgessm export-onnx MODEL --out FILE.onnx [--mode step|sequence] [--verify N]``: a float model as an
ONNX graph, checked with onnxruntime against PyTorch (``export/onnx.py``).

The work is ``export/checkpoint.py``; this module parses and prints.
"""
from __future__ import annotations

from pathlib import Path

from .common import emit


def cmd_export_c(args):
    from ..export.checkpoint import export_checkpoint_c
    res = export_checkpoint_c(args.model, args.out, name=args.name, verify=args.verify, task=args.task,
                              spec=args.spec, calibrate=args.calibrate, mcu=args.mcu, flash_kb=args.flash_kb,
                              ram_kb=args.ram_kb)
    emit(args, res, _text(res))


def cmd_export_onnx(args):
    from ..export.checkpoint import export_checkpoint_onnx
    res = export_checkpoint_onnx(args.model, args.out, args.mode, verify=args.verify, task=args.task)
    text = f"{args.model}: {args.mode} graph written to {res['out']} ({res['bytes'] / 1024:.0f} KiB)"
    if args.verify:
        v = res["verify"]
        text += (f"\nonnxruntime vs PyTorch on {args.verify} {res['task']} test sequences: max |logit difference| "
                 f"{v['max_abs_diff']:.3g}, {v['predictions_differing']} of {v['predictions_compared']} "
                 f"predictions differ")
    emit(args, res, text)


def _text(r: dict) -> str:
    lines = [f"exported {r['model']} (spec {r['spec']}) as {r['name']}: " + ", ".join(r["files"]),
             f"const data {r['data_bytes']} B, state {r['state_bytes']} B per stream, "
             f"step scratch {r['scratch_bytes']} B (stack), source {r['code_bytes']} B"]
    if "verified" in r and r.get("compared"):
        ok = "bit-exact" if r["verified"] else "NOT bit-exact"
        lines.append(f"verified on {r['n']} {r['task']} test sequences: {ok}, {r['mismatches']} of "
                     f"{r['compared']} integer logits differ; overflows C {r['overflows']} / engine "
                     f"{r['overflows_engine']}")
        lines.append(f"C step on this CPU: {r['c_us_per_token']:.2f} us per token "
                     f"({r['compiler']} {r['cflags']}; host .text {r['host_text_bytes']} B)")
    else:
        lines.append("not verified (use --verify N to compile and compare with the integer engine)")
    m = r.get("mcu")
    if m:
        lines.append(f"{m['target']} ({m['compiler']}, {m['cpu_flags']}):")
        for opt, b in m["builds"].items():
            line = (f"  {opt}: flash {b['flash_bytes']} B (text {b['text_bytes']} + rodata {b['rodata_bytes']}), "
                    f"RAM {b['ram_bytes']} B (state {b['state_bytes']} + stack {b['stack_bytes']} + static "
                    f"{b['static_ram_bytes']}); whole test app {b['app_flash_bytes']} B flash")
            if "cycles_per_token" in b:
                line += (f"\n        on {b['board']} ({b['core']}): {b['verified']} of {m['n']} sequences bit-exact, "
                         f"{b['mismatches']} of {b['compared']} logits differ; {b['instructions_per_token']:.0f} "
                         f"instructions = {b['cycles_per_token']:.0f} cycles per token (CPI {b['cpi']:.2f}), "
                         f"{b['us_per_token_at_80MHz']:.0f} us at 80 MHz")
                if "real_time_factor" in b:
                    line += f", real-time factor {b['real_time_factor']:.3f} ({b['headroom']:.1f}x headroom)"
            lines.append(line)
        if m.get("note"):
            lines.append(f"  note: {m['note']}")
    return "\n".join(lines)


def add_export_c(sub) -> None:
    e = sub.add_parser("export-c", help="portable C99 of a quantized model, for microcontrollers")
    e.add_argument("model", help="checkpoint directory or shipped model name")
    e.add_argument("--out", required=True, type=Path, help="output directory (created): NAME.h, NAME.c")
    e.add_argument("--name", help="C identifier prefix (default: from the model's name)")
    e.add_argument("--verify", type=int, metavar="N",
                   help="compile with a test harness, run N test sequences, compare with the integer engine")
    e.add_argument("--task", help="task of the calibration / test data (default: the checkpoint's)")
    e.add_argument("--spec", help="quantization spec (default: the model's, or loihi2 for float models)")
    e.add_argument("--calibrate", type=int, default=512, help="PTQ calibration samples for float models")
    e.add_argument("--mcu", metavar="CORE",
                   help="also cross-compile for a Cortex-M core (cortex-m4, cortex-m0plus, cortex-m7): sizes; "
                        "with --verify, a bit-exact run under emulation and cycles per token")
    e.add_argument("--flash-kb", type=float, help="flash budget of the -Os build (KiB), with --mcu")
    e.add_argument("--ram-kb", type=float, help="RAM budget (state + stack + static, KiB), with --mcu")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_export_c)


def add_export_onnx(sub) -> None:
    e = sub.add_parser("export-onnx", help="a float model as an ONNX graph (onnxruntime and other runtimes)")
    e.add_argument("model", help="checkpoint directory or shipped model name (a float model)")
    e.add_argument("--out", required=True, help="the .onnx file to write")
    e.add_argument("--mode", choices=["step", "sequence"], default="step",
                   help="step: one token, the state (real pairs) in and out; sequence: a whole sequence of "
                        "the task's length")
    e.add_argument("--verify", type=int, metavar="N",
                   help="run N test sequences through onnxruntime and PyTorch and compare the logits "
                        "(needs the onnx extra)")
    e.add_argument("--task", help="task of the test data and sequence length (default: the checkpoint's)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_export_onnx)
