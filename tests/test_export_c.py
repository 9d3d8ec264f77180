"""edgessm export-c: the generated C99, compiled with the system cc under
-std=c99 -Wall -Wextra -pedantic -Werror -O2, against the integer engine, integer for integer,
token for token: random and real sMNIST inputs, the loihi2 / w4 / ternary presets, overflow
under wrap-around and saturation (C counters = engine counters), per-channel and
non-positive shifts; the command line; bad input. Skipped only without a C compiler."""
from __future__ import annotations

import copy
import json
import re
import sys

import numpy as np
import pytest
import torch
from conftest import needs_mnist

import edgessm as es
from edgessm.errors import ConfigError, EdgessmError
from edgessm.export import CCompilerError, export_c, generate
from edgessm.quant import QuantSpec, quantize

torch.set_num_threads(1)


pytestmark = pytest.mark.usefixtures("c_compiler_and_cache")


def small_model(seed=0, H=16, N=8, layers=2, d_in=1, d_out=10):
    torch.manual_seed(seed)
    return es.SequenceModel.from_preset("neuromorphic", d_input=d_in, d_output=d_out, d_model=H,
                                        d_state=N, n_layers=layers)


def assert_exact(r, B, L, d_out=10):
    assert r["mismatches"] == 0, r
    assert r["compared"] == B * L * d_out
    assert r["encode_mismatches"] == 0
    assert r["overflows"] == r["overflows_engine"]
    assert r["sizeof_state"] == r["state_bytes"]
    assert r["verified"] is True
    assert r["c_us_per_token"] > 0
    if sys.platform.startswith("linux"):                       # ELF object: its .text size is read
        assert r["host_text_bytes"] > 0


# ---- bit-exactness -------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["loihi2", "w4", "ternary"])
def test_c_equals_engine_random_inputs(tmp_path, preset):
    m = small_model(seed=1)
    g = torch.Generator().manual_seed(2)
    X = torch.randn(16, 40, 1, generator=g)
    q = quantize(m, preset, calibration=X)
    Xv = torch.cat([X[:3], 3 * torch.randn(2, 40, 1, generator=g)])      # beyond the calibration range too
    r = export_c(q, tmp_path, name=f"tiny_{preset}", verify=Xv, min_seconds=0.01)
    assert_exact(r, 5, 40)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"tiny_{preset}.c", f"tiny_{preset}.h"]
    c = (tmp_path / f"tiny_{preset}.c").read_text()
    if preset == "ternary":    # ternary mixing weights in {-1, 0, 1}: the narrowest type
        assert re.search(r"static const int8_t tiny_ternary_mixing0_W\[16\]\[16\]", c)
        assert set(np.unique(q.integer_network().layers[0][1].W)) <= {-1, 0, 1}


@needs_mnist
def test_c_equals_engine_on_real_smnist(tmp_path):
    from edgessm.data import load_task
    m = small_model(seed=0)
    q = quantize(m, "loihi2", calibration=load_task("smnist", "train", limit=32).x)
    te = load_task("smnist", "test", limit=4)
    r = export_c(q, tmp_path, name="tiny_smnist", verify=te.x, min_seconds=0.01)
    assert_exact(r, 4, 784)


@pytest.mark.parametrize("mode", ["wrap", "saturate"])
def test_overflow_counters_equal_engine(tmp_path, mode):
    m = small_model(seed=4)
    X = torch.randn(16, 60, 1, generator=torch.Generator().manual_seed(4))
    spec = QuantSpec.from_dict({"activations": {"bits": 10, "headroom_bits": 0.0, "overflow": mode},
                                "state": {"bits": 10, "headroom_bits": 0.0, "overflow": mode},
                                "input": {"bits": 10}, "bias": {"bits": 10}, "dB": {"bits": 8}})
    q = quantize(m, spec, calibration=X[:2])            # calibrated on 2 samples: the rest overflow
    r = export_c(q, tmp_path, name="tiny_over", verify=X[:6] * 4, min_seconds=0.01)
    assert_exact(r, 6, 60)
    ov = r["overflows"]
    assert ov["state"] > 0 and ov["activations"] > 0 and ov["input"] > 0
    h = (tmp_path / "tiny_over.h").read_text()
    assert "int16_t s4d0_xr[16][4];" in h                      # 10-bit states: int16_t in the struct
    assert "TINY_OVER_INPUT_BITS 10" in h


