"""The fast CPU engine under threads: N threads x M streams give the sequential run bit for bit."""
import threading

import numpy as np
import pytest
import torch

import edgessm as es
from edgessm.targets.cpu.engine import FastProgram

THREADS, STREAMS, TOKENS = 4, 3, 150


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return es.SequenceModel.from_preset("standard", d_input=2, d_output=5, d_model=64, d_state=32,
                                        n_layers=2).eval()


@pytest.fixture(scope="module")
def xs():
    rng = np.random.default_rng(1)
    return rng.standard_normal((THREADS, STREAMS, TOKENS, 2)).astype(np.float32)


def _run_threads(fn):
    errors = []
    barrier = threading.Barrier(THREADS)

    def body(i):
        try:
            barrier.wait()
            fn(i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    ts = [threading.Thread(target=body, args=(i,)) for i in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


def _program_outputs(prog, xs, threaded):
    """Each thread steps its own batch-1 and batch-STREAMS states token by token."""
    outs = np.zeros((THREADS, STREAMS, TOKENS, 5), np.float32)
    outb = np.zeros((THREADS, TOKENS, STREAMS, 5), np.float32)
    states = {}

    def work(i):
        single = [prog.init_state(1) for _ in range(STREAMS)]
        batch = prog.init_state(STREAMS)
        for t in range(TOKENS):
            for s in range(STREAMS):
                prog.step_numpy(xs[i, s, t:t + 1], single[s], outs[i, s, t:t + 1])
            prog.step_numpy(xs[i, :, t], batch, outb[i, t])
        states[i] = (np.stack([s.buf[0] for s in single]), batch.buf.copy())
    if threaded:
        _run_threads(work)
    else:
        for i in range(THREADS):
            work(i)
    return outs, outb, states


def test_threads_on_one_program_equal_sequential(net, xs):
    prog = FastProgram(net)
    seq = _program_outputs(prog, xs, threaded=False)
    par = _program_outputs(prog, xs, threaded=True)
    np.testing.assert_array_equal(par[0], seq[0])
    np.testing.assert_array_equal(par[1], seq[1])
    for i in range(THREADS):
        np.testing.assert_array_equal(par[2][i][0], seq[2][i][0])
        np.testing.assert_array_equal(par[2][i][1], seq[2][i][1])


def _pool_outputs(pools, xs, threaded):
    """Thread i owns STREAMS streams of pools[i % len(pools)]: push (chunks) and push_many."""
    outs = np.zeros((THREADS, STREAMS, TOKENS, 5), np.float32)
    ids = {}
    for i in range(THREADS):
        ids[i] = [pools[i % len(pools)].open() for _ in range(STREAMS)]

    def work(i):
        pool = pools[i % len(pools)]
        half = TOKENS // 2
        for s, sid in enumerate(ids[i]):
            for t in range(0, half, 5):
                outs[i, s, t:t + 5] = pool.push(sid, xs[i, s, t:t + 5])
        for t in range(half, TOKENS):
            r = pool.push_many({sid: xs[i, s, t] for s, sid in enumerate(ids[i])})
            for s, sid in enumerate(ids[i]):
                outs[i, s, t] = r[sid]
    if threaded:
        _run_threads(work)
    else:
        for i in range(THREADS):
            work(i)
    rows = np.stack([pools[i % len(pools)]._states[ids[i]] for i in range(THREADS)])
    return outs, rows


@pytest.mark.parametrize("n_pools", [1, 2])
def test_threads_on_pools_equal_sequential(net, xs, n_pools):
    prog = FastProgram(net)
    seq = _pool_outputs([es.StreamPool(prog, capacity=THREADS * STREAMS) for _ in range(n_pools)], xs, False)
    par = _pool_outputs([es.StreamPool(prog, capacity=THREADS * STREAMS) for _ in range(n_pools)], xs, True)
    np.testing.assert_array_equal(par[0], seq[0])
    np.testing.assert_array_equal(par[1], seq[1])
