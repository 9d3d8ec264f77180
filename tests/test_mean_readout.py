"""A mean readout on the integer targets: the decoder runs at every token, the host keeps the
running sum of its integer outputs and divides by the token count. Quantized model (train and
eval), integer engine (numpy and C), the loihi2 target, streaming, bad states, the C export's
running sum."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import edgessm as es
from edgessm.quant import quantize
from edgessm.quant.intnet import mean_readout
from edgessm.targets.fixed import EngineState

from test_fixed import needs_cc

torch.set_num_threads(1)


def mean_model(seed=0, H=16, N=8, layers=2, d_in=2, readout="mean", **kw):
    torch.manual_seed(seed)
    return es.SequenceModel.from_preset("neuromorphic", d_input=d_in, d_output=10, d_model=H,
                                        d_state=N, n_layers=layers, readout=readout, **kw)


@pytest.fixture(scope="module")
def quantized():
    m = mean_model(residual=True)
    X = torch.randn(24, 40, 2)
    return m, quantize(m, "loihi2", calibration=X).eval(), X


def test_mean_readout_helper_continues_a_stream():
    out = np.arange(2 * 5 * 3, dtype=np.int64).reshape(2, 5, 3) - 7
    whole, total = mean_readout(out)
    assert np.array_equal(total, out.sum(1))
    assert np.allclose(whole, out.cumsum(1) / np.arange(1, 6).reshape(1, -1, 1))
    first, t1 = mean_readout(out[:, :2])
    rest, t2 = mean_readout(out[:, 2:], t1, 2)
    assert np.array_equal(np.concatenate([first, rest], 1), whole) and np.array_equal(t2, total)


def test_exact_eval_is_the_mean_of_the_integer_outputs(quantized):
    m, q, X = quantized
    x = X[:6]
    out = q.int_forward(x, all_tokens=True)                      # the decoder at every token
    total = out.sum(1)
    logits = q(x)
    ref = (total.double() / x.shape[1] * 2.0 ** int(q.exp_out)).float()
    assert torch.equal(logits, ref)
    assert torch.equal(logits.argmax(-1), total.argmax(-1))      # the sum's argmax is the mean's
    tokens = q.forward_tokens(x)
    assert torch.equal(tokens[:, -1], logits)
    assert torch.allclose(tokens[:, 0], (out[:, 0].double() * 2.0 ** int(q.exp_out)).float())
    # the float model and its quantized form agree on most predictions
    assert (m(x).argmax(-1) == logits.argmax(-1)).float().mean() >= 0.5


def test_quantized_step_equals_forward_tokens(quantized):
    _, q, X = quantized
    x = X[:3, :12]
    st = q.init_state(3)
    assert st.total is not None and st.total.shape == (3, 10)
    steps = []
    for t in range(x.shape[1]):
        y, st = q.step(x[:, t], st)
        steps.append(y)
    assert torch.equal(torch.stack(steps, 1), q.forward_tokens(x))
    assert st.t == 12 and torch.equal(st.total, q.int_forward(x).sum(1))


def test_fake_quant_train_path_averages_the_token_outputs(quantized):
    _, q, X = quantized
    q.train()
    try:
        x = X[:4, :20]
        per_token = q._fq_decoder(q._fq_features(x).transpose(1, 2))
        logits = q(x)
        assert torch.allclose(logits, per_token.mean(1), atol=1e-6)
        assert torch.allclose(q.forward_tokens(x)[:, -1], logits, atol=1e-6)
        logits.sum().backward()
        assert q.decoder.weight.grad is not None and q.encoder.weight.grad.abs().sum() > 0
    finally:
        q.zero_grad()
        q.eval()


@pytest.mark.parametrize("backend", ["numpy", pytest.param("c", marks=needs_cc)])
def test_integer_targets_equal_the_quantized_model(quantized, backend):
    _, q, X = quantized
    x = X[:5, :30]
    p = es.targets.get("loihi2").compile(q, backend=backend)
    assert p.engine.backend == backend
    r = p.check(x, batch_size=3, labels=torch.arange(5))
    assert r["mismatches"] == 0 and r["compared"] == 5 * 30 * 10
    run = p.run(x)
    assert torch.equal(run, q.forward_tokens(x))
    assert r["correct"] == int((run[:, -1].argmax(-1) == torch.arange(5)).sum())
    st, steps = p.init_state(5), []
    for t in range(x.shape[1]):
        y, st = p.step(x[:, t], st)
        steps.append(y)
    assert torch.equal(torch.stack(steps, 1), run)
    assert "host sums them" in p.cost().assumptions["readout"]
    assert p.resources()["cores"] > 0


def test_engine_state_moves_between_model_and_program(quantized):
    _, q, X = quantized
    x = X[:2, :10]
    p = es.targets.get("fixed").compile(q, backend="numpy")
    st = p.init_state(2)
    for t in range(5):
        _, st = p.step(x[:, t], st)
    st = st.to_torch()                    # continue the stream on the quantized model
    for t in range(5, 10):
        y, st = q.step(x[:, t], st)
    assert torch.equal(y, q.forward_tokens(x)[:, -1])


def test_a_state_without_its_sum_is_refused_and_left_alone(quantized):
    _, q, X = quantized
    p = es.targets.get("fixed").compile(q, backend="numpy")
    good = p.init_state(2)
    for bad in (EngineState(good.layers, {}, 0, None),                           # no running sum
                EngineState(good.layers, {}, 0, np.zeros((2, 9), np.int64)),     # wrong width
                EngineState(good.layers, {}, 0, np.zeros((2, 10), np.float64))):
        with pytest.raises(es.InputError, match="does not belong to this program"):
            p.step(X[:2, 0], bad)
    with pytest.raises(es.InputError, match="does not belong to this quantized model"):
        q.step(X[:2, 0], good.to_torch().__class__(good.to_torch().layers, {}, 0, None))
    assert not good.total.any() and good.t == 0
    # a last-token program refuses a state that carries a sum
    last = es.targets.get("fixed").compile(quantize(mean_model(readout="last"), "loihi2",
                                                    calibration=X), backend="numpy")
    with pytest.raises(es.InputError, match="does not belong to this program"):
        last.step(X[:2, 0], EngineState(last.init_state(2).layers, {}, 0, np.zeros((2, 10), np.int64)))


@needs_cc
def test_c_export_keeps_the_running_sum(quantized, tmp_path):
    """The exported C sums the logits of every token in its state (int64_t total) and predicts
    the class of the largest sum; the harness checks both against the logits it wrote, which
    are the integer engine's, token for token."""
    _, q, X = quantized
    res = es.export.export_c(q, tmp_path / "c", name="mm", verify=X[:6, :25], min_seconds=0.0)
    assert res["verified"] and res["mismatches"] == 0 and res["readout_mismatches"] == 0
    h = (tmp_path / "c" / "mm.h").read_text()
    assert "#define MM_READOUT_MEAN 1" in h and "int mm_predict(const mm_state *s);" in h
    assert "int64_t total[10];" in h and res["sizeof_state"] % 8 == 0
    last = quantize(mean_model(readout="last"), "loihi2", calibration=X)
    r2 = es.export.export_c(last, tmp_path / "c2", name="ml", verify=X[:2, :10], min_seconds=0.0)
    h2 = (tmp_path / "c2" / "ml.h").read_text()
    assert r2["verified"] and "#define ML_READOUT_MEAN 0" in h2
    assert "int64_t total" not in h2 and "ml_predict" not in h2