def test_per_channel_and_non_positive_shifts(tmp_path):
    spec = QuantSpec.from_dict({"dB": {"per_channel": True}, "dC": {"per_channel": True, "bits": 10},
                                "dA": {"bits": 12}, "D": {"per_channel": True},
                                "mixing": {"method": "pow2", "bits": 6}})
    m = small_model(seed=3)
    X = torch.randn(12, 30, 1, generator=torch.Generator().manual_seed(3))
    net = copy.deepcopy(quantize(m, spec, calibration=X).integer_network())
    H = net.d_model
    cyc = np.array([-2, -1, 0, 1, 3], dtype=np.int64)
    for i, (s, mix) in enumerate(net.layers):     # shifts <= 0: exact left shifts (then saturation)
        s.sB = np.resize(np.array([-1, 0, 2, 9, 10, 11, 12], np.int64), H).reshape(H, 1)
        s.sC = np.resize(np.roll(np.array([0, -1, 3, 5, 6, 7], np.int64), i), H)
        s.sD = np.resize(np.roll(np.array([0, 5, 6, 7, -2, 8], np.int64), i), H)
        mix.shift = mix.shift - np.resize(cyc, mix.shift.shape[0])
    net.encoder.shift = np.resize(np.array([0, -1, 2, 24, 25], np.int64), H)
    assert min(int(s.sB.min()) for s, _ in net.layers) <= 0
    r = export_c(net, tmp_path, name="shifty", verify=X[:4] * 2, min_seconds=0.01)
    assert_exact(r, 4, 30)
    c = (tmp_path / "shifty.c").read_text()
    for arr in ("shifty_s4d0_sB[", "shifty_s4d0_sC[", "shifty_s4d1_sD[", "shifty_encoder_shift["):
        assert arr in c                                     # per-channel shifts as arrays
    assert r["overflows"]["activations"] > 0 or r["overflows"]["state"] > 0


def test_generated_code_is_integer_only_and_static(tmp_path):
    m = small_model(seed=5)
    X = torch.randn(8, 20, 1, generator=torch.Generator().manual_seed(5))
    q = quantize(m, "w4", calibration=X)
    code = generate(q.integer_network(), "w4net")
    c, h = code["c"], code["h"]
    step = c.split("#if defined(W4NET_FLOAT_HELPERS)")[0]
    assert not re.search(r"\b(float|double)\b", step)
    assert "malloc" not in c and "free(" not in c
    assert "EDGESSM_FLOAT_HELPERS" in h and "void w4net_encode(" in h
    # every >> shifts a non-negative operand: the floor shift's, or an unsigned sum (the
    # range-specialized round-half-up shift)
    lines = [ln.strip() for ln in c.splitlines() if ">>" in ln and not ln.lstrip().startswith(("/*", "*"))]
    assert lines
    for ln in lines:
        if ln != "return x >= 0 ? x >> s : ~(~x >> s);":
            assert ln.count(">>") == len(re.findall(r"\(\(uint(?:32|64)_t\)\(\w+\) \+ [^>]+\) >> ", ln)), ln
    arrays = re.findall(r"static const (\w+) (\w+)((?:\[\d+\])+) =", c)
    size = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4, "uint32_t": 4, "int64_t": 8}
    assert sum(size[t] * int(np.prod([int(d) for d in re.findall(r"\d+", dims)])) for t, _, dims in arrays) \
        == code["data_bytes"]
    W = q.integer_network().layers[0][1].W
    assert int(np.abs(W).max()) <= 7 and ("int8_t", "w4net_mixing0_W", "[16][16]") in arrays
    for d in ("W4NET_D_INPUT 1", "W4NET_D_OUTPUT 10", "W4NET_INPUT_BITS 16", "W4NET_OUTPUT_EXP",
              "W4NET_INPUT_EXP", "void w4net_init(w4net_state *s);", "void w4net_step(w4net_state *s"):
        assert d in h


# ---- command line --------------------------------------------------------------------------------
def _cli(argv, capsys):
    from edgessm.cli import main
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def saved_quantized(tmp_path_factory):
    m = small_model(seed=6)
    q = quantize(m, "loihi2", calibration=torch.randn(8, 30, 1, generator=torch.Generator().manual_seed(6)))
    path = tmp_path_factory.mktemp("ckpt") / "tinyq"
    es.save(q, path)
    return path


