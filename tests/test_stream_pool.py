"""StreamPool: independent streams of different lengths, fixed memory, bad tokens rejected."""
import numpy as np
import pytest
import torch

import edgessm as es


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return es.SequenceModel.from_preset("standard", d_input=2, d_output=3, d_model=8, d_state=4,
                                        n_layers=2).eval()


def _ref(net, x):
    with torch.no_grad():
        return net.forward_tokens(torch.as_tensor(x)[None].float())[0].numpy()


def test_interleaved_streams_match_isolated_runs(net):
    pool = es.StreamPool(net, capacity=4)
    rng = np.random.default_rng(0)
    xa, xb, xc = (rng.standard_normal((n, 2)).astype(np.float32) for n in (40, 25, 60))
    a, b = pool.open(), pool.open()
    ya = [pool.push(a, xa[:10])]
    yb = [pool.push(b, xb[:5])]
    c = pool.open()
    yc = [pool.push(c, xc[:30])]
    for t in range(10, 25):  # one token each, in one call
        r = pool.push_many({a: xa[t], b: xb[t], c: xc[t + 20]})
        ya.append(r[a][None]); yb.append(r[b][None]); yc.append(r[c][None])
    # reconstruct the token sequences each stream actually saw
    seen_b = np.concatenate([xb[:5], xb[10:25]])
    seen_c = np.concatenate([xc[:30], xc[30:45]])
    ya.append(pool.push(a, xa[25:]))
    np.testing.assert_allclose(np.concatenate(ya), _ref(net, xa), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.concatenate(yb), _ref(net, seen_b), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.concatenate(yc), _ref(net, seen_c), rtol=1e-4, atol=1e-5)
    assert pool.tokens_seen(a) == 40 and pool.tokens_seen(b) == 20 and pool.tokens_seen(c) == 45


def test_bad_tokens_touch_nothing(net):
    pool = es.StreamPool(net, capacity=3)
    a, b = pool.open(), pool.open()
    pool.push(a, np.ones((3, 2)))
    pool.push(b, np.ones((2, 2)))
    snap = pool._states.copy(), pool._t.copy()
    for bad in ([[np.nan, 0.0]], np.ones((2, 3)), np.ones((2, 2, 2)), np.array([["a", "b"]])):
        with pytest.raises(es.InputError):
            pool.push(a, bad)
    with pytest.raises(es.InputError, match="NaN"):
        pool.push_many({a: [0.0, 0.0], b: [np.inf, 0.0]})  # b is bad: a must not advance either
    assert np.array_equal(pool._states, snap[0]) and np.array_equal(pool._t, snap[1])


def test_lifecycle_and_fixed_memory(net):
    pool = es.StreamPool(net, capacity=2)
    nbytes = pool._states.nbytes
    a, b = pool.open(), pool.open()
    with pytest.raises(es.InputError, match="full"):
        pool.open()
    y1 = pool.push(a, np.ones((5, 2)))
    pool.reset(a)
    np.testing.assert_array_equal(pool.push(a, np.ones((5, 2))), y1)
    pool.close(b)
    with pytest.raises(es.InputError, match="not open"):
        pool.push(b, np.ones((1, 2)))
    c = pool.open()
    assert pool.tokens_seen(c) == 0 and pool._states.nbytes == nbytes
    assert pool.state_bytes_per_stream == 4 * (2 * 8 * 2 * 2 + 8)
    with pytest.raises(es.ConfigError):
        es.StreamPool(net, capacity=0)
