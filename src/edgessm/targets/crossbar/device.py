"""The crossbar's device and periphery: one typed, documented config (``CrossbarConfig``).

Everything the simulator and the cost model use is a field here, so ``edgessm deploy
--set FIELD=VALUE`` (or ``hw_wrap(**overrides)``) can change it; the default of every
published constant is cited in :data:`SOURCES` (rendered by :func:`table_markdown`).
Inside the code everything is SI (siemens, volts, seconds, joules); field names that
carry another unit say so (``_us`` = microsiemens), as the command line uses uS.

Physical model (per device, G in uS):
    programmed   G = G_target + N(0, sigma_w(G_target)^2),  sigma_w(G) = write_noise_sigma_us
                 + write_noise_slope * (G - g_min_us), scaled by sqrt(ref / iterations) of
                 program-and-verify; clipped to [0, g_max_us * 1.5]
    stuck        a fraction stuck_on_frac of devices reads g_max_us, stuck_off_frac reads g_min_us
    drift        G(t) = G * (t / drift_t0_s)^(-nu), nu ~ N(drift_nu, drift_nu_std) per device,
                 optionally compensated by one global digital gain (drift_compensation)
    read         every read adds N(0, (read_noise_rel * G)^2) per device
A signed weight is a differential pair on two adjacent columns, w ~ (G+ - G-) / (g_max - g_min);
a weight of b bits uses 2**(b-1) levels per device (ternary: b = 2, levels {G_min, G_max},
weights {-1, 0, +1}).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from ...errors import ConfigError, UnknownNameError
from ...fields import coerce
from ...resources import read_toml
from ..config import TargetConfig

# key: (citation). Every default below names one of these, or says "assumption".
REFERENCES = {
    "[Milo21]": 'V. Milo et al., "Optimized programming algorithms for multilevel RRAM in hardware '
                'neural networks", IEEE IRPS 2021, Fig. 4 (HfO2 1T1R RRAM, IGVVA-100 program-and-verify, '
                '50-225 uS; programming error sigma(G) = 4.782 - 0.009107 G uS, the linear fit used by '
                'Sandia CrossSim\'s RRAMMilo device model)',
    "[Li18]": 'C. Li et al., "Analogue signal and image processing with large memristor crossbars", '
              'Nature Electronics 1, 52-59 (2018): Ta/HfO2 1T1R arrays up to 128x64, device yield 99.8%, '
              'VMM output precision 5-8 bits',
    "[Li18b]": 'C. Li et al., "Efficient and self-adaptive in-situ learning in multilayer memristor neural '
               'networks", Nature Communications 9, 2385 (2018): 128x64 array with 11% of devices '
               'unresponsive (the pessimistic end of stuck-device rates)',
    "[Rao23]": 'M. Rao et al., "Thousands of conductance levels in memristors integrated on CMOS", '
               'Nature 615, 823-829 (2023): up to 2048 distinguishable levels with program-and-verify '
               '(so 64 levels is well inside what TaOx/HfOx devices reach)',
    "[Mur]": 'B. Murmann, "ADC Performance Survey 1997-2024" (Stanford, online), and the '
             'converterpassion.wordpress.com survey notes (2012): best Nyquist SAR ADCs reach a Walden '
             'figure of merit P / (2^ENOB fs) of 4.4-10 fJ per conversion step; we take 10 fJ (not the record)',
    "[Hor14]": 'M. Horowitz, "Computing\'s energy problem (and what we can do about it)", ISSCC 2014, '
               'energy table for 45 nm: 32-bit integer add 0.1 pJ, 32-bit integer multiply 3.1 pJ',
    "[IMSSA]": 'S. Siegel, M.-J. Yang, J. P. Strachan, "IMSSA: Deploying modern state-space models on '
               'memristive in-memory compute hardware", arXiv:2412.20215 (2024): S4D on 64x64 TaOx crossbar '
               'arrays; write-noise study with a constant sigma in uS (the `taox` preset, configs/crossbar/taox.toml)',
    "[Alibart12]": 'F. Alibart, L. Gao, B. D. Hoskins, D. B. Strukov, "High precision tuning of state for '
                   'memristive devices by adaptable variation-tolerant algorithm", Nanotechnology 23, 075201 '
                   '(2012): write-verify (program, read, re-program) tunes a device to within a chosen band',
    "[Hu18]": 'M. Hu et al., "Memristor-based analog computation and neural network classification with a '
              'dot product engine", Advanced Materials 30, 1705914 (2018): 128x64 1T1R arrays programmed by '
              'iterative write-verify to a target conductance within a tolerance',
    "[Joshi20]": 'V. Joshi et al., "Accurate deep neural network inference using computational phase-change '
                 'memory", Nature Communications 11, 2473 (2020): several devices per weight to average out '
                 'programming and read noise',
    "[Xia18]": 'L. Xia et al., "Stuck-at fault tolerance in RRAM computing systems", IEEE Journal on '
               'Emerging and Selected Topics in Circuits and Systems 8(1), 102-115 (2018): stuck devices '
               'located by a test of the programmed array and worked around in the mapping',
    "[aihwkit]": 'IBM aihwkit inference noise models (PCM: Nandakumar et al. 2019; programming noise, '
                 'read noise, power-law drift with per-device exponent, global drift compensation): '
                 'the structure of this model, not its constants (the `reram_wan2022` preset takes '
                 'the constants of aihwkit 1.1.0\'s ReRamWan2022NoiseModel)',
    "[Wan22]": 'W. Wan et al., "A compute-in-memory chip based on resistive random-access memory", '
               'Nature 608, 504-512 (2022): the NeuRRAM chip, 48 cores of 256 x 256 RRAM arrays; its '
               'programming statistics as fitted by aihwkit (the `reram_wan2022` preset, '
               'configs/crossbar/reram_wan2022.toml)',
    "[Wann00]": 'R. A. Wannamaker, S. P. Lipshitz, J. Vanderkooy, J. N. Wright, "A theory of nonsubtractive '
                'dither", IEEE Transactions on Signal Processing 48(2), 499-516 (2000): with a uniform dither '
                'of one step width added before a quantizer, the mean of the total error is zero whatever '
                'the input signal',
}

# name: (default, unit, source, note)
FIELDS: dict[str, tuple] = {
    # ---- device --------------------------------------------------------------------------
    "g_min_us": (50.0, "uS", "[Milo21]", "lowest programmed conductance of the window"),
    "g_max_us": (225.0, "uS", "[Milo21]", "highest programmed conductance of the window"),
    "levels": (64, "levels", "assumption within [Rao23]", "programmable conductance levels per device"),
    "write_noise_sigma_us": (4.33, "uS", "[Milo21]", "programming (write) noise sigma at G = g_min_us "
                             "(4.782 - 0.009107 * 50)"),
    "write_noise_slope": (-0.009107, "uS/uS", "[Milo21]", "state dependence: sigma(G) = write_noise_sigma_us "
                          "+ slope * (G - g_min_us); 0 makes the noise constant"),
    "program_verify_iterations": (100, "iterations", "[Milo21] (IGVVA-100)",
                                  "program-and-verify iterations; sigma scales as sqrt(100 / iterations) "
                                  "(assumption), programming energy as iterations"),
    "program_pulse_energy_j": (10e-12, "J", "assumption", "energy of one program/verify pulse pair "
                               "(~1 V x 100 uA x 100 ns); one-off cost, not per token"),
    "verify_tolerance_us": (0.0, "uS", "option (write-verify: [Alibart12], [Hu18])",
                            "write-verify band: after programming, a device read (with read noise) farther "
                            "than this from its target is programmed again, up to verify_max_attempts; bounds "
                            "the error of converged devices by the band plus the verify read's error (no "
                            "relaxation after the last verify: assumption); 0 = off"),
    "verify_max_attempts": (20, "attempts", "assumption", "programming attempts per device at most in the "
                            "write-verify loop, each costing program_verify_iterations pulses; a device still "
                            "outside the band keeps its last value (counted as unconverged)"),
    "stuck_compensation": (0, "bool", "option (fault-aware mapping as in [Xia18])",
                           "1: a device that write-verify finds stuck has its working partner in the "
                           "differential pair re-programmed so the pair's difference is the weight (clipped "
                           "to the window); needs verify_tolerance_us > 0 to find the stuck devices"),
    "devices_per_weight": (1, "pairs", "option (redundancy as in [Joshi20])",
                           "k differential pairs per signed weight, their currents summed on one ADC line: the "
                           "programming error of the weight falls as 1/sqrt(k); an array holds k times fewer "
                           "signed columns, so arrays, devices and programming energy grow up to k times "
                           "(read energy with the rows driven)"),
    "read_noise_rel": (0.005, "1", "assumption", "read noise sigma relative to G, per device and read "
                       "(RRAM read noise is ~0.1-1% of G)"),
    "drift_nu": (0.005, "1", "assumption (model form [aihwkit])",
                 "mean power-law drift exponent G(t) = G (t/t0)^-nu; RRAM relaxes far less than PCM (0.05)"),
    "drift_nu_std": (0.002, "1", "assumption", "device-to-device std of the drift exponent"),
    "drift_t0_s": (1.0, "s", "assumption", "time after programming at which the programmed G is read"),
    "drift_time_s": (1.0, "s", "option", "time after programming at which inference runs"),
    "drift_compensation": (1, "bool", "[aihwkit]", "1: one global digital gain undoes the mean drift"),
    "stuck_on_frac": (0.001, "1", "[Li18] (99.8% yield, split evenly)", "fraction of devices stuck at g_max_us"),
    "stuck_off_frac": (0.001, "1", "[Li18] (99.8% yield, split evenly)", "fraction of devices stuck at g_min_us"),
    # ---- periphery -----------------------------------------------------------------------
    "array_rows": (64, "rows", "[IMSSA]", "rows (inputs) per array"),
    "array_cols": (64, "columns", "[IMSSA]", "physical columns per array; a signed weight "
                   "takes two (differential pair), so an array has array_cols / 2 signed outputs"),
    "read_voltage_v": (0.2, "V", "assumption (small-signal read as in [Li18])", "full-scale read voltage of a DAC"),
    "pulse_time_s": (100e-9, "s", "assumption", "read pulse width (integration time) per MVM"),
    "dac_bits": (8, "bit", "assumption", "input DAC resolution (signed)"),
    "adc_bits": (8, "bit", "[Li18] (5-8 bit VMM precision)", "output ADC resolution (signed), one per signed column"),
    "adc_headroom": (1.25, "x", "assumption", "ADC full scale = headroom x the largest current seen in calibration"),
    "adc_fom_j": (10e-15, "J/step", "[Mur]", "ADC energy per conversion = adc_fom_j * 2^adc_bits"),
    "dac_fom_j": (10e-15, "J/step", "assumption (same order as [Mur])", "DAC energy per conversion = dac_fom_j * 2^dac_bits"),
    "adc_time_s": (50e-9, "s", "assumption", "one ADC conversion (SAR, ~20 MS/s)"),
    "adc_share": (1, "columns/ADC", "assumption", "signed columns sharing one ADC (time multiplexed)"),
    "digital_add_j": (0.1e-12, "J", "[Hor14]", "32-bit integer add (partial sums, bias)"),
    "digital_mult_j": (3.1e-12, "J", "[Hor14]", "32-bit integer multiply (column scale, activation)"),
    "digital_op_time_s": (1e-9, "s", "assumption", "one digital periphery op (1 GHz), 32 lanes per array"),
    "digital_lanes": (32, "lanes", "assumption", "parallel digital periphery lanes per array"),
    # ---- mapping / model precision -----------------------------------------------------------
    "weight_bits": (5, "bit", "option", "encoder / mixing / decoder weights; 2 = ternary {-1, 0, +1}"),
    "ssm_bits": (6, "bit", "option", "the S4D block matrix [[dA, b], [c, d]] per channel (device levels "
                 "with recurrence = 'array', coefficient words with 'digital')"),
    "state_mode": ("digital", "-", "option", "'digital': the S4D state goes through ADC then DAC every "
                   "step; 'analog': it is held analog (sample and hold) and fed back without conversion"),
    "state_dither": (0, "bool", "option (nonsubtractive dither [Wann00])",
                     "1: the state is digitized once per step, at the DAC's resolution and range, after a "
                     "uniform dither of one step (a pseudo-random offset per channel, state and token, the "
                     "same for every sequence, from an on-chip generator): no ADC on the state columns, "
                     "whose rounding without dither holds slow modes in dead bands and limit cycles; "
                     "needs state_mode = 'digital'"),
    "recurrence": ("array", "-", "option", "where each S4D layer's block [[dA, b], [c, d]] runs: 'array' (one "
                   "block per channel on the crossbar arrays, as [IMSSA]) or 'digital' (in the digital periphery: "
                   "the block's nonzero products, 8 multiplies and 6 adds per complex state and token, at ssm_bits coefficients, the "
                   "state word digital_state_bits wide; no devices, converters or write noise; only the "
                   "encoder, mixing and decoder on arrays)"),
    "digital_state_bits": (16, "bit", "assumption", "signed state word of a digital recurrence (the state's "
                           "range of 1 after its gain); rounded half up, or dithered with state_dither"),
    "digital_train": ("scan", "-", "option", "how hardware-aware training runs a digital recurrence: 'scan' "
                      "rounds the state word every step, as the periphery does; 'fft' convolves with the "
                      "quantized block's impulse response (the float step's FFT convolution), leaving out "
                      "the word's rounding (2^-(digital_state_bits - 1) of the state's range) and its "
                      "saturation at +-1; deployment and evaluation always run the word"),
    "calibrate": (256, "samples", "option", "training samples used to set DAC and ADC ranges"),
    "seed": (0, "-", "option", "device instance (random programming, faults, drift)"),
    "noise": (1, "bool", "option", "0: ideal devices (quantization and converters only)"),
    "write_noise_arrays": ("all", "-", "option", "arrays that get write noise: 'all', 'linear' (encoder, "
                           "mixing, decoder) or 's4d' (the recurrent blocks); for attributing robustness"),
}

STATE_MODES = ("digital", "analog")
RECURRENCES = ("array", "digital")
DIGITAL_TRAIN = ("scan", "fft")
NOISE_ARRAYS = ("all", "linear", "s4d")


def _make_cls():
    fields = []
    for k, (v, *_rest) in FIELDS.items():
        fields.append((k, type(v), dataclasses.field(default=v)))
    return dataclasses.make_dataclass("CrossbarConfig", fields, namespace={
        "validate": _validate, "g_window_s": property(lambda s: (s.g_max_us - s.g_min_us) * 1e-6),
        "signed_cols": property(lambda s: s.array_cols // (2 * s.devices_per_weight)),
        "state_word_bits": property(_state_word_bits),
        "write_sigma_us": _write_sigma_us, "replace": lambda s, **kw: parse_options(kw, base=s),
        "to_dict": lambda s: dataclasses.asdict(s)})


def _state_word_bits(self):
    """The width an S4D state is rounded to every step: the periphery's word with a digital
    recurrence, the DAC's with a digital state on the array, None for an analog state."""
    if self.recurrence == "digital":
        return self.digital_state_bits
    return self.dac_bits if self.state_mode == "digital" else None