def test_cli_export_json_without_verify(tmp_path, capsys, saved_quantized):
    out = tmp_path / "c"
    rc, so, se = _cli(["export-c", str(saved_quantized), "--out", str(out), "--json"], capsys)
    assert rc == 0, se
    r = json.loads(so)
    for k in ("model", "out", "files", "verified", "mismatches", "compared", "code_bytes", "data_bytes",
              "state_bytes", "c_us_per_token", "n"):
        assert k in r
    assert r["verified"] is False and r["n"] == 0 and r["name"] == "tinyq"
    assert sorted(p.name for p in out.iterdir()) == ["tinyq.c", "tinyq.h"]
    assert r["data_bytes"] > 0 and r["state_bytes"] == 4 * 5 + 2 * 2 * 16 * 4 * 4


@needs_mnist
def test_cli_verify_quantized_and_float(tmp_path, capsys, saved_quantized):
    rc, so, se = _cli(["export-c", str(saved_quantized), "--out", str(tmp_path / "q"), "--verify", "2",
                       "--task", "smnist", "--name", "qnet", "--json"], capsys)
    assert rc == 0, se
    r = json.loads(so)
    assert r["verified"] is True and r["mismatches"] == 0 and r["compared"] == 2 * 784 * 10 and r["n"] == 2
    assert r["files"][0].endswith("qnet.h") and r["c_us_per_token"] > 0
    fpath = tmp_path / "float"                      # a float checkpoint: PTQ on the task's training data
    es.save(small_model(seed=7), fpath)
    rc, so, se = _cli(["export-c", str(fpath), "--out", str(tmp_path / "f"), "--verify", "1", "--task",
                       "smnist", "--spec", "ternary", "--calibrate", "8", "--json"], capsys)
    assert rc == 0, se
    r = json.loads(so)
    assert r["verified"] is True and r["spec"] == "ternary" and r["calibrated_now"] is True


def test_cli_unknown_model(tmp_path, capsys):
    out = tmp_path / "never"
    rc, so, se = _cli(["export-c", "no-such-model", "--out", str(out), "--json"], capsys)
    assert rc == 2 and "no checkpoint" in se and "no-such-model" in se and not so
    assert not out.exists()


@pytest.mark.parametrize("n", ["0", "-3"])
def test_cli_verify_must_be_positive(tmp_path, capsys, saved_quantized, n):
    out = tmp_path / "never"
    rc, so, se = _cli(["export-c", str(saved_quantized), "--out", str(out), f"--verify={n}"], capsys)
    assert rc == 2 and "--verify" in se and "positive" in se
    assert not out.exists()


def test_cli_out_is_a_file(tmp_path, capsys, saved_quantized):
    f = tmp_path / "afile"
    f.write_text("keep me")
    rc, so, se = _cli(["export-c", str(saved_quantized), "--out", str(f)], capsys)
    assert rc == 2 and "not a directory" in se
    assert f.read_text() == "keep me"
    rc, so, se = _cli(["export-c", str(saved_quantized), "--out", str(f / "sub")], capsys)
    assert rc == 2 and "is a file" in se


def test_unsupported_model_rejected(tmp_path, capsys):
    torch.manual_seed(0)
    std = es.SequenceModel.from_preset("standard", d_input=1, d_output=10, d_model=16, d_state=8, n_layers=1)
    with pytest.raises(ConfigError, match="cannot run this model.*norm"):
        export_c(std, tmp_path / "lib", calibration=torch.randn(2, 10, 1))
    assert not (tmp_path / "lib").exists()
    es.save(std, tmp_path / "std")
    out = tmp_path / "never"
    rc, so, se = _cli(["export-c", str(tmp_path / "std"), "--out", str(out), "--verify", "1"], capsys)
    assert rc == 2 and "cannot run this model" in se
    assert not out.exists()


def test_missing_compiler_and_bad_name(tmp_path, capsys, monkeypatch, saved_quantized):
    rc, so, se = _cli(["export-c", str(saved_quantized), "--out", str(tmp_path / "n"), "--name", "9bad-name"],
                      capsys)
    assert rc == 2 and "C identifier" in se and not (tmp_path / "n").exists()
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(CCompilerError, match="install") as e:
        export_c(es.load(saved_quantized), tmp_path / "x", verify=torch.zeros(1, 5, 1))
    assert isinstance(e.value, EdgessmError) and not (tmp_path / "x").exists()
    rc, so, se = _cli(["export-c", str(saved_quantized), "--out", str(tmp_path / "y"), "--verify", "1",
                       "--task", "smnist"], capsys)
    assert rc == 2 and "install" in se and not (tmp_path / "y").exists()
