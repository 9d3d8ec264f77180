"""The ``crossbar`` target: an S4D network programmed into memristor arrays and run token by
token, one analog MVM per array per token.

Mapping. Every matrix of the network is placed on arrays of ``array_rows`` inputs x
``array_cols / 2`` signed outputs (a differential pair of columns per signed weight):
the encoder, each mixing and the decoder are tiled (row tiles give digital partial sums,
each tile with its own ADCs); each S4D layer is one real block matrix per channel, mapping
[w_(k-1); u_k] to [w_k; y_k] (see hw.py), packed block-diagonally, as many channels per
array as fit (a block larger than an array is an error). Cells outside the blocks hold a
zero weight (both devices at G_min) and still see the faults and noise of every device.
With ``recurrence = "digital"`` the S4D blocks run in the digital periphery instead (the
quantized block's nonzero products, the state a ``digital_state_bits`` word, no devices and no
converters), and only the encoder, mixings and decoder are on arrays.

Per device instance (``seed``): write noise (program-and-verify), stuck devices, drift to
``drift_time_s``; per read: read noise; DAC and ADC on every array.

Cost per token (mode "token": a token passes every stage before the next enters):
    crossbar   sum over driven rows of V_i^2 * (sum of the row's conductances) * pulse_time,
               from the voltages of the tokens run (or all rows at read_voltage_v if none)
    DAC / ADC  conversions * fom * 2^bits
    digital    partial-sum adds, bias adds, column-scale multiplies, activations; a digital
               recurrence's products (8 multiplies and 6 adds per complex state and channel)
    latency    sum over stages of (pulse + ADC conversions per ADC * adc_time + digital)
"pipelined": a new token every max-stage time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...errors import ConfigError, InputError
from ...ssm.network import SequenceModel
from ...ssm.validate import check_tensor
from ..base import Cost, Program, Target, register
from ..config import Capabilities
from .device import FIELDS, CrossbarTargetConfig, load_device, program_devices
from . import simlib
from .hw import HwSequenceModel, dither_offsets, hw_wrap
from .scan import available as scan_available, block_scan

_TINY = 1e-12


@dataclass
class CrossbarState:
    """Streaming state of a crossbar program (the analog family): per S4D layer ``w`` (B, H, N)
    float32, the normalized block state each channel feeds back into its array (digital: the
    DAC'd value; analog: held in [-1, 1]); ``t`` tokens seen; ``sum`` (B, H) the running sum
    of the last block's output for a mean readout, else None. Treat as immutable: ``step``
    returns a new CrossbarState."""
    w: list
    t: int = 0
    sum: torch.Tensor | None = None

    @property
    def batch(self) -> int:
        return self.w[0].shape[0]


def _conv(v: torch.Tensor, fs, bits: int, mask=None) -> tuple[torch.Tensor, int]:
    """Signed converter, round half up (as the training quantizer); saturations counted in mask."""
    q = (1 << (bits - 1)) - 1
    over = v.abs() > fs
    sat = int((over & mask).sum()) if mask is not None else int(over.sum())
    return torch.floor(torch.clamp(v / fs, -1, 1) * q + 0.5) / q * fs, sat


class Stage:
    """One matrix kind on its arrays: targets q (A, R, Cs), index maps, ADC full scales."""

    def __init__(self, name: str, kind: str, q: torch.Tensor, in_idx, out_idx, fs, n_in: int, n_out: int):
        self.name, self.kind = name, kind
        self.q_target, self.in_idx, self.out_idx, self.fs = q, in_idx, out_idx, fs
        self.n_in, self.n_out = n_in, n_out
        self.arrays = q.shape[0]
        self.rows_used = int((in_idx >= 0).sum())
        self.cols_used = int((out_idx >= 0).sum())
        self.mapped = int(((in_idx >= 0).unsqueeze(-1) & (out_idx >= 0).unsqueeze(1)).sum()) \
            if kind == "linear" else None
        self.nonzero = int((q != 0).sum())
        self.row_tiles = 1

    def program(self, cfg, gen: torch.Generator, verify_gen: torch.Generator | None = None):
        """Conductances (S) of this device instance: G+ and G- (k, A, R, Cs) for the
        ``devices_per_weight`` = k pairs of every signed weight, after write noise (and the
        write-verify loop, its retries drawn from `verify_gen`), faults and drift; q_eff (the
        mean of the k pairs), its read-noise variance and the row conductance sums. Counts the
        programmings per device (``program_attempts``) and the devices left outside the
        write-verify band (``verify_unconverged``)."""
        win = cfg.g_max_us - cfg.g_min_us
        q = self.q_target.double()
        gp0 = cfg.g_min_us + q.clamp(min=0) * win
        gm0 = cfg.g_min_us - q.clamp(max=0) * win
        k = cfg.devices_per_weight
        self.program_attempts, self.verify_unconverged = 2 * k * gp0.numel(), 0
        self.stuck_compensated = 0
        verify = cfg.noise and cfg.verify_tolerance_us > 0
        if cfg.noise:
            wn = cfg.write_noise_arrays in ("all", self.kind if self.kind == "s4d" else "linear")
            self.program_attempts = 0

            def prog(g):
                """(G before drift, stuck mask, drift factor) of devices with targets g; the
                instance's draws in a fixed order (error, fault, drift exponent)."""
                g0 = g
                e = torch.randn(g.shape, generator=gen, dtype=g.dtype)   # drawn always: same instance
                if wn:
                    g, att, ok = program_devices(g, cfg, e, verify_gen)
                else:
                    att, ok = torch.ones_like(g, dtype=torch.int32), torch.ones_like(g, dtype=torch.bool)
                g = g.clamp(0.0, 1.5 * cfg.g_max_us)
                u = torch.rand(g.shape, generator=gen, dtype=g.dtype)
                on = u < cfg.stuck_on_frac
                off = (u >= cfg.stuck_on_frac) & (u < cfg.stuck_on_frac + cfg.stuck_off_frac)
                g = torch.where(on, torch.full_like(g, cfg.g_max_us), g)
                g = torch.where(off, torch.full_like(g, cfg.g_min_us), g)
                if verify:   # a stuck device never passes the verify unless stuck at its target
                    stuck_bad = (on | off) & ((g - g0).abs() > cfg.verify_tolerance_us)
                    att = torch.where(stuck_bad, torch.full_like(att, cfg.verify_max_attempts), att)
                    ok = ok & ~stuck_bad
                self.program_attempts += int(att.sum())
                self.verify_unconverged += int((~ok).sum()) if verify else 0
                drift = None
                if cfg.drift_time_s != cfg.drift_t0_s and (cfg.drift_nu > 0 or cfg.drift_nu_std > 0):
                    nu = (cfg.drift_nu + cfg.drift_nu_std * torch.randn(g.shape, generator=gen,
                                                                         dtype=g.dtype)).clamp(min=0)
                    drift = (cfg.drift_time_s / cfg.drift_t0_s) ** (-nu)
                return g, on | off, drift

            def partner(g, g_stuck, stuck, own_stuck, sign):
                """Re-target the working partner of a stuck device so the pair's difference is
                the weight's (clipped to the window), programmed with the same write-verify."""
                fix = stuck & ~own_stuck
                if not bool(fix.any()):
                    return g
                tgt = (g_stuck + sign * q * win).clamp(cfg.g_min_us, cfg.g_max_us)
                e = torch.randn(g.shape, generator=verify_gen, dtype=g.dtype)
                gn, att, ok = program_devices(tgt, cfg, e, verify_gen) if wn else (tgt, torch.ones_like(
                    g, dtype=torch.int32), torch.ones_like(g, dtype=torch.bool))
                self.program_attempts += int(att[fix].sum())
                self.stuck_compensated += int(fix.sum())
                return torch.where(fix, gn.clamp(0.0, 1.5 * cfg.g_max_us), g)

            gps, gms = [], []
            self.stuck_compensated = 0
            for _ in range(k):
                gp, sp, dp = prog(gp0)
                gm, sm, dm = prog(gm0)
                if verify and cfg.stuck_compensation:
                    # G+ - G- = q win: a stuck G+ sets G- = G+ - q win, a stuck G- sets G+ = G- + q win
                    gm_new = partner(gm, gp, sp, sm, -1.0)
                    gp = partner(gp, gm, sm, sp, +1.0)
                    gm = gm_new
                gps.append(gp if dp is None else gp * dp)
                gms.append(gm if dm is None else gm * dm)
            gp, gm = torch.stack(gps), torch.stack(gms)
        else:
            gp, gm = gp0.expand(k, *gp0.shape), gm0.expand(k, *gm0.shape)
        comp = 1.0
        if cfg.noise and cfg.drift_compensation:
            comp = (cfg.drift_time_s / cfg.drift_t0_s) ** cfg.drift_nu
        self.g_plus_s, self.g_minus_s = gp * 1e-6, gm * 1e-6
        self.q_eff = ((gp - gm).mean(0) / win * comp).float()
        self.read_var = ((cfg.read_noise_rel ** 2) * (gp ** 2 + gm ** 2).sum(0) / (k * win) ** 2
                         * comp ** 2).float() if cfg.noise else None
        # full physical row: every signed column is 2k devices; unused cells sit at G_min
        self.row_g_s = (self.g_plus_s + self.g_minus_s).sum((0, -1)).float()     # (A, R)

    def compact(self, analog_cols=None):
        """The used rows and columns of every array as dense (A, Ru, Cu) blocks, for
        :meth:`mvm_compact`: unused rows are never driven and unused columns never read, so
        leaving them out changes no output (only the order of the read-noise draws)."""
        A = self.arrays
        rows = [torch.nonzero(self.in_idx[a] >= 0).flatten() for a in range(A)]
        cols = [torch.nonzero(self.out_idx[a] >= 0).flatten() for a in range(A)]
        Ru, Cu = max(1, max(len(r) for r in rows)), max(1, max(len(c) for c in cols))
        Cu = -(-Cu // 8) * 8                 # whole SIMD vectors of columns (the padding is never read)
        ri = torch.zeros(A, Ru, dtype=torch.long)
        ci = torch.zeros(A, Cu, dtype=torch.long)
        rok = torch.zeros(A, Ru, dtype=torch.bool)
        cok = torch.zeros(A, Cu, dtype=torch.bool)
        for a in range(A):
            ri[a, :len(rows[a])], rok[a, :len(rows[a])] = rows[a], True
            ci[a, :len(cols[a])], cok[a, :len(cols[a])] = cols[a], True
        ar = torch.arange(A).view(A, 1, 1)
        self.c_q = self.q_eff[ar, ri.unsqueeze(-1), ci.unsqueeze(1)] * (rok.unsqueeze(-1) & cok.unsqueeze(1))
        self.c_var = None if self.read_var is None else \
            self.read_var[ar, ri.unsqueeze(-1), ci.unsqueeze(1)] * (rok.unsqueeze(-1) & cok.unsqueeze(1))
        self.c_in = torch.where(rok, torch.gather(self.in_idx, 1, ri), self.n_in)          # (A, Ru)
        self.c_out = torch.where(cok, torch.gather(self.out_idx, 1, ci), self.n_out)      # (A, Cu)
        self.c_fs = torch.gather(self.fs, 1, ci)
        self.c_rowg = torch.gather(self.row_g_s, 1, ri) * rok
        conv = cok.clone()
        if analog_cols is not None:
            conv &= ~torch.gather(analog_cols, 1, ci)
        self.c_conv = conv
        self.c_rows, self.c_cols = rok, cok

    def mvm_compact(self, v: torch.Tensor, gen, cfg, stats: dict) -> torch.Tensor:
        """:meth:`mvm` on the compact blocks (call :meth:`compact` first): v (B, n_in) ->
        (B, n_out). The same arithmetic per used cell; read noise drawn for used columns only."""
        B = v.shape[0]
        vz = torch.cat([v, v.new_zeros(B, 1)], 1)
        V = vz[:, self.c_in].transpose(0, 1)                                      # (A, B, Ru)
        n = torch.bmm(V, self.c_q)                                                # (A, B, Cu)
        if self.c_var is not None and cfg.read_noise_rel > 0:
            sd = torch.bmm(V * V, self.c_var).clamp(min=0).sqrt()
            n = n + sd * torch.randn(n.shape, generator=gen)
        conv = self.c_conv.unsqueeze(1)
        nq, sat = _conv(n, self.c_fs.unsqueeze(1), cfg.adc_bits, conv)
        n = torch.where(conv, nq, n)
        stats["adc_saturations"] += int(sat)
        stats["crossbar_energy_j"] += float(torch.einsum("abr,ar->", V * V, self.c_rowg)) \
            * cfg.read_voltage_v ** 2 * cfg.pulse_time_s
        out = n.new_zeros(B, self.n_out + 1)
        out.index_add_(1, self.c_out.reshape(-1), n.transpose(0, 1).reshape(B, -1))
        return out[:, :self.n_out]

    def mvm(self, v: torch.Tensor, gen, cfg, stats: dict, analog_cols=None) -> torch.Tensor:
        """v (B, n_in) DAC-scaled inputs in [-1, 1] -> normalized column outputs (B, n_out)."""
        B = v.shape[0]
        vz = torch.cat([v, v.new_zeros(B, 1)], 1)
        idx = torch.where(self.in_idx >= 0, self.in_idx, self.n_in)            # (A, R)
        V = vz[:, idx]                                                          # (B, A, R)
        n = torch.einsum("bar,arc->bac", V, self.q_eff)
        if self.read_var is not None and cfg.read_noise_rel > 0:
            sd = torch.einsum("bar,arc->bac", V * V, self.read_var).clamp(min=0).sqrt()
            n = n + sd * torch.randn(n.shape, generator=gen)
        conv = self.out_idx >= 0
        if analog_cols is not None:
            conv = conv & ~analog_cols
        nq, sat = _conv(n, self.fs, cfg.adc_bits, conv.unsqueeze(0))
        n = torch.where(conv.unsqueeze(0), nq, n)
        stats["adc_saturations"] += int(sat)
        e = float((V * V * self.row_g_s.unsqueeze(0)).sum()) * cfg.read_voltage_v ** 2 * cfg.pulse_time_s
        stats["crossbar_energy_j"] += e
        out = n.new_zeros(B, self.n_out + 1)
        oidx = torch.where(self.out_idx >= 0, self.out_idx, self.n_out).reshape(-1)
        out.index_add_(1, oidx, n.reshape(B, -1))
        return out[:, :self.n_out]


def _linear_stage(name: str, q: torch.Tensor, fs_logical: torch.Tensor, scale: torch.Tensor, cfg) -> Stage:
    """Tile q (M out, K in) over arrays; ADC full scale per tile column from the logical one."""
    M, K = q.shape
    R, Cs = cfg.array_rows, cfg.signed_cols
    rt, ct = math.ceil(K / R), math.ceil(M / Cs)
    A = rt * ct
    Q = torch.zeros(A, R, Cs)
    ii = torch.full((A, R), -1, dtype=torch.long)
    oi = torch.full((A, Cs), -1, dtype=torch.long)
    fs = torch.ones(A, Cs)
    a = 0
    for r in range(rt):
        for c in range(ct):
            rows = torch.arange(r * R, min(K, (r + 1) * R))
            cols = torch.arange(c * Cs, min(M, (c + 1) * Cs))
            Q[a, :len(rows), :len(cols)] = q[cols][:, rows].T
            ii[a, :len(rows)] = rows
            oi[a, :len(cols)] = cols
            fs[a, :len(cols)] = (fs_logical[cols] / scale[cols]).clamp(min=_TINY)
            a += 1
    st = Stage(name, "linear", Q, ii, oi, fs, K, M)
    st.row_tiles = rt
    return st


def _block_stage(name: str, q: torch.Tensor, fs_logical: torch.Tensor, scale: torch.Tensor, cfg) -> Stage:
    """Pack the per-channel blocks q (H, K, K) (out, in) block-diagonally into arrays."""
    H, K, _ = q.shape
    R, Cs = cfg.array_rows, cfg.signed_cols
    if K > R or K > Cs:
        red = f", {cfg.devices_per_weight} pairs per weight" if cfg.devices_per_weight > 1 else ""
        raise ConfigError(f"{name}: one channel's S4D block is {K} x {K} (d_state {K - 1} + 1), but an "
                          f"array has {R} rows and {Cs} signed columns ({cfg.array_cols} physical{red}); use "
                          f"--set array_rows=N array_cols=M with N >= {K} and M >= {2 * K}, or a smaller d_state")
    per = min(R // K, Cs // K)
    A = math.ceil(H / per)
    Q = torch.zeros(A, R, Cs)
    ii = torch.full((A, R), -1, dtype=torch.long)
    oi = torch.full((A, Cs), -1, dtype=torch.long)
    fs = torch.ones(A, Cs)
    for h in range(H):
        a, k = divmod(h, per)
        sl = slice(k * K, (k + 1) * K)
        Q[a, sl, sl] = q[h].T
        ii[a, sl] = torch.arange(h * K, (h + 1) * K)
        oi[a, sl] = torch.arange(h * K, (h + 1) * K)
        fs[a, sl] = (fs_logical[h] / scale[h]).clamp(min=_TINY)
    st = Stage(name, "s4d", Q, ii, oi, fs, H * K, H * K)
    st.mapped = H * K * K
    st.channels_per_array = per
    return st


class CrossbarProgram(Program):
    target = "crossbar"

    def __init__(self, hwm: HwSequenceModel, cfg):
        self.model, self.config = hwm, cfg
        c = hwm.config
        self.d_input, self.d_output = c.d_input, c.d_output
        self.gen = torch.Generator().manual_seed(int(cfg.seed))
        # the write-verify retries draw from their own stream, so the base programming error,
        # the stuck devices and the drift of an instance do not depend on the band
        self.verify_gen = torch.Generator().manual_seed((int(cfg.seed) * 1000003 + 7) & ((1 << 63) - 1))
        self.engine = "c"          # run(): "c" (sim.c) or "torch" (the same on torch ops)
        self._rows: dict[str, int] = {}
        self.stages: dict[str, Stage] = {}
        self.scales: dict[str, torch.Tensor] = {}
        self.digital: dict[str, torch.Tensor] = {}   # S4D blocks in the periphery: (H, K, K) q * scale
        with torch.no_grad():
            self._lower()
        for st in self.stages.values():
            st.program(cfg, self.gen, self.verify_gen)
        self.reset_stats()

    # ---- lowering ----------------------------------------------------------------------------
    def _lower(self):
        m, cfg = self.model, self.config
        lin = [("encoder", m.encoder, m.fs_enc)] + \
              [(f"mixing{i}", b.mix, m.fs_mix[i]) for i, b in enumerate(m.blocks)] + \
              [("decoder", m.decoder, m.fs_dec)]
        for name, l, fsl in lin:
            q, s = m.qlinear(l)
            self.stages[name] = _linear_stage(name, q.detach(), fsl, s.detach(), cfg)
            self.scales[name] = s.detach()
        for i in range(len(m.blocks)):
            q, s = m.qblock(i)
            if cfg.recurrence == "digital":           # the same product as the hw model's
                self.digital[f"s4d{i}"] = (q * s.unsqueeze(-1)).detach()
                continue
            self.stages[f"s4d{i}"] = _block_stage(f"s4d{i}", q.detach(), m.fs_s4d[i], s.detach(), cfg)
            self.scales[f"s4d{i}"] = s.detach()

    def order(self) -> list[str]:
        n = len(self.model.blocks)
        return ["encoder"] + [x for i in range(n) for x in (f"s4d{i}", f"mixing{i}")] + ["decoder"]

    # ---- execution ---------------------------------------------------------------------------
    def _dac(self, x, r, offset=0.5, bits=None):
        """:func:`_conv` of x / r at full scale 1 (the same arithmetic), saturations not counted;
        offset: the rounding's 1/2, or the state's dither offsets (``hw.dither_offsets``);
        bits: the DAC's (default) or another word width (a digital recurrence's state)."""
        q = (1 << ((bits or self.config.dac_bits) - 1)) - 1
        return (x / r).clamp_(-1, 1).mul_(q).add_(offset).floor_().div_(q)

    def _state_cols(self, st):
        """(A, C) True at the array columns that compute a state (not the output column) of an
        S4D stage when the state skips the column ADC (analog state, or dithered rounding at the
        DAC), else None."""
        if self.config.state_mode != "analog" and not self.config.state_dither:
            return None
        K = st.n_in // self.model.config.d_model
        flat = (torch.arange(st.n_in) % K) != K - 1
        return torch.where(st.out_idx >= 0, flat[st.out_idx.clamp(min=0)],
                           torch.zeros_like(st.out_idx, dtype=torch.bool))

    def _linear(self, name: str, x: torch.Tensor, r, lin) -> torch.Tensor:
        n = self.stages[name].mvm(self._dac(x, r), self.gen, self.config, self._stats)
        y = n * self.scales[name] * r
        return y + lin.bias if lin.bias is not None else y

    def _s4d_digital(self, i: int, u: torch.Tensor, w: torch.Tensor, dith=None):
        """One token of a digital recurrence: u (B, H) -> (y (B, H), new state (B, H, N))."""
        r = self.model.r_s4d[i]
        inp = torch.cat([w, (u / r).unsqueeze(-1)], -1)                       # (B, H, K)
        n = torch.einsum("bhi,hoi->bho", inp, self.digital[f"s4d{i}"])
        w_new = self._dac(n[..., :-1], 1.0, 0.5 if dith is None else dith, bits=self.config.digital_state_bits)
        return n[..., -1] * r, w_new

    def _s4d(self, i: int, u: torch.Tensor, w: torch.Tensor, t: int = 0):
        if self.config.recurrence == "digital":
            H, n2 = w.shape[1], w.shape[2]
            return self._s4d_digital(i, u, w, dither_offsets(i, H, n2, t, 1)[0] if self.config.state_dither
                                     else None)
        cfg, st = self.config, self.stages[f"s4d{i}"]
        r = self.model.r_s4d[i]
        B, H = u.shape
        K = w.shape[-1] + 1
        vin = torch.cat([w, self._dac(u, r).unsqueeze(-1)], -1).reshape(B, H * K)
        n = st.mvm(vin, self.gen, cfg, self._stats, analog_cols=self._state_cols(st)).reshape(B, H, K)
        out = n * self.scales[f"s4d{i}"]
        w_new = out[..., :-1]
        if cfg.state_mode == "digital":
            w_new = self._dac(w_new, 1.0, dither_offsets(i, H, K - 1, t, 1)[0] if cfg.state_dither else 0.5)
        else:
            w_new = w_new.clamp(-1.0, 1.0)
        return out[..., -1] * r, w_new

    # ---- whole sequences, layer by layer ---------------------------------------------------------
    def _compact(self):
        if getattr(self, "_compacted", False):
            return
        for name, st in self.stages.items():
            st.compact(self._state_cols(st) if st.kind == "s4d" else None)
        self._compacted = True

    def _native(self) -> bool:
        if self.engine != "c":
            return False
        ok, _why = simlib.available()
        if not ok:
            simlib.warn_fallback()
        return ok

    def _stream(self, name: str, rows: int) -> tuple[int, int]:
        """(seed, first stream) of the read-noise generator for `rows` rows of a stage: every
        row of every call its own stream, all drawn from the device instance's seed."""
        idx = self.order().index(name)
        seed = (int(self.config.seed) * 1000003 + idx * 7919 + 12345) & ((1 << 63) - 1)
        row0 = self._rows.get(name, 0)
        self._rows[name] = row0 + rows
        return seed, row0

    def _linear_seq(self, name, x, r, lin, chunk=65536):
        """A linear stage on every token at once: x (..., n_in)."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        st = self.stages[name]
        if self._native():
            seed, row0 = self._stream(name, x.shape[0])
            y, sat, e = simlib.run_stage(st, self.config, self._dac(x, r), seed, row0)
            self._stats["adc_saturations"] += sat
            self._stats["crossbar_energy_j"] += e * self.config.read_voltage_v ** 2 * self.config.pulse_time_s
            outs = [y]
        else:
            outs = [st.mvm_compact(self._dac(x[s:s + chunk], r), self.gen, self.config, self._stats)
                    for s in range(0, x.shape[0], chunk)]
        y = (outs[0] if len(outs) == 1 else torch.cat(outs, 0)) * self.scales[name] * r
        if lin.bias is not None:
            y = y + lin.bias
        return y.reshape(*shape[:-1], y.shape[-1])

    def _s4d_seq(self, i: int, u: torch.Tensor) -> torch.Tensor:
        """An S4D stage over the whole sequence (B, L, H): one MVM per token, as step()."""
        if self.config.recurrence == "digital":
            return self._s4d_digital_seq(i, u)
        cfg, st = self.config, self.stages[f"s4d{i}"]
        r = self.model.r_s4d[i]
        B, L, H = u.shape
        K = self.model.config.d_state + 1
        vu = self._dac(u, r)                                            # (B, L, H)
        sc = self.scales[f"s4d{i}"]
        dith = dither_offsets(i, H, K - 1, 0, L) if cfg.state_dither else None
        if self._native():
            seed, row0 = self._stream(f"s4d{i}", B)
            y, sat, e = simlib.run_s4d(st, cfg, vu, sc, K, seed, row0, dither=dith)
            self._stats["adc_saturations"] += sat
            self._stats["crossbar_energy_j"] += e * cfg.read_voltage_v ** 2 * cfg.pulse_time_s
            return y * r
        w = u.new_zeros(B, H, K - 1)
        ys = u.new_empty(B, L, H)
        for t in range(L):
            vin = torch.cat([w, vu[:, t].unsqueeze(-1)], -1).reshape(B, H * K)
            out = st.mvm_compact(vin, self.gen, cfg, self._stats).reshape(B, H, K) * sc
            w = out[..., :-1]
            if cfg.state_mode == "digital":
                w = self._dac(w, 1.0, dith[t] if dith is not None else 0.5)
            else:
                w = w.clamp(-1.0, 1.0)
            ys[:, t] = out[..., -1]
        return ys * r

    def _s4d_digital_seq(self, i: int, u: torch.Tensor) -> torch.Tensor:
        """A digital recurrence over the whole sequence: the hw model's native scan (scan.c,
        the training forward's bits) with the C engine, else step()'s token loop."""
        cfg, M = self.config, self.digital[f"s4d{i}"]
        B, L, H = u.shape
        n2 = M.shape[-1] - 1
        r = self.model.r_s4d[i]
        dith = dither_offsets(i, H, n2, 0, L) if cfg.state_dither else None
        if self._native() and scan_available()[0]:
            d = None if dith is None else dith.transpose(0, 1).contiguous()
            y, _ = block_scan(M, (u / r).contiguous(), torch.ones(H, n2), None, cfg.digital_state_bits,
                              pairs=True, dither=d, sparse=True)
            return y * r
        w = u.new_zeros(B, H, n2)
        ys = u.new_empty(B, L, H)
        for t in range(L):
            ys[:, t], w = self._s4d_digital(i, u[:, t], w, None if dith is None else dith[t])
        return ys

    @torch.no_grad()
    def run(self, X: torch.Tensor) -> torch.Tensor:
        """(B, L, d_in) -> (B, L, d_out), the prediction after every token: the same network
        as :meth:`step` token by token, evaluated layer by layer (the stateless stages on all
        tokens at once, each S4D stage one MVM per token) on the used cells of each array.
        Only the order of the read-noise draws differs from the token-by-token loop."""
        check_tensor(X, ndim=3, last=self.d_input, name="X", what="(batch, length, d_input)")
        self._compact()
        m = self.model
        X = X.float()
        B, L, _ = X.shape
        h = self._linear_seq("encoder", X, m.r_enc, m.encoder)
        for i, b in enumerate(m.blocks):
            z = b._norm(h) if b.prenorm else h
            h = self._block_tail(i, b, self._s4d_seq(i, z), h, self._linear_seq)
        if m.config.readout == "mean":
            h = h.cumsum(1) / torch.arange(1, L + 1, dtype=h.dtype).view(1, -1, 1)
        out = self._linear_seq("decoder", h, m.r_dec, m.decoder)
        self._stats["stream_tokens"] += B * L
        return out

    def _block_tail(self, i, b, y, h, linear):
        """activation -> mixing on its arrays (`linear`: per token or per sequence) -> GLU or
        activation -> residual -> post-norm, for block i with S4D output y and block input h."""
        z = linear(f"mixing{i}", b.act(y), self.model.r_mix[i], b.mix)
        z = F.glu(z, dim=-1) if b.mixing == "glu" else b.act(z)
        if b.residual:
            z = z + h
        if not b.prenorm:
            z = b._norm(z)
        return z

    def run_tokens(self, X: torch.Tensor) -> torch.Tensor:
        """The token-by-token reference of :meth:`run` (step() over the sequence)."""
        return super().run(X)

    def init_state(self, batch: int = 1) -> CrossbarState:
        if not isinstance(batch, int) or batch < 1:
            raise InputError(f"batch must be a positive integer, got {batch!r}")
        c = self.model.config
        return CrossbarState([torch.zeros(batch, c.d_model, c.d_state) for _ in range(c.n_layers)], 0, None)

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, state: CrossbarState):
        check_tensor(x_t, ndim=2, last=self.d_input, name="x_t", what="(batch, d_input)")
        if not isinstance(state, CrossbarState) or len(state.w) != len(self.model.blocks) \
                or state.batch != x_t.shape[0]:
            raise InputError(f"state does not belong to this program and batch {x_t.shape[0]}; "
                             f"create it with init_state({x_t.shape[0]})")
        m = self.model
        x_t = x_t.float()
        h = self._linear("encoder", x_t, m.r_enc, m.encoder)
        new = []
        for i, b in enumerate(m.blocks):
            z = b._norm(h) if b.prenorm else h
            y, w = self._s4d(i, z, state.w[i], state.t)
            new.append(w)
            h = self._block_tail(i, b, y, h, self._linear)
        t = state.t + 1
        total = None
        if m.config.readout == "mean":
            total = h if state.sum is None else state.sum + h
            h = total / t
        out = self._linear("decoder", h, m.r_dec, m.decoder)
        self._stats["stream_tokens"] += x_t.shape[0]
        return out, CrossbarState(new, t, total)

    # ---- resources and cost -----------------------------------------------------------------------
    def resources(self) -> dict:
        cfg = self.config
        cells = cfg.array_rows * cfg.signed_cols
        per = {}
        for name in self.order():
            if name in self.digital:
                per[name] = {"arrays": 0, "digital": True, **self._digital_work(name)}
                continue
            st = self.stages[name]
            per[name] = {"arrays": st.arrays, "rows_used": st.rows_used, "cols_used": st.cols_used,
                         "utilization": st.mapped / (st.arrays * cells),
                         "nonzero_weights": st.nonzero}
            if st.kind == "s4d":
                per[name]["channels_per_array"] = st.channels_per_array
            else:
                per[name]["row_tiles"] = st.row_tiles
        arrays = sum(s.arrays for s in self.stages.values())
        mapped = sum(s.mapped for s in self.stages.values())
        devices = arrays * cfg.array_rows * cfg.array_cols
        # programmings of the used columns' devices (2 k per signed column) as counted by the
        # instance; the physical columns left over when array_cols is not a multiple of 2 k are
        # programmed once to G_min
        attempts = sum(s.program_attempts for s in self.stages.values())
        spare = arrays * cfg.array_rows * (cfg.array_cols - 2 * cfg.devices_per_weight * cfg.signed_cols)
        pulses = (attempts + spare) * cfg.program_verify_iterations
        return {"arrays": arrays, "array": f"{cfg.array_rows}x{cfg.array_cols}",
                "devices": devices, "utilization": mapped / (arrays * cells),
                "nonzero_weights": sum(s.nonzero for s in self.stages.values()),
                "stages": per,
                "programming_energy_j": pulses * cfg.program_pulse_energy_j,
                "programming_pulses": pulses, "devices_per_weight": cfg.devices_per_weight,
                "verify_tolerance_us": cfg.verify_tolerance_us,
                "verify_unconverged": sum(s.verify_unconverged for s in self.stages.values()),
                "stuck_compensated": sum(s.stuck_compensated for s in self.stages.values()),
                "state_mode": cfg.state_mode, "recurrence": cfg.recurrence,
                "weight_bits": cfg.weight_bits, "ssm_bits": cfg.ssm_bits}

    def _digital_work(self, name: str) -> dict:
        """Per token, a digital recurrence: per complex state 6 multiplies and 4 adds for the
        new state (Re, Im), 2 and 2 for its share of the output; per channel the input's and
        the output's gain, d u and the output's add."""
        M = self.digital[name]
        H, n = M.shape[0], (M.shape[-1] - 1) // 2
        mults, adds = H * (8 * n + 3), H * (6 * n + 1)
        cfg = self.config
        t = math.ceil((adds + mults) / cfg.digital_lanes) * cfg.digital_op_time_s
        return {"adc": 0, "dac": 0, "adds": adds, "mults": mults, "time_s": t}

    def _stage_work(self, st: Stage) -> dict:
        cfg = self.config
        analog = cfg.state_mode == "analog" and st.kind == "s4d"
        K = st.n_in // self.model.config.d_model if st.kind == "s4d" else None
        adc = st.cols_used - (self.model.config.d_model * (K - 1) if analog else 0)
        dac = st.rows_used - (self.model.config.d_model * (K - 1) if analog else 0)
        outs = st.n_out
        adds = outs * (st.row_tiles - 1) + outs            # partial sums + bias / residual
        mults = 2 * outs                                   # column scale, range gain
        t = (cfg.pulse_time_s + cfg.adc_share * cfg.adc_time_s
             + math.ceil((adds + mults) / st.arrays / cfg.digital_lanes) * cfg.digital_op_time_s)
        return {"adc": adc, "dac": dac, "adds": adds, "mults": mults, "time_s": t}

    def cost(self, tokens: int = 1, mode: str = "token") -> Cost:
        if mode not in ("token", "pipelined"):
            raise ConfigError(f"unknown cost mode {mode!r}; use 'token' or 'pipelined'")
        cfg = self.config
        st = self._stats
        if st["stream_tokens"] > 0:
            e_x = st["crossbar_energy_j"] / st["stream_tokens"]
            src = f"measured voltages over {st['stream_tokens']} stream tokens"
        else:
            e_x = sum(float(s.row_g_s[s.in_idx >= 0].sum())
                      for s in self.stages.values()) * cfg.read_voltage_v ** 2 * cfg.pulse_time_s
            src = "worst case: every used row at read_voltage_v (nothing run yet)"
        works = {n: self._digital_work(n) if n in self.digital else self._stage_work(self.stages[n])
                 for n in self.order()}
        adc = sum(w["adc"] for w in works.values())
        dac = sum(w["dac"] for w in works.values())
        e_adc = adc * cfg.adc_fom_j * 2 ** cfg.adc_bits
        e_dac = dac * cfg.dac_fom_j * 2 ** cfg.dac_bits
        e_dig = sum(w["adds"] for w in works.values()) * cfg.digital_add_j + \
            sum(w["mults"] for w in works.values()) * cfg.digital_mult_j
        energy = e_x + e_adc + e_dac + e_dig
        latency = sum(w["time_s"] for w in works.values())
        t_token = latency if mode == "token" else max(w["time_s"] for w in works.values())
        used = {k: (getattr(cfg, k), FIELDS[k][1], _source(k, getattr(cfg, k))) for k in
                ("g_min_us", "g_max_us", "read_voltage_v", "pulse_time_s", "adc_bits", "dac_bits",
                 "adc_fom_j", "dac_fom_j", "adc_time_s", "adc_share", "digital_add_j", "digital_mult_j",
                 "digital_op_time_s", "digital_lanes", "array_rows", "array_cols")}
        return Cost(energy_per_token_j=energy, latency_per_token_s=latency,
                    throughput_tokens_per_s=1.0 / t_token, power_w=energy / t_token, mode=mode,
                    measured=False,
                    assumptions={**used, "crossbar_energy": src, "adc_conversions_per_token": adc,
                                 "dac_conversions_per_token": dac, "arrays": self.resources()["arrays"],
                                 "tokens": tokens, "stages": len(works),
                                 "token_mode": "one token passes every stage before the next enters"},
                    breakdown={"crossbar": e_x, "adc": e_adc, "dac": e_dac, "digital": e_dig})

    def stats(self) -> dict:
        return dict(self._stats)

    def reset_stats(self) -> None:
        self._stats = {"stream_tokens": 0, "crossbar_energy_j": 0.0, "adc_saturations": 0}


@register("crossbar")
class CrossbarTarget(Target):
    """Memristive in-memory compute: analog crossbar simulation (device instances by seed)."""
    config_class = CrossbarTargetConfig
    capabilities = Capabilities(needs_calibration=True, stochastic=True, cost_modes=("token", "pipelined"),
                                hw_training=True)

    def build(self, model, config, calibration=None) -> CrossbarProgram:
        """config.device: a device preset / TOML (default: the model's device, else "default");
        its other fields override the device's and the model's; calibration: inputs
        (B, L, d_in) used when the model carries no calibrated ranges."""
        if not isinstance(model, SequenceModel):
            raise ConfigError(f"crossbar compiles an edgessm SequenceModel, got {type(model).__name__}")
        from ...io import checkpoint_meta
        meta = checkpoint_meta(model).get("hw") or {}
        base = load_device("default")
        dev = {}
        if isinstance(model, HwSequenceModel):
            dev = {k: getattr(model.hw, k) for k in ("weight_bits", "ssm_bits", "state_mode")}
            base = model.hw
        elif meta:
            dev = {k: v for k, v in (meta.get("device") or {}).items() if k in FIELDS}
            for k in ("weight_bits", "ssm_bits", "state_mode"):
                if k in meta:
                    dev[k] = meta[k]
        cfg = config.resolve(base, dev)
        hwm = HwSequenceModel.from_float(model, cfg)
        if not hwm.calibrated:
            if calibration is None:
                raise ConfigError("the crossbar needs DAC/ADC ranges: pass calibration=X (training inputs, "
                                  "B x L x d_in) or compile a model trained/saved with the crossbar hw wrap")
            hwm.calibrate(calibration[:cfg.calibrate])
        hwm.eval()
        return CrossbarProgram(hwm, cfg)

    def hw_wrap(self, device=None, fields: dict | None = None):
        """Hardware-aware training through the crossbar numerics (:func:`.hw.hw_wrap`)."""
        return hw_wrap(device if device is not None else "default", **(fields or {}))


def _source(field: str, value) -> str:
    """Where a cost figure's constant comes from: the default device's source, or, for a value a
    device preset (or an override) set, that, with the default's source beside it."""
    default, _unit, source, _note = FIELDS[field]
    if value == default:
        return source
    return f"set by the device preset or an override (the default device's {default!r} is from {source})"
