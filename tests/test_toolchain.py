"""The C toolchain (edgessm.toolchain): compiler discovery and its errors, the build cache key,
atomic builds, rebuilding a damaged cached library, compile errors, ELF section sizes."""
from __future__ import annotations

import ctypes
import shutil
import threading

import pytest

from edgessm import toolchain
from edgessm.errors import EdgessmError, ToolchainError
from edgessm.toolchain import build

SRC = "int edgessm_test_answer(void) { return %d; }\n"


def _have_cc() -> bool:
    try:
        toolchain.find_cc()
        return True
    except ToolchainError:
        return False


needs_cc = pytest.mark.skipif(not _have_cc(), reason="no C compiler (cc, gcc or clang) on PATH")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESSM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "build"


def _answer(lib) -> int:
    lib.edgessm_test_answer.restype = ctypes.c_int
    return lib.edgessm_test_answer()


def test_missing_compiler_names_what_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))                    # nothing on PATH
    with pytest.raises(ToolchainError) as e:
        toolchain.find_cc("the test build", "skip it")
    msg = str(e.value)
    assert isinstance(e.value, EdgessmError)
    assert msg.startswith("the test build needs a C99 compiler")
    assert "cc, gcc, clang" in msg and "CC" in msg and "apt-get install gcc" in msg and msg.endswith("or skip it")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(ToolchainError, match="cannot run the C compiler CC=.*no-such-cc.*unset CC"):
        toolchain.find_cc()
    lib = toolchain.NativeLib(tmp_path / "x.c", ["-shared"], bind=lambda lib: None, purpose="the test library")
    ok, why = lib.available()
    assert not ok and why.startswith("the test library needs a C99 compiler")
    with pytest.raises(ToolchainError, match="the test library needs a C99 compiler"):
        lib.require()
    import warnings
    with warnings.catch_warnings(record=True) as w:       # a caller's fallback: one warning, ever
        warnings.simplefilter("always")
        for _ in range(3):
            lib.warn_unavailable("the test kernel", "running the slow path", stacklevel=1)
    assert [str(x.message) for x in w] == [
        f"the test kernel: native kernel unavailable ({why}); running the slow path"]
    assert w[0].category is RuntimeWarning and w[0].filename == __file__


def test_cache_key_changes_with_flags_compiler_and_cpu(monkeypatch):
    k = dict(cc="cc", flags=["-O2", "-march=native"])
    k0 = build.cache_key(b"src", **k)
    assert k0 == build.cache_key(b"src", **k)
    assert k0 != build.cache_key(b"src", cc="cc", flags=["-O2", "-march=native", "-fPIC"])
    monkeypatch.setattr(build, "compiler_id", lambda cc: "/usr/bin/cc|/usr/bin/gcc-13|gcc 13.2")
    k1 = build.cache_key(b"src", **k)
    monkeypatch.setattr(build, "compiler_id", lambda cc: "/usr/bin/cc|/usr/bin/gcc-14|gcc 14.1")
    assert build.cache_key(b"src", **k) != k1
    monkeypatch.setattr(build, "cpu_features", lambda: "x86_64\nflags: sse2 avx2")
    k2 = build.cache_key(b"src", **k)
    portable = build.cache_key(b"src", cc="cc", flags=["-O2"], native=False)
    monkeypatch.setattr(build, "cpu_features", lambda: "x86_64\nflags: sse2 avx2 avx512f")
    assert build.cache_key(b"src", **k) != k2                                  # another CPU kind
    assert build.cache_key(b"src", cc="cc", flags=["-O2"], native=False) == portable
    assert build.is_native(["-O2", "-mcpu=cortex-a72"]) and not build.is_native(["-O2", "-fPIC"])


@needs_cc
def test_library_path_follows_flags_compiler_and_cpu(tmp_path, cache, monkeypatch):
    src = tmp_path / "answer.c"
    src.write_text(SRC % 7)
    flags = ["-O2", "-fPIC", "-shared"]
    p0 = toolchain.shared_library(src, flags)
    assert p0.parent == cache and p0.name.startswith("answer-") and p0.suffix == ".so"
    assert toolchain.shared_library(src, flags) == p0                             # cached
    assert toolchain.shared_library(src, flags + ["-g"]) != p0
    monkeypatch.setattr(build, "compiler_id", lambda cc: "another compiler")
    assert toolchain.shared_library(src, flags) != p0
    monkeypatch.undo()
    monkeypatch.setenv("EDGESSM_CACHE", str(cache.parent))
    native = flags + ["-march=native"]
    p1 = toolchain.shared_library(src, native)
    monkeypatch.setattr(build, "cpu_features", lambda: "another CPU")
    assert toolchain.shared_library(src, native) != p1
    assert toolchain.shared_library(src, flags) == p0                             # portable: CPU not in key
    src.write_text(SRC % 8)
    assert toolchain.shared_library(src, flags) != p0                             # the source text
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]            # no temporary left