def _write_sigma_us(self, g_us):
    """Write-noise sigma (uS) of a device programmed to g_us (tensor or float)."""
    k = math.sqrt(100.0 / self.program_verify_iterations)
    s = self.write_noise_sigma_us + self.write_noise_slope * (g_us - self.g_min_us)
    try:
        return (s.clamp(min=0.0)) * k
    except AttributeError:
        return max(s, 0.0) * k


def program_devices(g_us, cfg, e, generator=None):
    """Program devices to targets g_us (uS, a tensor): the base algorithm's error
    ``write_sigma_us(g) * e`` (e: standard normal draws of the instance), then, when
    ``verify_tolerance_us > 0``, the write-verify loop: read every device (read noise
    ``read_noise_rel * G``), program those read outside the band again (a fresh error), at most
    ``verify_max_attempts`` programmings per device in all. Returns (G in uS, programmings
    per device, converged mask). Without a band every device is programmed once and counts as
    converged. Clipping to the physical range [0, 1.5 g_max] is left to the caller."""
    import torch
    sigma = cfg.write_sigma_us(g_us)
    g = g_us + sigma * e
    attempts = torch.ones_like(g_us, dtype=torch.int32)
    tol = cfg.verify_tolerance_us
    if tol <= 0:
        return g, attempts, torch.ones_like(g_us, dtype=torch.bool)
    rel = cfg.read_noise_rel
    rd = g + rel * g.abs() * torch.randn(g.shape, generator=generator, dtype=g.dtype)
    bad = (rd - g_us).abs() > tol
    # the retries on the devices still outside the band only (each draw is still made for every
    # device, so every device sees the same numbers as when all are drawn at once)
    g = g.contiguous()
    gf, af = g.view(-1), attempts.view(-1)
    tf, sf = g_us.reshape(-1), sigma.reshape(-1)
    idx = torch.nonzero(bad.reshape(-1)).flatten()
    for _ in range(cfg.verify_max_attempts - 1):
        if idx.numel() == 0:
            break
        t, s = tf[idx], sf[idx]
        gi = t + s * torch.randn(g.shape, generator=generator, dtype=g.dtype).view(-1)[idx]
        gf[idx] = gi
        af[idx] += 1
        rd = gi + rel * gi.abs() * torch.randn(g.shape, generator=generator, dtype=g.dtype).view(-1)[idx]
        idx = idx[(rd - t).abs() > tol]
    bad = torch.zeros(g.numel(), dtype=torch.bool, device=g.device)
    bad[idx] = True
    return g, attempts, ~bad.view(g.shape)