def test_a_saved_mean_readout_model_deploys_as_it_ran(quantized, tmp_path):
    _, q, X = quantized
    es.save(q, tmp_path / "q")
    back = es.load(tmp_path / "q").eval()
    assert back.config.readout == "mean" and back.integer_network().readout == "mean"
    assert torch.equal(back(X[:4]), q(X[:4]))
    p = es.targets.get("loihi2").compile(back, backend="numpy")      # no calibration: as saved
    assert torch.equal(p.run(X[:4])[:, -1], q(X[:4]))


def test_engine_logits_keep_sums_float32_would_tie():
    """The training loop's evaluation on the integer engine takes the mean readout's argmax in
    float64, as the deployment does: two sums 1 apart near 2^30 round to the same float32."""
    from types import SimpleNamespace
    from edgessm.train.loop import _engine_logits
    L = 4
    out = np.zeros((1, L, 3), dtype=np.int64)
    out[0, :, 0] = 2**28                                     # sums 2^30 and 2^30 + 1
    out[0, :, 1] = 2**28
    out[0, 0, 1] += 1
    net = SimpleNamespace(in_exp=-7, in_bits=8, readout="mean", out_exp=0)
    eng = SimpleNamespace(net=net, _over=lambda *a: None, run_int=lambda xm: (out,))
    logits = _engine_logits(eng, torch.zeros(1, L, 1))
    assert logits.dtype == torch.float64 and int(logits.argmax(-1)) == 1
    assert float(logits[0, 0].float()) == float(logits[0, 1].float())   # float32 would tie them


def test_model_exact_logits_keep_sums_float32_would_tie(quantized, monkeypatch):
    """The model's own integer path (evaluations too small for the engine) gives the same
    float64 logits: `exact_logits`, whose argmax the training loop's evaluation reads; the eval
    forward is them rounded to float32, which ties the two classes."""
    from edgessm.data import SequenceDataset, TaskInfo
    from edgessm.train.loop import _integer_engine, evaluate
    _, q, X = quantized
    x = X[:6]
    ref = q(x)
    assert torch.equal(q.exact_logits(x).float(), ref)           # the forward is them, rounded
    L = 4
    out = torch.zeros(1, L, 10, dtype=torch.int64)
    out[0, :, 0] = 2**28
    out[0, :, 1] = 2**28
    out[0, 0, 1] += 1
    monkeypatch.setattr(q, "int_forward", lambda x, all_tokens=True: out)
    monkeypatch.setattr(q, "exp_out", torch.tensor(0))
    x1 = torch.zeros(1, L, 2)
    logits = q.exact_logits(x1)
    assert logits.dtype == torch.float64 and int(logits.argmax(-1)) == 1
    tied = q(x1)
    assert float(tied[0, 0]) == float(tied[0, 1])                # float32 ties them
    ds = SequenceDataset(x1, torch.tensor([1]), TaskInfo("tie", 2, 10, L, "two classes 1 apart"))
    assert _integer_engine(q, ds, torch.device("cpu")) is None   # the model's own path
    assert evaluate(q, ds)["accuracy"] == 1.0


def test_exact_logits_reject_bad_input(quantized):
    _, q, _ = quantized
    with pytest.raises(es.InputError):
        q.exact_logits(torch.zeros(2, 5, 3))
