"""The C export on Cortex-M microcontrollers: cross-compiled, sized, run bit-exact under
emulation, instructions and cycles per token counted.

    res = export_c(qmodel, "out/", name="kws", mcu="cortex-m4", verify=X_test)
    res["mcu"]   # {"verified": N, "mismatches": 0, "flash_bytes", "ram_bytes", "cycles_per_token", ...}

Toolchain (Debian): ``apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm``.

What is done, per optimization level (-Os and -O2), all ``-mthumb``, integer only
(``-mfloat-abi=soft``; the step has no float):

* **Build.** The model's ``<name>.c`` is compiled on its own with the export's warnings
  (``-std=c99 -Wall -Wextra -pedantic -Werror``), ``-ffunction-sections -fdata-sections
  -fstack-usage -fcallgraph-info=su``; a test application links it with the harness, the
  start-up file and the linker script shipped in ``export/cortexm/`` and newlib's
  semihosting library (``--specs=rdimon.specs -nostartfiles``).
* **Sizes.** The model's own object file: flash = ``.text*`` + ``.rodata*``, static RAM =
  ``.data*`` + ``.bss*``; RAM of one stream = static RAM + ``sizeof(<name>_state)`` + the
  stack of ``<name>_step`` (the deepest call chain of the compiler's ``-fstack-usage``
  figures, from ``-fcallgraph-info``). The application's total (harness, C library) is
  reported apart.
* **Bit-exact run.** ``qemu-system-arm`` runs the application on an emulated board
  (:data:`MCUS`); the harness reads the encoded inputs and writes every token's logits and
  the stream's overflow counters through semihosting; both are compared with the Python
  integer engine.
* **Instructions and cycles.** A second run with an execution trace (one line per executed
  instruction, ``-singlestep -d exec,nochain``) counts the instructions of the first tokens
  between two marker calls of the harness (so the call of ``<name>_step`` is included). Each
  executed instruction is given the cycles of its core's published instruction timing
  (:data:`TIMINGS`: zero wait states, taken branches and load pipelining included), which
  gives cycles per token, the effective CPI and the real-time factor at
  :data:`CLOCK_HZ` for the task's token rate.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ToolchainError
from ..targets.fixed.cgen import OVERFLOW_KINDS
from ..toolchain import APT, run_tool, sections_bytes
from ..toolchain import ArmToolchain as Toolchain
from ..toolchain import find_arm_toolchain as find_toolchain

__all__ = ["APT", "MCUS", "OPT_LEVELS", "TIMINGS", "BudgetError", "Toolchain", "ToolchainError", "build",
           "check_budget", "find_toolchain", "mcu_check", "run", "stack_usage"]
OPT_LEVELS = ("-Os", "-O2")
CLOCK_HZ = 80e6
STRICT = ["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"]
SOURCES = Path(__file__).with_name("cortexm")          # harness.c, startup.c, cortexm.ld


@dataclass(frozen=True)
class Board:
    machine: str          # qemu-system-arm -M
    core: str             # the emulated core
    flash: int            # code memory from 0x0, bytes
    ram: int              # RAM from 0x20000000, bytes


@dataclass(frozen=True)
class MCU:
    cpu: str                     # -mcpu
    boards: tuple                # tried in order: the first the application fits
    timing: str                  # key of TIMINGS
    note: str = ""


MCUS = {
    "cortex-m4": MCU("cortex-m4", (Board("mps2-an386", "Cortex-M4", 4 << 20, 4 << 20),), "cortex-m4"),
    "cortex-m0plus": MCU("cortex-m0plus",
                         (Board("microbit", "Cortex-M0", 256 << 10, 16 << 10),
                          Board("mps2-an385", "Cortex-M3", 4 << 20, 4 << 20)), "cortex-m0",
                         "qemu has no Cortex-M0+ board: the ARMv6-M build runs on the micro:bit's "
                         "Cortex-M0 (the same instruction set), or, when it does not fit its 256 KB "
                         "flash / 16 KB RAM, on the MPS2 AN385's Cortex-M3 (a superset); cycles use the "
                         "Cortex-M0 timing, an upper bound for the M0+ (2 cycles per taken branch, not 3)"),
    "cortex-m7": MCU("cortex-m7", (Board("mps2-an500", "Cortex-M7", 4 << 20, 4 << 20),), "cortex-m4",
                     "the Cortex-M7 dual-issues and has no published per-instruction timing: cycles use "
                     "the Cortex-M4 timing, an upper bound"),
}

# Cycles per executed instruction (zero wait states). P = 2: the pipeline refill of a taken
# branch, which the Cortex-M4 TRM gives as 1 to 3; N = registers transferred.
TIMINGS = {
    "cortex-m4": {
        "source": "Arm Cortex-M4 Technical Reference Manual, instruction set summary (cycle counts "
                  "at zero wait states), as reproduced in TI SWCU192 Table 3-25: ALU, MUL/MLA, "
                  "SMULL/SMLAL/UMULL/UMLAL, SSAT 1; loads 2 (1 when following a load or store: "
                  "pipelined, N+1); stores 2 (likewise); LDM/STM/PUSH/POP 1+N; taken branch 1+P, "
                  "P = 1..3 (2 used), not taken 1; SDIV/UDIV 2..12 (12 used)",
        "url": "https://ti.com/document-viewer/lit/html/SWCU192/GUID-86361CC6-93E0-4EA8-90CF-AF757C93D80D",
        "alu": 1, "mul": 1, "load": 2, "load_pipelined": 1, "multi_base": 1, "branch_taken": 3,
        "branch_not_taken": 1, "div": 12, "p": 2,
    },
    "cortex-m0": {
        "source": "Arm Cortex-M0 instruction timing (Cortex-M0 TRM / Devices Generic User Guide "
                  "instruction set summary, at zero wait states): ALU 1, MULS 1 (fast multiplier), "
                  "loads and stores 2, LDM/STM/PUSH/POP 1+N, POP {..pc} 4+N, taken branch 3, "
                  "not taken 1, BL 4, BX/BLX 3",
        "url": "https://blog.csdn.net/nolatin/article/details/8159551",
        "alu": 1, "mul": 1, "load": 2, "load_pipelined": 2, "multi_base": 1, "branch_taken": 3,
        "branch_not_taken": 1, "div": 0, "p": 2, "bl": 4, "pop_pc": 4,
    },
}

# token rates of the tasks whose tokens arrive in real time
TOKEN_RATES = {
    "fsdd": (100.0, "log-mel frames every 10 ms (80 samples at 8 kHz; data/audio.py)"),
    "fsdd-01": (100.0, "log-mel frames every 10 ms (80 samples at 8 kHz; data/audio.py)"),
}


class BudgetError(ConfigError):
    """The model does not fit the stated flash / RAM budget."""


def check_mcu(mcu: str) -> MCU:
    if mcu not in MCUS:
        raise ConfigError(f"unknown --mcu {mcu!r}; known: {', '.join(MCUS)}")
    return MCUS[mcu]


def check_budget_args(flash_kb, ram_kb) -> None:
    for flag, v in (("--flash-kb", flash_kb), ("--ram-kb", ram_kb)):
        if v is not None and not v > 0:
            raise ConfigError(f"{flag} must be a positive number of KiB, got {v}")


# ---- build ----------------------------------------------------------------------------------------
def _cpu_flags(m: MCU) -> list[str]:
    return [f"-mcpu={m.cpu}", "-mthumb", "-mfloat-abi=soft"]


def build(tc: Toolchain, src_dir: Path, name: str, mcu: str, opt: str, work: Path, d_input: int,
          d_output: int) -> dict:
    """Compile `name`.c (in src_dir) for `mcu` at `opt` and link the test application in
    `work`. Returns the sizes, the stack, the board and the paths."""
    m = MCUS[mcu]
    cpu = _cpu_flags(m)
    work.mkdir(parents=True, exist_ok=True)
    tag = f"{mcu}{opt}"
    obj = work / f"{name}-{tag}.o"
    run_tool([tc.cc, *STRICT, opt, *cpu, "-ffunction-sections", "-fdata-sections", "-fstack-usage",
          "-fcallgraph-info=su", "-c", str(src_dir / f"{name}.c"), "-o", str(obj)],
         f"cross-compiling {name}.c for {mcu} at {opt}", cwd=work)
    common = [opt, *cpu, "-std=c99", "-Wall", "-Wextra", "-Werror", "-ffunction-sections", "-fdata-sections"]
    hobj, sobj = work / f"harness-{tag}.o", work / f"startup-{tag}.o"
    run_tool([tc.cc, *common, "-I", str(src_dir), f'-DEDGESSM_HEADER="{name}.h"', f"-DEDGESSM_NAME={name}",
          f"-DEDGESSM_D_INPUT={d_input}", f"-DEDGESSM_D_OUTPUT={d_output}", "-c",
          str(SOURCES / "harness.c"), "-o", str(hobj)], "compiling the Cortex-M test harness")
    run_tool([tc.cc, *common, "-c", str(SOURCES / "startup.c"), "-o", str(sobj)],
         "compiling the Cortex-M start-up file")
    err = None
    for board in m.boards:
        elf = work / f"app-{tag}-{board.machine}.elf"
        try:
            run_tool([tc.cc, *cpu, "--specs=rdimon.specs", "-nostartfiles", "-T", str(SOURCES / "cortexm.ld"),
                  "-Wl,--gc-sections", f"-Wl,--defsym=EDGESSM_FLASH={board.flash}",
                  f"-Wl,--defsym=EDGESSM_RAM={board.ram}", str(sobj), str(hobj), str(obj), "-o", str(elf)],
                 f"linking the Cortex-M test application for {board.machine}")
            break
        except ToolchainError as e:
            err = e
            if "does not fit" not in str(e):
                raise
    else:
        raise err
    flash = sections_bytes(obj, (".text", ".rodata"))
    ram_static = sections_bytes(obj, (".data", ".bss"))
    stack, unknown = stack_usage(obj.with_suffix(".ci"), f"{name}_step")
    app_flash = sections_bytes(elf, (".isr_vector", ".text", ".rodata", ".ARM.exidx", ".init_array",
                                ".fini_array", ".data"))
    app_ram = sections_bytes(elf, (".data", ".bss"))
    return {"opt": opt, "object": str(obj), "elf": str(elf), "board": board,
            "flash_bytes": flash, "text_bytes": sections_bytes(obj, (".text",)),
            "rodata_bytes": sections_bytes(obj, (".rodata",)), "static_ram_bytes": ram_static,
            "stack_bytes": stack, "stack_unknown_callees": unknown,
            "app_flash_bytes": app_flash, "app_ram_bytes": app_ram}


_CI_NODE = re.compile(r'node: \{ title: "([^"]+)" label: "([^"]*)"')
_CI_EDGE = re.compile(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"')


def stack_usage(ci: Path, root: str) -> tuple[int, list[str]]:
    """Worst-case stack of `root` from gcc's -fcallgraph-info=su file: its frame plus the
    deepest chain of callees' frames. Callees without a figure (library helpers, e.g. memset
    or libgcc's 64-bit routines) count 0 and are listed."""
    text = ci.read_text()
    frames, edges, unknown = {}, {}, set()
    for title, label in _CI_NODE.findall(text):
        mm = re.search(r"(\d+) bytes \((static|dynamic[^)]*)\)", label)
        if mm:
            frames[title] = int(mm.group(1))
    for a, b in _CI_EDGE.findall(text):
        edges.setdefault(a, []).append(b)
    if root not in frames:
        raise ToolchainError(f"no stack figure for {root} in {ci.name}")

    def deepest(fn: str, seen: frozenset) -> int:
        if fn not in frames:
            unknown.add(fn)
            return 0
        sub = [deepest(c, seen | {fn}) for c in edges.get(fn, []) if c not in seen]
        return frames[fn] + max(sub, default=0)
    return deepest(root, frozenset()), sorted(unknown)