def _validate(self):
    """Raise ConfigError on values no device or periphery can have."""
    if not (self.g_min_us >= 0 and self.g_max_us > 0):
        raise ConfigError(f"conductance window [{self.g_min_us}, {self.g_max_us}] uS: both ends must be "
                          f"positive (g_min_us >= 0, g_max_us > 0)")
    if self.g_max_us <= self.g_min_us:
        raise ConfigError(f"conductance window [{self.g_min_us}, {self.g_max_us}] uS is inverted or empty: "
                          f"g_max_us must be larger than g_min_us")
    if self.levels < 2:
        raise ConfigError(f"levels = {self.levels}: a device needs at least 2 programmable levels")
    for k in ("write_noise_sigma_us", "read_noise_rel", "drift_nu_std", "adc_fom_j", "dac_fom_j",
              "pulse_time_s", "adc_time_s", "digital_add_j", "digital_mult_j", "digital_op_time_s",
              "program_pulse_energy_j", "drift_nu"):
        if getattr(self, k) < 0 or not math.isfinite(getattr(self, k)):
            raise ConfigError(f"{k} = {getattr(self, k)} must be a finite value >= 0")
    for k in ("stuck_on_frac", "stuck_off_frac"):
        if not 0.0 <= getattr(self, k) <= 1.0:
            raise ConfigError(f"{k} = {getattr(self, k)} must be a fraction in [0, 1]")
    if self.stuck_on_frac + self.stuck_off_frac > 1.0:
        raise ConfigError("stuck_on_frac + stuck_off_frac must not exceed 1")
    for k, lo, hi in (("adc_bits", 1, 24), ("dac_bits", 1, 24), ("weight_bits", 2, 16), ("ssm_bits", 2, 16)):
        v = getattr(self, k)
        if not lo <= v <= hi:
            raise ConfigError(f"{k} = {v} must be between {lo} and {hi} bits")
    for k in ("array_rows", "array_cols", "program_verify_iterations", "adc_share", "digital_lanes",
              "verify_max_attempts", "devices_per_weight"):
        if getattr(self, k) < 1:
            raise ConfigError(f"{k} = {getattr(self, k)} must be >= 1")
    if self.array_cols < 2:
        raise ConfigError("array_cols must be >= 2: a signed weight needs a differential pair of columns")
    if self.array_cols < 2 * self.devices_per_weight:
        raise ConfigError(f"devices_per_weight = {self.devices_per_weight} needs {2 * self.devices_per_weight} "
                          f"columns per signed weight; the array has array_cols = {self.array_cols}")
    if self.stuck_compensation not in (0, 1):
        raise ConfigError(f"stuck_compensation = {self.stuck_compensation}: expected 0 or 1")
    if self.stuck_compensation and not self.verify_tolerance_us > 0:
        raise ConfigError("stuck_compensation = 1 needs write-verify (verify_tolerance_us > 0) to find the "
                          "stuck devices")
    if not (math.isfinite(self.verify_tolerance_us) and self.verify_tolerance_us >= 0):
        raise ConfigError(f"verify_tolerance_us = {self.verify_tolerance_us} must be a finite band >= 0 uS "
                          f"(0 = no write-verify loop)")
    if self.recurrence not in RECURRENCES:
        raise ConfigError(f"recurrence {self.recurrence!r}: expected one of {', '.join(RECURRENCES)}")
    if not 2 <= self.digital_state_bits <= 24:
        raise ConfigError(f"digital_state_bits = {self.digital_state_bits} must be between 2 and 24 bits")
    for k in ("weight_bits", "ssm_bits") if self.recurrence == "array" else ("weight_bits",):
        need = 1 << (getattr(self, k) - 1)
        if need > self.levels:
            raise ConfigError(f"{k} = {getattr(self, k)} needs {need} levels per device, the device has "
                              f"levels = {self.levels}")
    if self.read_voltage_v <= 0 or self.adc_headroom <= 0 or self.drift_t0_s <= 0 or self.drift_time_s <= 0:
        raise ConfigError("read_voltage_v, adc_headroom, drift_t0_s and drift_time_s must be > 0")
    if self.write_noise_arrays not in NOISE_ARRAYS:
        raise ConfigError(f"write_noise_arrays {self.write_noise_arrays!r}: expected one of {', '.join(NOISE_ARRAYS)}")
    if self.state_mode not in STATE_MODES:
        raise ConfigError(f"state_mode {self.state_mode!r}: expected one of {', '.join(STATE_MODES)}")
    if self.state_dither not in (0, 1):
        raise ConfigError(f"state_dither = {self.state_dither}: expected 0 or 1")
    if self.recurrence == "digital" and self.state_mode != "digital":
        raise ConfigError("recurrence = 'digital' keeps its state in digital words: it needs state_mode = 'digital'")
    if self.digital_train not in DIGITAL_TRAIN:
        raise ConfigError(f"digital_train {self.digital_train!r}: expected one of {', '.join(DIGITAL_TRAIN)}")
    if self.digital_train == "fft" and self.recurrence != "digital":
        raise ConfigError("digital_train = 'fft' needs recurrence = 'digital' (an array recurrence has "
                          "converters and write noise every step: it trains by its scan)")
    if self.recurrence == "digital" and self.write_noise_arrays == "s4d":
        raise ConfigError("write_noise_arrays = 's4d' needs recurrence = 'array' (a digital recurrence has no "
                          "devices to program)")
    if self.state_dither and self.state_mode != "digital":
        raise ConfigError("state_dither = 1 needs state_mode = 'digital' (an analog state is not quantized)")
    return self


