"""Training step throughput: edgessm's step against a plain-autograd S4D written the way the
reference S4D example computes it, per preset, on this CPU.

    python benchmarks/bench_train.py [--preset standard,neuromorphic] [--rounds 3] [--iters 4]
                                     [--threads 2] [--batch 64] [--no-bf16] [--unfused] [--record]

Every configuration runs in its own process (so peak memory is its own), the configurations
in turn, round after round, so a drifting machine speed hits them alike: the ratios come from
one run. Compilation is timed apart from the step: the first round starts from an empty
compile cache (cold), later rounds find it filled (cached).

The baseline (``RefS4D``): kernel by the Vandermonde product over all L powers, ``torch.fft.rfft``
with n = 2L under autograd, the D skip, activation, dropout, a 1x1 convolution as mixing (with
GLU for `standard`), then dropout, residual and post-LayerNorm for `standard`, mean pooling;
for `neuromorphic` the same layer with ReLU, Linear mixing, no residual, no norm, last-token
readout (the preset's own architecture in plain autograd).

Also printed: how close the step is to this machine (its matmul FLOPs over the measured peak of
a large fp32 matmul, its bytes moved over the measured copy bandwidth), and the quantization-aware
step of the neuromorphic model as a ratio to its float step.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = {"standard": dict(d_model=128, d_state=64, n_layers=4),
         "neuromorphic": dict(d_model=64, d_state=64, n_layers=4)}
L_SEQ = 784


# ---- the baseline: a plain-autograd S4D as in the reference example -----------------------
def ref_model(preset: str, d_model: int, d_state: int, n_layers: int, dropout: float):
    import torch
    from torch import nn

    class RefS4D(nn.Module):
        """(B, H, L) -> (B, H, L): Vandermonde kernel, autograd FFT convolution, D, act, mixing."""

        def __init__(self, H, N, glu, act):
            super().__init__()
            log_dt = torch.rand(H) * (math.log(0.1) - math.log(0.001)) + math.log(0.001)
            self.log_dt = nn.Parameter(log_dt)
            self.C = nn.Parameter(torch.view_as_real(torch.randn(H, N // 2, dtype=torch.cfloat)))
            self.log_A_real = nn.Parameter(torch.log(0.5 * torch.ones(H, N // 2)))
            self.A_imag = nn.Parameter(math.pi * torch.arange(N // 2).float().repeat(H, 1))
            self.D = nn.Parameter(torch.randn(H))
            self.act = act()
            self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
            self.mix = nn.Conv1d(H, 2 * H if glu else H, 1)
            self.post = nn.GLU(dim=-2) if glu else act()

        def forward(self, u):
            L = u.shape[-1]
            dt = torch.exp(self.log_dt)
            A = -torch.exp(self.log_A_real) + 1j * self.A_imag
            dtA = A * dt.unsqueeze(-1)
            C = torch.view_as_complex(self.C) * (torch.exp(dtA) - 1.0) / A
            K = 2 * torch.einsum("hn,hnl->hl", C, torch.exp(dtA.unsqueeze(-1) * torch.arange(L))).real
            y = torch.fft.irfft(torch.fft.rfft(u, n=2 * L) * torch.fft.rfft(K, n=2 * L), n=2 * L)[..., :L]
            y = y + u * self.D.unsqueeze(-1)
            return self.post(self.mix(self.drop(self.act(y))))

    class RefModel(nn.Module):
        def __init__(self):
            super().__init__()
            std = preset == "standard"
            self.std = std
            self.encoder = nn.Linear(1, d_model)
            self.layers = nn.ModuleList(RefS4D(d_model, d_state, std, nn.GELU if std else nn.ReLU)
                                        for _ in range(n_layers))
            self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in range(n_layers)) if std else None
            self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
            self.decoder = nn.Linear(d_model, 10)

        def forward(self, x):
            x = self.encoder(x).transpose(-1, -2)                 # (B, H, L)
            for i, layer in enumerate(self.layers):
                z = self.drop(layer(x))
                if self.std:
                    x = self.norms[i]((z + x).transpose(-1, -2)).transpose(-1, -2)
                else:
                    x = z
            x = x.mean(-1) if self.std else x[..., -1]
            return self.decoder(x)

    return RefModel()


# ---- one configuration, in a child process ------------------------------------------------
def child(cfg: dict) -> dict:
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    preset, size, batch = cfg["preset"], SIZES[cfg["preset"]], cfg["batch"]
    dropout = 0.1 if preset == "standard" else 0.0
    import edgessm as es
    from edgessm.ssm import fused
    from edgessm.train import accel
    fused.set_enabled(cfg.get("fused", True))
    from edgessm.ssm import fftconv
    if not cfg.get("ducc", True):
        fftconv.FFT = "torch"             # torch.fft: what an install without the [fft] extra runs
    if cfg["impl"] == "baseline":
        model = ref_model(preset, dropout=dropout, **size)
    else:
        model = es.SequenceModel.from_preset(preset, d_input=1, d_output=10, dropout=dropout, **size)
        if cfg["impl"] == "qat":
            from edgessm.quant import qat_wrap
            x_cal = torch.rand(64, L_SEQ, 1)
            model = qat_wrap("loihi2", calibration=x_cal)(model)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    fwd = accel.Compiled(model, enabled=cfg.get("compile", False))
    device = torch.device("cpu")
    x = torch.rand(batch, L_SEQ, 1)
    y = torch.randint(0, 10, (batch,))

    def step():
        with accel.autocast(device, cfg.get("precision", "fp32")):
            loss = F.cross_entropy(fwd(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        fwd.backward_done = True

    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    step()
    times = []
    for _ in range(cfg["iters"]):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    out = {"first_step_s": first, "step_s": statistics.median(times),
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "compiled": fwd.compiled, "compile_error": fwd.error,
           "fft": fftconv.describe() if cfg["impl"] != "baseline" else "torch.fft (autograd)"}
    if cfg.get("count"):
        out.update(count_step(model, opt, x, y))
    return out


def count_step(model, opt, x, y) -> dict:
    """Matmul FLOPs (FlopCounterMode, plus the FFTs at 2.5 n log2 n each) and bytes read and
    written by every operator of one eager step (an upper bound of the memory traffic)."""
    import torch
    import torch.nn.functional as F
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    class Traffic(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.bytes, self.fft_flops = 0, 0.0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            flat = list(args) + list((kwargs or {}).values()) + (list(out) if isinstance(out, (tuple, list)) else [out])
            for t in flat:
                if isinstance(t, torch.Tensor):
                    self.bytes += t.numel() * t.element_size()
            name = str(func)
            if "_fft_r2c" in name or "_fft_c2r" in name:
                real = args[0] if "r2c" in name else out
                n = real.shape[-1]
                self.fft_flops += 2.5 * n * math.log2(max(n, 2)) * real.numel() / n
            return out

    from edgessm.ssm import fftconv
    fc = FlopCounterMode(display=False)
    tr = Traffic()
    enabled, fftconv.ENABLED = fftconv.ENABLED, False   # the fused FFT convolution's C and ducc0
    try:                                                # work is invisible here: count its torch form
        with fc, tr:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
    finally:
        fftconv.ENABLED = enabled
    return {"matmul_flops": fc.get_total_flops(), "fft_flops": tr.fft_flops, "bytes": tr.bytes}


def machine_peaks(threads: int) -> dict:
    """Measured fp32 matmul GFLOP/s (2048^3) and copy bandwidth (GB/s, read + write of 256 MB)."""
    import torch
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    src = torch.randn(64 * 1024 * 1024 // 4 * 4)
    dst = torch.empty_like(src)
    a @ b
    dst.copy_(src)
    mm, cp = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        mm.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        dst.copy_(src)
        cp.append(time.perf_counter() - t0)
    return {"matmul_gflops": 2 * 2048 ** 3 / min(mm) / 1e9,
            "copy_gbs": 2 * src.numel() * 4 / min(cp) / 1e9}


def run_child(cfg: dict, env: dict) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], capture_output=True,
                       text=True, env=env, timeout=3600)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


CONFIGS = [
    ("baseline", dict(impl="baseline"), "plain autograd, as the reference S4D example"),
    ("eager", dict(impl="edgessm", compile=False), "edgessm default: eager fp32"),
    ("eager-torchfft", dict(impl="edgessm", compile=False, ducc=False),
     "edgessm eager fp32, FFTs by torch.fft (an install without the [fft] extra)"),
    ("unfused", dict(impl="edgessm", compile=False, fused=False),
     "edgessm eager fp32, the block tail as torch ops (EDGESSM_FUSED=0)"),
    ("compiled", dict(impl="edgessm", compile=True), "edgessm --compile (torch.compile, fp32)"),
    ("bf16", dict(impl="edgessm", compile=False, precision="bf16-mixed"), "edgessm, eager bf16-mixed"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--preset", default="standard,neuromorphic")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16-mixed configuration")
    ap.add_argument("--unfused", action="store_true",
                    help="also run the eager step with the block tail as torch ops (no fused kernels)")
    ap.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return
    sys.path.insert(0, HERE)
    from common import append_results, emit
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=tempfile.mkdtemp(prefix="edgessm-bench-inductor-"))
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(HERE, "..", "src"), env.get("PYTHONPATH", "")])
    peaks = machine_peaks(a.threads)
    emit({"bench": "machine", **peaks})
    presets = a.preset.split(",")
    try:            # with ducc0 installed, the default step may use it: also time the step without it
        import ducc0  # noqa: F401
        has_ducc = True
    except ImportError:
        has_ducc = False
    emit({"bench": "fft_library", "default": "auto: ducc0 (installed)" if has_ducc else "torch.fft (ducc0 not installed)"})
    plan = []
    for p in presets:
        for name, c, what in CONFIGS:
            if (name == "bf16" and a.no_bf16) or (name == "unfused" and not a.unfused) \
                    or (name == "eager-torchfft" and not has_ducc):
                continue
            plan.append((p, name, what, dict(c, preset=p, threads=a.threads, batch=a.batch, iters=a.iters)))
        if p == "neuromorphic":
            plan.append((p, "qat", "edgessm QAT (loihi2 spec), eager",
                         dict(impl="qat", preset=p, threads=a.threads, batch=a.batch, iters=a.iters)))
    res = {(p, n): [] for p, n, _, _ in plan}
    for r in range(a.rounds):
        for p, name, what, cfg in plan:
            rec = run_child(dict(cfg, count=(r == 0 and name in ("baseline", "eager"))), env)
            emit({"bench": "train_step", "round": r, "preset": p, "config": name, **rec})
            res[(p, name)].append(rec)
    rows = ["| preset | configuration | s/step (median of rounds) | samples/s | vs baseline | "
            "compile s, cold / cached | peak RSS MB |", "|---|---|---|---|---|---|---|"]
    summary = []
    for p, name, what, _ in plan:
        recs = [x for x in res[(p, name)] if "step_s" in x]
        if not recs:
            rows.append(f"| {p} | {what} | failed: {res[(p, name)][0].get('error')} | | | | |")
            continue
        s = statistics.median(x["step_s"] for x in recs)
        base = [x["step_s"] for x in res[(p, "baseline")] if "step_s" in x]
        # per-round ratios (the rounds ran side by side), then their median
        ratios = [b / x["step_s"] for b, x in zip(base, recs)]
        comp = ""
        if name == "compiled":
            comp = " / ".join(f"{max(0.0, x['first_step_s'] - x['step_s']):.0f}" for x in recs[:2])
            if not recs[0].get("compiled"):
                comp = f"failed ({recs[0].get('compile_error')}), ran eagerly"
        if name == "eager":
            what = f"{what}, FFTs by {recs[0].get('fft')}"
        rows.append(f"| {p} | {what} | {s:.3f} | {a.batch / s:.1f} | {statistics.median(ratios):.2f}x | "
                    f"{comp} | {max(x['peak_rss_mb'] for x in recs):.0f} |")
        summary.append({"preset": p, "config": name, "step_s": s, "vs_baseline": statistics.median(ratios)})
    notes = [f"Machine: fp32 matmul peak {peaks['matmul_gflops']:.1f} GFLOP/s (2048^3, {a.threads} threads), "
             f"copy bandwidth {peaks['copy_gbs']:.1f} GB/s (read + write)."]
    for p in presets:
        c = next((x for x in res[(p, "eager")] if "matmul_flops" in x), None)
        d = [x["step_s"] for x in res[(p, "eager")] if "step_s" in x]
        if c and d:
            t_flop = (c["matmul_flops"] + c["fft_flops"]) / (peaks["matmul_gflops"] * 1e9)
            t_byte = c["bytes"] / (peaks["copy_gbs"] * 1e9)
            s = statistics.median(d)
            notes.append(f"{p}: {c['matmul_flops'] / 1e9:.1f} GFLOP of products + {c['fft_flops'] / 1e9:.1f} "
                         f"GFLOP of FFTs per step = {t_flop:.3f} s at the matmul peak ({s / t_flop:.1f}x below "
                         f"it); operators read and write {c['bytes'] / 1e9:.1f} GB = {t_byte:.3f} s at the copy "
                         f"bandwidth (the default eager step takes {s:.3f} s).")
    q = [x["step_s"] for x in res.get(("neuromorphic", "qat"), []) if "step_s" in x]
    f = [x["step_s"] for x in res.get(("neuromorphic", "eager"), []) if "step_s" in x]
    if q and f:
        notes.append(f"Quantization-aware step (loihi2 spec) / float eager step, neuromorphic: "
                     f"{statistics.median(q) / statistics.median(f):.2f}x.")
    for n in notes:
        emit({"bench": "note", "text": n})
    if a.record:
        append_results(f"Training step, batch {a.batch}, L={L_SEQ}, {a.threads} threads: edgessm vs a plain-autograd S4D",
                       rows, "\n".join(notes))


if __name__ == "__main__":
    main()
