"""Hardware-aware (crossbar) training step vs the float step of the same model, side by side.

    python benchmarks/bench_crossbar_step.py [--d-model 32 --d-state 16 --layers 2 --batch 32
        --length 226 --threads 2 --reps 10 --weight-bits 2] [--loop] [--qat] [--dither] [--digital]

One step = forward, cross-entropy, backward, AdamW step, on random inputs. The variants run
interleaved (A, B, A, B, ...) in one process so that a shared machine slows them alike:
  float       the SequenceModel as `edgessm train` runs it
  hw-native   HwSequenceModel (train mode: write noise, converters, quantized weights) with the
              native S4D scan (scan.c)
  hw-loop     the same with the reference Python loop over time (--loop; slow)
  qat         the quantization-aware model of the same float model (loihi2 spec, --qat)
  hw-dither   hw-native with the dithered state rounding (state_dither = 1, --dither)
  hw-digital  the S4D recurrences in the digital periphery (recurrence = "digital", --digital;
              --ssm-bits are then coefficient words), trained by the native scan
  hw-digital-fft  the same trained by FFT convolution (digital_train = "fft")
Prints one JSON object: median ms per step of each and the ratios to float. --profile (with
--threads 1) adds where the hardware-aware step's time goes: the CPU time of the calling thread
in each native kernel and torch-side stage of the crossbar code, and the rest (the network's
torch ops, autograd, the optimizer), in ms per step (mean over --reps steps). --cpu-time (with
--threads 1) times the CPU time of the process instead of the wall clock: on a machine shared
with other jobs it counts only this process's own work.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--d-input", type=int, default=20)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=226)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--weight-bits", type=int, default=2)
    p.add_argument("--ssm-bits", type=int, default=6)
    p.add_argument("--loop", action="store_true", help="also time the reference Python loop")
    p.add_argument("--qat", action="store_true", help="also time the quantization-aware step (loihi2 spec)")
    p.add_argument("--dither", action="store_true", help="also time the step with state_dither = 1")
    p.add_argument("--digital", action="store_true",
                   help="also time a digital recurrence, trained by its scan and by FFT convolution")
    p.add_argument("--cpu-time", action="store_true", help="CPU time of this process, not wall time (--threads 1)")
    p.add_argument("--profile", action="store_true", help="split of the hardware-aware step's time (--threads 1)")
    a = p.parse_args(argv)
    if (a.cpu_time or a.profile) and a.threads != 1:
        p.error("--cpu-time and --profile measure one thread's work: use them with --threads 1")
    clock = time.process_time if a.cpu_time else time.perf_counter
    torch.set_num_threads(a.threads)
    import edgessm as es
    from edgessm.targets.crossbar import HwSequenceModel, load_device
    from edgessm.targets.crossbar.scan import available

    torch.manual_seed(0)
    base = es.SequenceModel.from_preset("neuromorphic", d_input=a.d_input, d_output=a.classes,
                                        d_model=a.d_model, d_state=a.d_state, n_layers=a.layers,
                                        dt_min=0.1, dt_max=1.0)
    x = torch.randn(a.batch, a.length, a.d_input)
    y = torch.randint(0, a.classes, (a.batch,))
    dev = load_device("default", weight_bits=a.weight_bits, ssm_bits=a.ssm_bits)
    models = {"float": base}
    variants = ["hw-native"] + (["hw-loop"] if a.loop else []) + (["hw-dither"] if a.dither else []) \
        + (["hw-digital", "hw-digital-fft"] if a.digital else [])
    digital = dev.replace(recurrence="digital") if a.digital else None
    devs = {"hw-dither": dev.replace(state_dither=1) if a.dither else None, "hw-digital": digital,
            "hw-digital-fft": digital.replace(digital_train="fft") if a.digital else None}
    for v in variants:
        m = HwSequenceModel.from_float(base, devs.get(v) or dev)
        m.calibrate(x)
        m.scan = "loop" if v == "hw-loop" else "native"
        models[v] = m
    if a.qat:
        import copy
        from edgessm.quant import qat_wrap
        models["qat"] = qat_wrap("loihi2", calibration=x)(copy.deepcopy(base))
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}

    def step(k):
        m, o = models[k], opts[k]
        m.train()
        t = clock()
        o.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        o.step()
        return clock() - t

    for k in models:            # warm-up (and the one-off compile of the native scan)
        step(k)
    times = {k: [] for k in models}
    for _ in range(a.reps):
        for k in models:
            times[k].append(step(k))
    ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    split = profile_split(step, a.reps) if a.profile else None
    out = {"bench": "crossbar_train_step", "d_model": a.d_model, "d_state": a.d_state, "layers": a.layers,
           "batch": a.batch, "length": a.length, "threads": a.threads, "reps": a.reps,
           "weight_bits": a.weight_bits, "ssm_bits": a.ssm_bits, "native_available": available()[0],
           "clock": "process cpu" if a.cpu_time else "wall",
           "ms_per_step": {k: round(v, 2) for k, v in ms.items()},
           "ratio_to_float": {k: round(v / ms["float"], 3) for k, v in ms.items() if k != "float"},
           "command": "python benchmarks/bench_crossbar_step.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    if split:
        out["hw_native_split_ms"] = split
    print(json.dumps(out))


def profile_split(step, reps: int) -> dict:
    """CPU ms per hardware-aware step (calling thread) in each stage of the crossbar code: the
    native kernels by their ctypes entry points, the torch-side stages by their functions."""
    import collections
    import edgessm.targets.crossbar.hw as hwm
    import edgessm.targets.crossbar.scan as sc
    acc = collections.Counter()

    def timed(fn, key):
        def g(*args, **kw):
            t = time.thread_time()
            try:
                return fn(*args, **kw)
            finally:
                acc[key] += time.thread_time() - t
        return g

    lib = sc._LIB.get()
    kernels = {"scan forward (C)": "hw_scan_fwd", "scan backward (C)": "hw_scan_bwd",
               "converters forward (C)": "hw_conv_fwd", "converters backward (C)": "hw_conv_bwd",
               "layout copies (C)": ("hw_to_hlb", "hw_to_blh"),
               "converters in the scan's layout changes (C)": ("hw_in_hlb", "hw_out_blh", "hw_gout_hlb", "hw_gin_blh"),
               "range maxima (C)": "hw_amax_abs",
               "write noise sums (C)": "hw_write_noise"}
    saved = []
    for key, names in kernels.items():
        for name in (names if isinstance(names, tuple) else (names,)):
            for suf in ("f32", "f64"):
                f = getattr(lib, f"{name}_{suf}")
                saved.append((lib, f"{name}_{suf}", f))
                setattr(lib, f"{name}_{suf}", timed(f, key))
    torch_side = {"weight quantization (quant_linear)": "quant_linear", "block matrix (block_matrix)": "block_matrix",
                  "block quantization (quant_block)": "quant_block", "write noise (write_noise, all)": "write_noise"}
    for key, name in torch_side.items():
        saved.append((hwm, name, getattr(hwm, name)))
        setattr(hwm, name, timed(getattr(hwm, name), key))
    try:
        t = time.thread_time()
        for _ in range(reps):
            step("hw-native")
        total = (time.thread_time() - t) / reps
    finally:
        for obj, name, f in saved:
            setattr(obj, name, f)
    out = {"total": round(1e3 * total, 2)}
    out.update({k: round(1e3 * v / reps, 2) for k, v in acc.most_common()})
    inner = sum(v for k, v in acc.items() if k != "write noise sums (C)") / reps   # (inside write_noise)
    out["rest (network torch ops, autograd, optimizer, Python)"] = round(1e3 * (total - inner), 2)
    return out


if __name__ == "__main__":
    sys.exit(main())