CrossbarConfig = _make_cls()
CrossbarConfig.__doc__ = ("Device, periphery and mapping of the crossbar target; every field, its unit and "
                          "source in edgessm.targets.crossbar.device.FIELDS (deploy --set FIELD=VALUE).")

# built-in presets; more as TOML shipped in the package (edgessm/presets/crossbar/, also seen as
# configs/crossbar/ in a source checkout), found with edgessm.resources.preset_file

PRESETS: dict[str, dict] = {
    "default": {},
    "ideal": {"noise": 0},
    "pessimistic": {"stuck_on_frac": 0.01, "stuck_off_frac": 0.01, "program_verify_iterations": 10,
                    "read_noise_rel": 0.01},
}


def parse_options(options: dict, base=None):
    """A validated CrossbarConfig from `base` (default preset) updated by `options`
    (field -> value; strings from the command line are converted). Unknown fields raise."""
    cfg = base if base is not None else CrossbarConfig()
    known = {f.name: f for f in dataclasses.fields(CrossbarConfig)}
    upd = {}
    for k, v in (options or {}).items():
        k2 = str(k).replace("-", "_")
        if k2 not in known:
            raise UnknownNameError(f"unknown crossbar config field {k!r}; known fields: {', '.join(known)}")
        want = type(FIELDS[k2][0])
        if isinstance(v, bool) and want is int:   # the 0/1 flags (noise, drift_compensation): true/false
            v = int(v)
        upd[k2] = coerce(k2, v, want)
    return dataclasses.replace(cfg, **upd).validate()


