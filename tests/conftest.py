import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

DATA = Path(os.environ.get("EDGESSM_DATA", Path.home() / ".cache" / "edgessm"))


def have(*rel: str) -> bool:
    return all((DATA / r).exists() for r in rel)


needs_mnist = pytest.mark.skipif(not have("mnist/t10k-images-idx3-ubyte.gz"),
                                 reason=f"MNIST not under data root {DATA} (set EDGESSM_DATA)")
needs_cifar = pytest.mark.skipif(not have("cifar10/cifar10_train.npz", "cifar10/cifar10_test.npz"),
                                 reason=f"CIFAR-10 (npz) not under data root {DATA} (set EDGESSM_DATA)")
needs_fsdd = pytest.mark.skipif(not have("fsdd/recordings"),
                                reason=f"FSDD not under data root {DATA} (set EDGESSM_DATA)")


@pytest.fixture
def c_compiler_and_cache(monkeypatch, tmp_path_factory):
    """Skip without a C compiler; keep compiled harnesses out of the user's cache."""
    from edgessm.export import CCompilerError, find_compiler
    try:
        find_compiler()
    except CCompilerError:
        pytest.skip("no C compiler (cc, gcc or clang) on PATH")
    monkeypatch.setenv("EDGESSM_CACHE", str(tmp_path_factory.getbasetemp() / "edgessm-cache"))