# ---- run under emulation --------------------------------------------------------------------------
def _qemu_cmd(tc: Toolchain, board: Board, elf: str, trace: str | None = None) -> list[str]:
    cmd = [tc.qemu, "-M", board.machine, "-semihosting-config", "enable=on,target=native", "-nographic",
           "-monitor", "none", "-serial", "none", "-kernel", elf]
    if trace:
        cmd[1:1] = ["-singlestep", "-d", "exec,nochain", "-D", trace]
    return cmd


def run(tc: Toolchain, build_res: dict, xm: np.ndarray, d_output: int, traced: int = 0,
        trace: bool = False, timeout: float = 900.0):
    """Run the application on the encoded inputs xm (n, L, d_in) int: -> (logits (n, L, d_out),
    overflow counters (n, 4), trace file path or None)."""
    n, L, d_in = xm.shape
    td = Path(tempfile.mkdtemp(prefix="edgessm-mcu-"))
    with open(td / "edgessm_in.bin", "wb") as f:
        f.write(np.array([n, L, d_in, traced], np.int32).tobytes())
        f.write(np.ascontiguousarray(xm, dtype=np.int32).tobytes())
    log = str(td / "trace.log") if trace else None
    try:
        r = subprocess.run(_qemu_cmd(tc, build_res["board"], build_res["elf"], log), cwd=td,
                           capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        shutil.rmtree(td, ignore_errors=True)
        raise ToolchainError(f"the emulated {build_res['board'].machine} did not finish within "
                             f"{timeout:.0f} s") from None
    if r.returncode:
        shutil.rmtree(td, ignore_errors=True)
        raise ToolchainError(f"the test application on the emulated {build_res['board'].machine} failed "
                             f"(exit {r.returncode}): {(r.stderr or r.stdout).strip()[:2000]}")
    raw = np.fromfile(td / "edgessm_out.bin", dtype=np.int32)
    per = L * d_output + 4
    if raw.size != n * per:
        shutil.rmtree(td, ignore_errors=True)
        raise ToolchainError(f"the emulated test application wrote {raw.size} values, expected {n * per}")
    raw = raw.reshape(n, per)
    logits = raw[:, :L * d_output].reshape(n, L, d_output).astype(np.int64)
    over = raw[:, L * d_output:].view(np.uint32).astype(np.int64)
    if not trace:
        shutil.rmtree(td, ignore_errors=True)
    return logits, over, log


# ---- instructions and cycles ----------------------------------------------------------------------
_OBJDUMP_LINE = re.compile(r"^\s*([0-9a-f]+):\s+((?:[0-9a-f]{4}\s?){1,2})\s+(\S+)\s*(.*)$")


def disassemble(tc: Toolchain, elf: str) -> dict[int, tuple[str, str, int]]:
    """address -> (mnemonic, operands, size in bytes) of every instruction of the ELF."""
    r = run_tool([tc.objdump, "-d", elf], "disassembling the test application")
    out = {}
    for line in r.stdout.splitlines():
        mm = _OBJDUMP_LINE.match(line)
        if mm:
            size = 2 * len(mm.group(2).split())
            out[int(mm.group(1), 16)] = (mm.group(3).lower(), mm.group(4), size)
    return out


def _symbol(tc: Toolchain, elf: str, sym: str) -> int:
    r = run_tool([tc.nm, elf], "reading the application's symbols")
    for line in r.stdout.splitlines():
        p = line.split()
        if len(p) == 3 and p[2] == sym:
            return int(p[0], 16) & ~1
    raise ToolchainError(f"symbol {sym} not found in {elf}")


_BRANCH = re.compile(r"^(b|bl|blx|bx|cbz|cbnz|tbb|tbh)(eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le|al)?(\.[nw])?$")
_COND = re.compile(r"(eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le)(\.[nw])?$")


def instruction_cycles(mnem: str, ops: str, taken: bool, after_mem: bool, t: dict) -> tuple[str, int]:
    """(class, cycles) of one executed instruction under timing table `t`."""
    base = re.sub(r"\.[nw]$", "", mnem)
    nregs = len(re.findall(r"\b(?:r\d+|sl|fp|ip|lr|pc|sp)\b", ops.split("{", 1)[1])) if "{" in ops else 0
    writes_pc = bool(re.search(r"\bpc\b", ops.split(",", 1)[0])) or (base.startswith("pop") and "pc" in ops) \
        or (base.startswith("ldm") and "pc" in ops)
    if _BRANCH.match(mnem) or base in ("b", "bl", "blx", "bx"):
        if base.startswith("bl"):
            return "branch", t.get("bl", 1 + t["p"])
        if base.startswith("tb"):
            return "branch", 2 + t["p"]
        if base == "bx":
            return "branch", t.get("bl", 1 + t["p"]) - (1 if "bl" in t else 0)
        return "branch", t["branch_taken"] if taken else t["branch_not_taken"]
    if base.startswith(("push", "pop", "ldm", "stm")):
        if writes_pc:
            return "branch", t.get("pop_pc", 1 + t["p"]) + nregs
        return "load/store multiple", t["multi_base"] + nregs
    if base.startswith(("ldrd", "strd")):
        return "load/store", 3
    if base.startswith(("ldr", "str")):
        if writes_pc:
            return "branch", 2 + t["p"] + 1
        return "load/store", t["load_pipelined"] if after_mem else t["load"]
    if base.startswith(("sdiv", "udiv")):
        return "divide", t["div"] or 1
    if re.match(r"^(mul|mla|mls|smull|umull|smlal|umlal|smul|smla|smlal|smmul|smmla|smuad|smlad)", base):
        return "multiply", t["mul"]
    return "alu", t["alu"]


def count_cycles(tc: Toolchain, build_res: dict, xm_tokens: np.ndarray, d_output: int, timing: str) -> dict:
    """Trace the first tokens of one sequence (1, K, d_in): instructions and cycles per token."""
    t = TIMINGS[timing]
    elf = build_res["elf"]
    begin, end = _symbol(tc, elf, "edgessm_mark_begin"), _symbol(tc, elf, "edgessm_mark_end")
    dis = disassemble(tc, elf)
    K = xm_tokens.shape[1]
    _, _, log = run(tc, build_res, xm_tokens, d_output, traced=K, trace=True)
    insns, cycles, classes = [], [], {}
    cache: dict[int, tuple] = {}

    def info(pc: int) -> tuple:
        """(class, size, cycles taken, not taken, pipelined taken, pipelined not taken) of the
        instruction at pc: the table is applied once per address, not per execution."""
        got = cache.get(pc)
        if got is None:
            mn, ops, size = dis.get(pc, ("?", "", 2))
            v = [instruction_cycles(mn, ops, tk, pm, t) for pm in (False, True) for tk in (True, False)]
            got = cache[pc] = (v[0][0], size, v[0][1], v[1][1], v[2][1], v[3][1])
        return got
    try:
        pcs = []
        inside, prev_mem = False, False
        with open(log) as f:
            for line in f:
                if not line.startswith("Trace"):
                    continue
                pc = int(line.split("[", 1)[1].split("/", 2)[1], 16)
                if pc == begin:
                    inside, pcs = True, []
                    continue
                if pc == end and inside:
                    inside = False
                    c = 0
                    pcs.append(end)
                    for i in range(len(pcs) - 1):
                        p = pcs[i]
                        cls, size, a, b, pa, pb = info(p)
                        taken = pcs[i + 1] != p + size
                        c += (pa if taken else pb) if prev_mem else (a if taken else b)
                        prev_mem = cls == "load/store"
                        classes[cls] = classes.get(cls, 0) + 1
                    pcs.pop()
                    insns.append(len(pcs))
                    cycles.append(c)
                    continue
                if inside:
                    pcs.append(pc)
    finally:
        shutil.rmtree(Path(log).parent, ignore_errors=True)
    if len(insns) != K:
        raise ToolchainError(f"the execution trace held {len(insns)} of {K} marked tokens")
    total = sum(insns)
    return {"traced_tokens": K, "instructions_per_token": total / K, "cycles_per_token": sum(cycles) / K,
            "cpi": sum(cycles) / max(total, 1), "instructions_min": min(insns), "instructions_max": max(insns),
            "instruction_mix": {k: round(v / max(total, 1), 4) for k, v in sorted(classes.items())}}


# ---- the whole check ------------------------------------------------------------------------------
def largest_arrays(code: dict, n: int = 5) -> list[tuple[str, int]]:
    """The largest const arrays (flash) of generated code, (name, bytes)."""
    sizes = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4, "uint32_t": 4, "int64_t": 8}
    out = []
    for mm in re.finditer(r"static const (\w+) (\w+)((?:\[\d+\])+) =", code["c"]):
        count = int(np.prod([int(d) for d in re.findall(r"\d+", mm.group(3))]))
        out.append((mm.group(2), sizes.get(mm.group(1), 4) * count))
    return sorted(out, key=lambda x: -x[1])[:n]