def load_device(device="default", **overrides):
    """CrossbarConfig of a preset name (default, ideal, pessimistic, or a TOML under
    presets/crossbar/ in the package, such as taox) or a TOML path, then `overrides`."""
    if isinstance(device, CrossbarConfig):
        return parse_options(overrides, base=device)
    if isinstance(device, dict):
        return parse_options({**device, **overrides})
    name = str(device)
    if name in PRESETS:
        return parse_options({**PRESETS[name], **overrides})
    p = Path(name)
    if not p.is_file():
        from ...resources import preset_file
        p = preset_file("crossbar", name) or p
    if not p.is_file():
        raise UnknownNameError(f"unknown crossbar device {device!r}: not a preset "
                               f"({', '.join(PRESETS)}) nor a TOML file")
    d = read_toml(p)
    d = d.get("device", d)
    return parse_options({**d, **overrides})


def _field_parser(name: str):
    want = type(FIELDS[name][0])

    def parse(label, value):
        if isinstance(value, bool) and want is int:   # the 0/1 flags (noise, drift_compensation)
            value = int(value)
        return coerce(label, value, want)
    return parse


def _device_parser(label, value):
    return load_device(value)


def _make_target_cls():
    fields = [("device", "CrossbarConfig | None",
               dataclasses.field(default=None, metadata={"parse": _device_parser}))]
    for k, (v, *_rest) in FIELDS.items():
        fields.append((k, f"{type(v).__name__} | None",
                       dataclasses.field(default=None, metadata={"parse": _field_parser(k)})))
    return dataclasses.make_dataclass("CrossbarTargetConfig", fields, bases=(TargetConfig,),
                                      namespace={"TARGET": "crossbar", "SPEC_FIELD": "device",
                                                 "overrides": _overrides, "instance": _instance,
                                                 "resolve": _resolve})


