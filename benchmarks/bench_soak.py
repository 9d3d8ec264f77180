"""Soak: many concurrent streams over many threads on one StreamPool for minutes; memory must
stay flat and every stream's outputs must equal a sequential replay bit for bit.

    python benchmarks/bench_soak.py [--minutes 3] [--threads 8] [--streams 256] [--record]

Each thread owns streams/threads streams of one shared pool (model: shipped `smnist`) and, in
a seeded random order, pushes chunks of 1-64 tokens to one stream (`push`), one token to all
of its streams (`push_many`), or closes a stream and opens a new one. Every output is folded
into a per-stream hash. Afterwards each thread's event sequence is replayed in one thread on
a fresh pool and the hashes compared. Resident memory (RSS) is sampled every second; the
figure of merit is its growth after the first 10% of the run.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import threading
import time

import numpy as np

import edgessm as es

from common import append_results, emit


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(pool, k: int, n_streams: int, seed: int, stop, counts: list, hashes: dict, steps: int | None):
    """One thread's seeded event sequence on its own streams; with `steps`, exactly that many."""
    rng = random.Random(seed)
    data = np.random.default_rng(seed)
    d = pool.d_input
    sids = [pool.open() for _ in range(n_streams)]
    life = [0] * n_streams                    # lifetime number of each slot, for the hash keys
    h = {(j, 0): hashlib.blake2b(digest_size=16) for j in range(n_streams)}
    done = tokens = 0
    while (steps is None and not stop.is_set()) or (steps is not None and done < steps):
        r = rng.random()
        if r < 0.6:
            j = rng.randrange(n_streams)
            x = data.standard_normal((rng.randint(1, 64), d)).astype(np.float32)
            h[(j, life[j])].update(pool.push(sids[j], x).tobytes())
            tokens += len(x)
        elif r < 0.97:
            x = data.standard_normal((n_streams, d)).astype(np.float32)
            out = pool.push_many({sid: x[j] for j, sid in enumerate(sids)})
            for j, sid in enumerate(sids):
                h[(j, life[j])].update(out[sid].tobytes())
            tokens += n_streams
        else:
            j = rng.randrange(n_streams)
            pool.close(sids[j])
            sids[j] = pool.open()
            life[j] += 1
            h[(j, life[j])] = hashlib.blake2b(digest_size=16)
        done += 1
    counts[k] = (done, tokens)
    hashes[k] = {key: v.hexdigest() for key, v in h.items()}
    for sid in sids:
        pool.close(sid)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--streams", type=int, default=256)
    ap.add_argument("--record", action="store_true")
    a = ap.parse_args()
    net = es.load("smnist")
    per = a.streams // a.threads
    pool = es.StreamPool(net, capacity=per * a.threads)
    stop = threading.Event()
    counts, hashes = [None] * a.threads, {}
    ts = [threading.Thread(target=worker, args=(pool, k, per, 1000 + k, stop, counts, hashes, None))
          for k in range(a.threads)]
    rss, t0 = [], time.time()
    for t in ts:
        t.start()
    while time.time() - t0 < 60 * a.minutes:
        time.sleep(1.0)
        rss.append((time.time() - t0, rss_mb()))
    stop.set()
    for t in ts:
        t.join()
    wall = time.time() - t0
    tokens = sum(c[1] for c in counts)
    # sequential replay: each thread's events, one thread, a fresh pool
    replay_pool = es.StreamPool(net, capacity=per)
    mismatched = 0
    t1 = time.time()
    for k in range(a.threads):
        rc, rh = [None] * a.threads, {}
        worker(replay_pool, k, per, 1000 + k, None, rc, rh, counts[k][0])
        mismatched += sum(rh[k][key] != v for key, v in hashes[k].items())
    replay_s = time.time() - t1
    warm = [m for s, m in rss if s >= 0.1 * wall] or [rss[-1][1]]
    rec = {"bench": "soak", "model": "smnist", "threads": a.threads, "streams": per * a.threads,
           "minutes": wall / 60, "tokens": tokens, "tokens_per_s": tokens / wall,
           "stream_lifetimes": sum(len(h) for h in hashes.values()), "mismatched_lifetimes": mismatched,
           "rss_mb_start": warm[0], "rss_mb_end": warm[-1], "rss_mb_max": max(m for _, m in rss),
           "rss_growth_mb": warm[-1] - warm[0], "replay_tokens_per_s": tokens / replay_s}
    emit(rec)
    if a.record:
        append_results("Soak: concurrent streams over threads on one StreamPool", [
            "| threads | streams | minutes | tokens | tokens/s (threads) | tokens/s (sequential replay) | "
            "stream lifetimes | mismatches vs replay | RSS after 10% / end / max (MB) |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {a.threads} | {rec['streams']} | {rec['minutes']:.1f} | {tokens:,} | {rec['tokens_per_s']:,.0f} | "
            f"{rec['replay_tokens_per_s']:,.0f} | {rec['stream_lifetimes']} | {mismatched} | "
            f"{rec['rss_mb_start']:.1f} / {rec['rss_mb_end']:.1f} / {rec['rss_mb_max']:.1f} |"],
            notes="Model: shipped `smnist`. Each thread feeds its own streams of one shared pool in a seeded "
                  "random order (chunks of 1-64 tokens by `push`, one token to all its streams by "
                  "`push_many`, 3% close-and-reopen); every output is hashed per stream lifetime and "
                  "compared with a one-thread replay of the same events on a fresh pool. The machine was "
                  "shared with other jobs while this ran, so the throughputs are indicative only.")


if __name__ == "__main__":
    main()
