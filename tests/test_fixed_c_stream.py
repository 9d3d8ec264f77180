"""The integer C step of the engine's compiled backend, one stream, one C call per token
(Engine.c_stream, what `bench stream` times as fixed-c): equal to the numpy integer engine
token for token; and the timing behind the fixed-c row of bench stream."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import edgessm as es
from edgessm.errors import ConfigError
from edgessm.quant import quantize
from edgessm.quant.fixedpoint import quantize_input_np
from edgessm.targets.fixed.engine import Engine

torch.set_num_threads(1)


pytestmark = pytest.mark.usefixtures("c_compiler_and_cache")


def _model(seed, d_in=2):
    torch.manual_seed(seed)
    return es.SequenceModel.from_preset("neuromorphic", d_input=d_in, d_output=5, d_model=16, d_state=8,
                                        n_layers=2)


def _quantized(preset):
    g = torch.Generator().manual_seed(3)
    X = torch.randn(8, 30, 2, generator=g)
    return quantize(_model(1), preset, calibration=X), g, X


@pytest.mark.parametrize("preset", ["loihi2"])
def test_c_stream_equals_numpy_engine(preset):
    q, g, X = _quantized(preset)
    net = q.integer_network()
    Xv = torch.cat([X[:1], 4 * torch.randn(1, 30, 2, generator=g)]).numpy()   # beyond calibration too
    xm, _ = quantize_input_np(Xv, net.in_exp, net.in_bits)
    ref = Engine(net, backend="numpy")
    cs = Engine(net, backend="c").c_stream()
    for b in range(xm.shape[0]):
        st = ref.init_state(1)
        cs.reset()
        for t in range(xm.shape[1]):
            want, st = ref.step_int(np.ascontiguousarray(xm[b:b + 1, t]), st)
            got = cs.step(xm[b, t].astype(np.int32))
            assert got.dtype == np.int32 and np.array_equal(got.astype(np.int64), want[0]), (preset, b, t)


def test_c_stream_needs_the_c_backend():
    q = quantize(_model(2), "loihi2", calibration=torch.randn(4, 10, 2))
    with pytest.raises(ConfigError, match="C backend"):
        Engine(q.integer_network(), backend="numpy").c_stream()


def test_bench_fixed_c_times_both_steps():
    from edgessm.bench.fixed import bench_fixed_c
    from edgessm.targets import get
    q, _, _ = _quantized("loihi2")                     # the library compiled above: cached
    r = bench_fixed_c(q, get("cpu").compile(q), tokens=20, repeats=1)
    assert r["us_per_step"] > 0 and r["float_us_per_step"] > 0 and r["ratio_to_cpu_fast"] > 0
    assert r["quantization"].startswith("as quantized") and r["spec"] == "loihi2"