def _overrides(self) -> dict:
    """The device fields given explicitly (typed), to apply over the device and the model's."""
    return {k: self.__dict__[k] for k in FIELDS if self.__dict__[k] is not None}


def _instance(self, k: int):
    """Device instance k: seed k, unless a seed was given."""
    return self if self.seed is not None else self.replace(seed=k)


def _resolve(self, base, model_fields: dict) -> CrossbarConfig:
    """The CrossbarConfig a compile uses: this config's device (else `base`), then the model's
    device fields, then the fields given here."""
    dev = self.device if self.device is not None else base
    return parse_options({**model_fields, **self.overrides()}, base=dev)


CrossbarTargetConfig = _make_target_cls()
CrossbarTargetConfig.__doc__ = (
    "Options of the crossbar target (deploy --set FIELD=VALUE, --spec DEVICE): device (a preset or "
    "TOML file; default: the model's device, else 'default') and any CrossbarConfig field, None "
    "meaning the device's (or the model's) value.")


def table_markdown() -> str:
    """The constants table with sources (for RESULTS.md / docs)."""
    rows = ["| field | default | unit | source | note |", "|---|---|---|---|---|"]
    for k, (v, u, s, n) in FIELDS.items():
        rows.append(f"| `{k}` | {v:g} | {u} | {s} | {n} |" if isinstance(v, (int, float))
                    else f"| `{k}` | {v} | {u} | {s} | {n} |")
    rows.append("")
    rows += [f"- {k} {v}" for k, v in REFERENCES.items()]
    return "\n".join(rows)
