"""Packaging: every file the installed package reads is package data, presets are found through
importlib.resources from any working directory, the C build cache key covers compiler and CPU."""
import fnmatch
import os
import tomllib
from pathlib import Path

import pytest

import edgessm
from edgessm import resources
from edgessm.toolchain import build

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "edgessm"


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_data_file_is_package_data():
    globs = _pyproject()["tool"]["setuptools"]["package-data"]["edgessm"]
    data = [p.relative_to(PKG).as_posix() for p in PKG.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert "targets/cpu/kernel.c" in data and "presets/quant/loihi2.toml" in data
    left_out = [f for f in data if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert left_out == [], f"files the wheel would leave out: {left_out}"


def test_torch_requirement_is_a_range():
    deps = _pyproject()["project"]["dependencies"]
    torch = [d for d in deps if d.split(">")[0].split("=")[0].split("<")[0].strip() == "torch"]
    assert torch and "==" not in torch[0] and ">=" in torch[0], torch
    import torch as t
    from packaging.specifiers import SpecifierSet
    assert t.__version__.split("+")[0] in SpecifierSet(torch[0][len("torch"):])


def test_presets_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from edgessm.quant import QuantSpec
    from edgessm.targets.crossbar.device import load_device
    assert QuantSpec.load("w4").name == "w4"
    assert load_device("ternary").weight_bits == 2
    assert resources.preset_file("quant", "../quant/w4") is None
    assert set(resources.preset_names("quant")) >= {"loihi2", "w4", "ternary"}
    assert set(resources.preset_names("crossbar")) >= {"default", "ternary", "w5", "noisy15"}
    assert resources.package_path("targets", "cpu", "kernel.c").is_file()


def test_repo_configs_are_the_package_presets():
    for kind in ("quant", "crossbar"):
        repo = ROOT / "configs" / kind
        assert sorted(p.name for p in repo.glob("*.toml")) == \
            sorted(p.name for p in resources.preset_dir(kind).glob("*.toml"))
        for p in repo.glob("*.toml"):
            assert p.read_bytes() == (resources.preset_dir(kind) / p.name).read_bytes()


def test_build_cache_key_covers_compiler_flags_and_cpu(monkeypatch):
    base = dict(cc="cc", flags=["-O2", "-march=native"])
    k0 = build.cache_key(b"src", **base)
    assert k0 == build.cache_key(b"src", **base)
    assert k0 != build.cache_key(b"src2", **base)
    assert k0 != build.cache_key(b"src", cc="cc", flags=["-O3", "-march=native"])
    monkeypatch.setattr(build, "cpu_features", lambda: "x86_64\nflags: sse2")
    k1 = build.cache_key(b"src", **base)
    monkeypatch.setattr(build, "cpu_features", lambda: "x86_64\nflags: sse2 avx512f")
    assert build.cache_key(b"src", **base) != k1                         # another CPU kind
    assert build.cache_key(b"src", cc="cc", flags=["-O2"], native=False) == \
        build.cache_key(b"src", cc="cc", flags=["-O2"], native=False)   # portable builds are shared
    monkeypatch.setattr(build, "compiler_id", lambda cc: "/usr/bin/cc|gcc 12")
    k2 = build.cache_key(b"src", **base)
    monkeypatch.setattr(build, "compiler_id", lambda cc: "/usr/bin/cc|gcc 13")
    assert build.cache_key(b"src", **base) != k2                         # a new compiler version


def test_compiler_id_names_path_and_version():
    cc = os.environ.get("CC") or "cc"
    import shutil
    if not shutil.which(cc):
        pytest.skip("no C compiler")
    cid = build.compiler_id(cc)
    assert shutil.which(cc) in cid and len(cid.split("|")[2]) > 0
    assert build.cpu_features()


def test_version():
    assert edgessm.__version__ == _pyproject()["project"]["version"]