def state_arrays(code: dict, name: str, n: int = 5) -> list[tuple[str, int]]:
    sizes = {"int8_t": 1, "int16_t": 2, "int32_t": 4, "uint32_t": 4, "uint64_t": 8}
    body = code["h"].split("typedef struct {", 1)[1].split(f"}} {name}_state;", 1)[0]
    out = []
    for mm in re.finditer(r"(\w+) (\w+)((?:\[\d+\])*);", body):
        count = int(np.prod([int(d) for d in re.findall(r"\d+", mm.group(3))])) if mm.group(3) else 1
        out.append((f"state.{mm.group(2)}", sizes.get(mm.group(1), 4) * count))
    return sorted(out, key=lambda x: -x[1])[:n]


def check_budget(b: dict, code: dict, name: str, flash_kb, ram_kb) -> None:
    """BudgetError naming what misses, by how much, and the largest arrays."""
    msgs = []
    if flash_kb is not None and b["flash_bytes"] > flash_kb * 1024:
        over = b["flash_bytes"] - flash_kb * 1024
        big = ", ".join(f"{a} {s} B" for a, s in largest_arrays(code))
        msgs.append(f"flash {b['flash_bytes']} B exceeds --flash-kb {flash_kb:g} ({flash_kb * 1024:.0f} B) by "
                    f"{over:.0f} B; largest const arrays: {big}")
    if ram_kb is not None and b["ram_bytes"] > ram_kb * 1024:
        over = b["ram_bytes"] - ram_kb * 1024
        big = ", ".join(f"{a} {s} B" for a, s in state_arrays(code, name))
        msgs.append(f"RAM {b['ram_bytes']} B (state {b['state_bytes']} B + stack {b['stack_bytes']} B + static "
                    f"{b['static_ram_bytes']} B) exceeds --ram-kb {ram_kb:g} ({ram_kb * 1024:.0f} B) by {over:.0f} B; "
                    f"largest state arrays: {big}")
    if msgs:
        raise BudgetError(f"{name} at {b['opt']} for {b['mcu']} does not fit: " + "; ".join(msgs))