@needs_cc
def test_a_damaged_cached_library_is_rebuilt(tmp_path, cache):
    src = tmp_path / "damaged.c"
    src.write_text(SRC % 41)
    flags = ["-O2", "-fPIC", "-shared"]
    path = toolchain.shared_library(src, flags)
    path.write_bytes(b"\x7fELF truncated")
    lib = toolchain.load_shared(src, flags)
    assert _answer(lib) == 41 and lib.path == path and path.stat().st_size > 100
    files = {"n.h": "#define N 5\n", "n.c": '#include "n.h"\nint edgessm_test_answer(void) { return N; }\n'}
    assert _answer(toolchain.load_shared(files, flags, subdir="texts")) == 5
    assert toolchain.shared_library(files, flags, subdir="texts").parent == cache / "texts"


@needs_cc
def test_compile_errors_show_the_compilers_output(tmp_path, cache):
    src = tmp_path / "broken.c"
    src.write_text("int f(void) { return undeclared_name_here; }\n")
    with pytest.raises(ToolchainError) as e:
        toolchain.shared_library(src, ["-O2", "-fPIC", "-shared"])
    msg = str(e.value)
    assert "compiling broken.c" in msg and "failed" in msg and "undeclared_name_here" in msg
    assert not cache.exists() or not list(cache.iterdir())                      # nothing half-written
    lib = toolchain.NativeLib(src, ["-O2", "-fPIC", "-shared"], bind=lambda lib: None)
    assert lib.get() is None and "compiling broken.c" in lib.why and "undeclared_name_here" in lib.error
    assert lib.get() is None                                                    # remembered, not retried


@needs_cc
def test_native_lib_tries_each_flag_set_and_builds_once_under_threads(tmp_path, cache):
    src = tmp_path / "threads.c"
    src.write_text(SRC % 3)
    bound = []
    lib = toolchain.NativeLib(src, ["-O2", "-fPIC", "-shared", "-fno-such-flag-for-edgessm"],
                              ["-O2", "-fPIC", "-shared"], bind=bound.append)
    got = []
    ts = [threading.Thread(target=lambda: got.append(lib.get())) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(bound) == 1 and all(g is got[0] for g in got) and _answer(got[0]) == 3
    assert lib.available() == (True, "")


@needs_cc
def test_elf_section_sizes(tmp_path):
    cc = toolchain.find_cc()
    src = tmp_path / "data.c"
    src.write_text("const unsigned char table[3000] = {1, 2, 3};\nint f(int x) { return table[x]; }\n")
    obj = toolchain.compile_into(tmp_path / "data.o", [cc, "-O2", "-c", str(src)], "compiling data.c")
    rodata = toolchain.section_bytes(obj, ".rodata")
    if rodata is None:
        pytest.skip("the host's objects are not ELF")
    assert rodata >= 3000 and toolchain.section_bytes(obj, ".text") > 0
    assert toolchain.sections_bytes(obj, (".text", ".rodata")) == rodata + toolchain.section_bytes(obj, ".text")
    assert toolchain.section_bytes(obj, ".no_such_section") == 0
    assert toolchain.section_bytes(src, ".text") is None                       # not ELF
    assert toolchain.section_bytes(tmp_path / "missing.o", ".text") is None


def test_missing_cross_toolchain_names_the_apt_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainError, match="arm-none-eabi-gcc.*qemu-system-arm.*" + toolchain.APT.replace(" ", ".")):
        toolchain.find_arm_toolchain()


def test_compiler_id_names_path_and_version():
    if not _have_cc():
        pytest.skip("no C compiler")
    cc = toolchain.find_cc()
    cid = toolchain.compiler_id(cc)
    assert cid.split("|")[0] == shutil.which(cc) and cid.split("|")[2]
