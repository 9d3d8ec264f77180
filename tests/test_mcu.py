"""edgessm export-c --mcu: the export cross-compiled for Cortex-M cores, run on emulated boards
and compared with the integer engine logit for logit; sizes, stack and cycle counts; the
command line; bad input (unknown core, a budget the model misses, a missing toolchain).
The cross-compiling tests skip, with the reason, without the toolchain (gcc-arm-none-eabi,
libnewlib-arm-none-eabi, qemu-system-arm)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import needs_fsdd

import edgessm as es
from edgessm.cli import main
from edgessm.errors import ConfigError
from edgessm.export import export_c
from edgessm.export.mcu import (APT, MCUS, OPT_LEVELS, TIMINGS, BudgetError, ToolchainError, find_toolchain,
                                instruction_cycles, stack_usage)
from edgessm.quant import quantize

torch.set_num_threads(1)


def _toolchain_missing() -> str:
    try:
        find_toolchain()
        return ""
    except ToolchainError as e:
        return str(e)


needs_arm = pytest.mark.skipif(bool(_toolchain_missing()), reason=_toolchain_missing() or "ok")


@pytest.fixture(autouse=True)
def _cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("EDGESSM_CACHE", str(tmp_path_factory.getbasetemp() / "edgessm-cache"))


@pytest.fixture(scope="module")
def fsdd():
    """The shipped fsdd01-ternary model, quantized (PTQ loihi2) on a few training sequences,
    and 3 test sequences cut to 30 tokens."""
    from edgessm.data import load_task
    m = es.load("fsdd01-ternary")
    q = quantize(m, "loihi2", calibration=load_task("fsdd-01", "train", limit=32).x)
    X = load_task("fsdd-01", "test", limit=3).x[:, -30:]
    return q, X


@needs_arm
@needs_fsdd
def test_cortex_m4_bit_exact_sizes_and_cycles(tmp_path, fsdd):
    q, X = fsdd
    r = export_c(q, tmp_path, name="kws", verify=X, min_seconds=0.01, mcu="cortex-m4", task="fsdd-01",
                 trace_tokens=2)
    m = r["mcu"]
    assert m["verified"] == 3 and m["mismatches"] == 0 and m["compared"] == 2 * 3 * 30 * 2
    assert set(m["builds"]) == set(OPT_LEVELS)
    for opt, b in m["builds"].items():
        assert b["board"] == "mps2-an386" and b["verified"] == 3 and b["mismatches"] == 0
        assert b["overflows"] == b["overflows_engine"]
        assert b["flash_bytes"] == b["text_bytes"] + b["rodata_bytes"] > 0
        assert b["rodata_bytes"] >= r["data_bytes"] * 0.9       # the const arrays live in flash
        assert b["ram_bytes"] == b["state_bytes"] + b["stack_bytes"] + b["static_ram_bytes"]
        assert b["state_bytes"] == r["state_bytes"] and 0 < b["stack_bytes"] < 4096
        assert b["app_flash_bytes"] > b["flash_bytes"]           # harness and C library apart
        assert b["traced_tokens"] == 2 and b["instructions_min"] > 1000
        assert b["cycles_per_token"] >= b["instructions_per_token"]   # no instruction under 1 cycle
        assert 1.0 <= b["cpi"] < 3.0
        assert b["real_time_factor"] == pytest.approx(100 * b["cycles_per_token"] / 80e6)
    assert m["flash_bytes"] == m["builds"]["-Os"]["flash_bytes"]
    assert "SWCU192" in m["timing"]["source"]
    # the files are the export's, unchanged by the cross build
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kws.c", "kws.h"]


@needs_arm
@needs_fsdd
@pytest.mark.parametrize("mcu,board", [("cortex-m0plus", "microbit"), ("cortex-m7", "mps2-an500")])
def test_other_cores_bit_exact(tmp_path, fsdd, mcu, board):
    q, X = fsdd
    r = export_c(q, tmp_path, name="kws", verify=X[:1, :8], min_seconds=0.01, mcu=mcu, trace_tokens=1)
    m = r["mcu"]
    assert m["verified"] == 1 and m["mismatches"] == 0 and m["board"] == board
    assert m["note"] and "real_time_factor" not in m              # no task given: no token rate
    assert m["cycles_per_token"] > 0


@needs_arm
@needs_arm
def test_residual_network_bit_exact_on_cortex_m0plus(tmp_path):
    """Residual connections and a folded mixing batch norm, cross-compiled for the smallest core
    (32-bit, no DSP) and compared with the integer engine."""
    torch.manual_seed(6)
    m = es.SequenceModel.from_preset("neuromorphic", d_input=2, d_output=4, d_model=8, d_state=4,
                                     n_layers=2, residual=True, mix_norm=True)
    X = torch.randn(6, 12, 2)
    with torch.no_grad():
        m(X)
    q = quantize(m.eval(), "loihi2", calibration=X)
    r = export_c(q, tmp_path, name="res", verify=X[:2], min_seconds=0.01, mcu="cortex-m0plus",
                 trace_tokens=1)
    assert r["mcu"]["verified"] == 2 and r["mcu"]["mismatches"] == 0
    assert "plus the residual" in (tmp_path / "res.c").read_text()


def test_budget_miss_names_the_largest_arrays(tmp_path):
    torch.manual_seed(0)
    m = es.SequenceModel.from_preset("neuromorphic", d_input=3, d_output=10, d_model=24, d_state=8, n_layers=2)
    q = quantize(m, "loihi2", calibration=torch.randn(8, 20, 3))
    out = tmp_path / "out"
    with pytest.raises(BudgetError) as e:
        export_c(q, out, name="big", mcu="cortex-m4", flash_kb=1, ram_kb=0.5)
    msg = str(e.value)
    assert "exceeds --flash-kb 1 (1024 B) by" in msg and "largest const arrays: big_" in msg
    assert "exceeds --ram-kb 0.5 (512 B) by" in msg and "largest state arrays: state.s4d" in msg
    assert not out.exists()                                      # nothing written
    r = export_c(q, out, name="big", mcu="cortex-m4", flash_kb=64, ram_kb=16)     # fits: no run without verify
    assert r["mcu"]["flash_bytes"] <= 64 * 1024 and "verified" not in r["mcu"]


def test_unknown_mcu_lists_the_cores(tmp_path, capsys):
    rc = main(["export-c", "smnist", "--out", str(tmp_path / "o"), "--mcu", "cortex-m3"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown --mcu 'cortex-m3'" in err and all(k in err for k in MCUS)
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError, match="known: cortex-m4"):
        export_c(es.SequenceModel.from_preset("neuromorphic", d_input=1, d_output=2, d_model=4, d_state=2,
                                              n_layers=1), tmp_path, mcu="avr")
    rc = main(["export-c", "smnist", "--out", str(tmp_path / "o"), "--flash-kb", "8"])
    assert rc == 2 and "--flash-kb / --ram-kb need --mcu" in capsys.readouterr().err


def test_missing_toolchain_gives_the_apt_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))                    # no arm-none-eabi-gcc, no qemu
    with pytest.raises(ToolchainError, match="apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
                                             "qemu-system-arm"):
        find_toolchain()
    rc = main(["export-c", "smnist", "--out", str(tmp_path / "o"), "--mcu", "cortex-m4", "--verify", "2"])
    assert rc == 2 and APT in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_stack_usage_takes_the_deepest_chain(tmp_path):
    ci = tmp_path / "m.ci"
    ci.write_text('graph: { title: "m.c"\n'
                  'node: { title: "m_step" label: "m_step\\nm.c:1:6\\n40 bytes (static)" }\n'
                  'node: { title: "m_a" label: "m_a\\nm.c:2:6\\n16 bytes (static)" }\n'
                  'node: { title: "m_b" label: "m_b\\nm.c:3:6\\n8 bytes (static)" }\n'
                  'node: { title: "m_c" label: "m_c\\nm.c:4:6\\n32 bytes (static)" }\n'
                  'node: { title: "memset" label: "__builtin_memset\\n<built-in>" shape : ellipse }\n'
                  'edge: { sourcename: "m_step" targetname: "m_a" }\n'
                  'edge: { sourcename: "m_a" targetname: "m_b" }\n'
                  'edge: { sourcename: "m_step" targetname: "m_c" }\n'
                  'edge: { sourcename: "m_b" targetname: "memset" }\n}\n')
    assert stack_usage(ci, "m_step") == (40 + 32, ["memset"])


def test_instruction_timing_table():
    t = TIMINGS["cortex-m4"]
    assert instruction_cycles("smlal", "r0, r1, r2, r3", False, False, t) == ("multiply", 1)
    assert instruction_cycles("ldr", "r0, [r1, #4]", False, False, t) == ("load/store", 2)
    assert instruction_cycles("ldr.w", "r0, [r1, #4]", False, True, t) == ("load/store", 1)   # pipelined
    assert instruction_cycles("bne.n", "8000 <x>", True, False, t) == ("branch", 3)
    assert instruction_cycles("bne.n", "8000 <x>", False, False, t) == ("branch", 1)
    assert instruction_cycles("push", "{r4, r5, r6, lr}", False, False, t) == ("load/store multiple", 5)
    assert instruction_cycles("pop", "{r4, pc}", True, False, t) == ("branch", 2 + 2 + 1)
    assert instruction_cycles("adds", "r0, #1", False, False, t) == ("alu", 1)
    m0 = TIMINGS["cortex-m0"]
    assert instruction_cycles("ldr", "r0, [r1]", False, True, m0) == ("load/store", 2)      # no pipelining
    assert instruction_cycles("bl", "100 <f>", True, False, m0) == ("branch", 4)