def mcu_check(net, code: dict, src_dir: Path, name: str, mcu: str, *, xm: np.ndarray | None = None,
              ref: tuple | None = None, task: str | None = None, flash_kb=None, ram_kb=None,
              trace_tokens: int = 3, tc: Toolchain | None = None) -> dict:
    """Build at every level of :data:`OPT_LEVELS`, check the budget (at -Os), and with encoded
    inputs xm (n, L, d_in) and the engine's reference (logits (n, L, d_out), overflows (n, 4))
    run them on the emulated board, compare, and count cycles per token. ref: (logits, overflows
    per kind summed over the sequences); a sequence is verified when every logit matches at every
    level (and the overflow totals match)."""
    m = check_mcu(mcu)
    tc = tc or find_toolchain(need_qemu=xm is not None)
    work = Path(tempfile.mkdtemp(prefix="edgessm-mcu-build-"))
    try:
        builds = {}
        for opt in OPT_LEVELS:
            b = build(tc, src_dir, name, mcu, opt, work, net.d_input, net.d_output)
            b.update(mcu=mcu, state_bytes=code["state_bytes"])
            b["ram_bytes"] = b["static_ram_bytes"] + code["state_bytes"] + b["stack_bytes"]
            builds[opt] = b
        check_budget(builds[OPT_LEVELS[0]], code, name, flash_kb, ram_kb)
        res = {"target": mcu, "cpu_flags": " ".join(_cpu_flags(m)), "compiler": tc.version(),
               "cflags": " ".join(STRICT + ["-ffunction-sections", "-fdata-sections"]),
               "note": m.note, "builds": {}}
        verified_mask = None
        mism_total = compared = 0
        for opt, b in builds.items():
            entry = {k: b[k] for k in ("flash_bytes", "text_bytes", "rodata_bytes", "static_ram_bytes",
                                       "state_bytes", "stack_bytes", "ram_bytes", "app_flash_bytes",
                                       "app_ram_bytes")}
            if b["stack_unknown_callees"]:
                entry["stack_uncounted_callees"] = b["stack_unknown_callees"]
            entry["board"] = b["board"].machine
            entry["core"] = b["board"].core
            if xm is not None:
                logits, over, _ = run(tc, b, xm, net.d_output)
                d = logits != ref[0]
                got_over = dict(zip(OVERFLOW_KINDS, (int(v) for v in over.sum(0))))
                ok = ~d.reshape(d.shape[0], -1).any(1) & (got_over == ref[1])
                verified_mask = ok if verified_mask is None else verified_mask & ok
                entry.update(mismatches=int(d.sum()), compared=int(d.size), overflows=got_over,
                             overflows_engine=dict(ref[1]), verified=int(ok.sum()))
                mism_total += int(d.sum())
                compared += int(d.size)
                k = max(1, min(trace_tokens, xm.shape[1]))
                cyc = count_cycles(tc, b, xm[:1, :k], net.d_output, m.timing)
                entry.update(cyc)
                entry["us_per_token_at_80MHz"] = 1e6 * cyc["cycles_per_token"] / CLOCK_HZ
                entry["tokens_per_s_at_80MHz"] = CLOCK_HZ / cyc["cycles_per_token"]
                if task in TOKEN_RATES:
                    rate = TOKEN_RATES[task][0]
                    entry["real_time_factor"] = rate * cyc["cycles_per_token"] / CLOCK_HZ
                    entry["headroom"] = 1.0 / entry["real_time_factor"]
            res["builds"][opt] = entry
        top = dict(res["builds"][OPT_LEVELS[0]])
        for k in ("flash_bytes", "ram_bytes", "state_bytes", "stack_bytes", "static_ram_bytes", "board",
                  "core", "cycles_per_token", "instructions_per_token", "cpi", "real_time_factor",
                  "headroom", "tokens_per_s_at_80MHz"):
            if k in top:
                res[k] = top[k]
        res["opt"] = OPT_LEVELS[0]
        if xm is not None:
            res["verified"] = int(verified_mask.sum())
            res["mismatches"] = mism_total
            res["compared"] = compared
            res["n"] = int(xm.shape[0])
            res["length"] = int(xm.shape[1])
            res["qemu"] = tc.qemu_version()
            res["clock_hz"] = CLOCK_HZ
            res["timing"] = {k: TIMINGS[m.timing][k] for k in ("source", "url")}
            if task in TOKEN_RATES:
                res["token_rate_hz"], res["token_rate_source"] = TOKEN_RATES[task]
        return res
    finally:
        shutil.rmtree(work, ignore_errors=True)
