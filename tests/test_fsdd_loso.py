"""FSDD for unseen speakers: per-utterance normalization, training augmentation, the [data]
options and their rules, exact resume with augmentation, leave-one-speaker-out folds."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import edgessm as es
from edgessm.data import load_task
from edgessm.data.fsdd import FSDD_SEQ_LEN, Augment
from edgessm.train import from_dict, load_config, train

from conftest import needs_fsdd

ROOT = Path(__file__).resolve().parents[1]
AUG = {"aug_snr_db": 10.0, "aug_gain_db": 6.0, "aug_shift_ms": 100.0, "aug_stretch": 0.1,
       "aug_time_masks": 2, "aug_time_mask_frames": 20, "aug_freq_masks": 2, "aug_freq_mask_channels": 4,
       "aug_warp": 0.1}
TINY = {"model": {"preset": "neuromorphic", "d_model": 8, "d_state": 4, "n_layers": 1},
        "data": {"task": "fsdd-01", "limit_train": 64, "limit_val": 16, "limit_test": 16,
                 "speaker_holdout": "theo", "val_speaker": "lucas", "normalize": "cmn",
                 "top_db": 50.0, "trim_db": 40.0, **AUG},
        "train": {"epochs": 2, "batch_size": 16, "seed": 3, "warmup_epochs": 0.5, "threads": 1,
                  "label_smoothing": 0.1, "mixup": 0.4}}


@pytest.mark.parametrize("key, value, match", [
    ("aug_snr_db", -3.0, r"aug_snr_db must be a finite number >= 0 and <= 60"),
    ("aug_snr_db", 61.0, r"aug_snr_db"),
    ("aug_gain_db", 25.0, r"aug_gain_db must be .* <= 20"),
    ("aug_shift_ms", -1.0, r"aug_shift_ms"),
    ("aug_stretch", 0.6, r"aug_stretch must be .* <= 0.5"),
    ("aug_time_masks", 11, r"aug_time_masks"),
    ("aug_time_mask_frames", 101, r"aug_time_mask_frames"),
    ("aug_freq_mask_channels", 17, r"aug_freq_mask_channels"),
    ("normalize", "global", r"normalize must be one of train, cmn, cmvn"),
    ("aug_gain_db", "6", r"aug_gain_db"),
    ("aug_warp", 0.3, r"aug_warp must be a finite number >= 0 and <= 0.2"),
    ("aug_warp", -0.05, r"aug_warp must be a finite number >= 0"),
    ("val_speaker", 3, r"val_speaker"),
    ("top_db", -1.0, r"top_db must be a finite number >= 0 and <= 120"),
    ("top_db", 121.0, r"top_db must be .* <= 120"),
    ("trim_db", -5.0, r"trim_db must be a finite number >= 0 and <= 120"),
])
def test_data_option_out_of_range_is_a_config_error(key, value, match):
    d = {"task": "fsdd-01", key: value}
    with pytest.raises(es.ConfigError, match=match):
        from_dict({"data": d})


def test_masks_need_count_and_width_and_fsdd_options_need_fsdd():
    with pytest.raises(es.ConfigError, match="aug_time_masks and aug_time_mask_frames go together"):
        from_dict({"data": {"task": "fsdd", "aug_time_masks": 2}})
    with pytest.raises(es.ConfigError, match="aug_freq_masks and aug_freq_mask_channels go together"):
        from_dict({"data": {"task": "fsdd", "aug_freq_mask_channels": 3}})
    with pytest.raises(es.ConfigError, match="apply to the tasks fsdd, fsdd-01 only"):
        from_dict({"data": {"task": "smnist", "aug_gain_db": 3.0}})
    with pytest.raises(es.ConfigError, match="apply to the tasks fsdd, fsdd-01 only"):
        from_dict({"data": {"task": "smnist", "normalize": "cmn"}})
    with pytest.raises(es.ConfigError, match="normalize applies to the tasks fsdd, fsdd-01 only"):
        load_task("smnist", "test", normalize="cmn")
    with pytest.raises(es.ConfigError, match="train split of the tasks fsdd, fsdd-01 only"):
        load_task("fsdd", "test", augment=Augment(gain_db=3.0))
    with pytest.raises(es.ConfigError, match="apply to the tasks fsdd, fsdd-01 only"):
        from_dict({"data": {"task": "smnist", "aug_warp": 0.1}})
    with pytest.raises(es.ConfigError, match="apply to the tasks fsdd, fsdd-01 only"):
        from_dict({"data": {"task": "smnist", "val_speaker": "theo"}})
    with pytest.raises(es.ConfigError, match="val_speaker applies to the tasks fsdd, fsdd-01 only"):
        load_task("smnist", "val", val_speaker="theo")
    with pytest.raises(es.ConfigError, match="val_speaker must differ from speaker_holdout"):
        from_dict({"data": {"task": "fsdd", "speaker_holdout": "theo", "val_speaker": "Theo"}})
    with pytest.raises(es.ConfigError, match="apply to the tasks fsdd, fsdd-01 only"):
        from_dict({"data": {"task": "smnist", "top_db": 50.0}})
    with pytest.raises(es.ConfigError, match="top_db applies to the tasks fsdd, fsdd-01 only"):
        load_task("smnist", "val", top_db=50.0)
    for bad in (-1.0, 200.0, float("nan"), "50", True):
        with pytest.raises(es.ConfigError, match=r"top_db must be a finite number in \[0, 120\] dB"):
            load_task("fsdd", "val", top_db=bad)
    with pytest.raises(es.ConfigError, match=r"trim_db must be a finite number in \[0, 120\] dB"):
        load_task("fsdd", "val", trim_db=-1.0)
    with pytest.raises(es.ConfigError, match="trim_db applies to the tasks fsdd, fsdd-01 only"):
        load_task("smnist", "val", trim_db=30.0)


def test_vtlp_warp():
    from edgessm.data.audio import FrontEnd, hz_to_mel, mel_filterbank, mel_to_hz, vtlp_warp
    f = np.linspace(0, 4000, 513)
    for alpha in (0.8, 0.9, 1.0, 1.1, 1.2):
        g = vtlp_warp(f, alpha, 4000.0)
        assert g[0] == 0 and abs(g[-1] - 4000.0) < 1e-9 and np.all(np.diff(g) > 0)
        low = f <= 0.8 * 4000 * min(alpha, 1) / alpha
        assert np.allclose(g[low], alpha * f[low])
    assert np.array_equal(mel_filterbank(warp=1.0), mel_filterbank())
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(es.ConfigError, match="warp factor must be a finite number > 0"):
            vtlp_warp(f, bad, 4000.0)
    # a tone at 1000 Hz: alpha 1.1 moves its energy to the filter of ~1100 Hz
    fe = FrontEnd()
    t = np.arange(8000) / 8000.0
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    peak = [int(np.argmax(fe(tone, warp=a).mean(0))) for a in (1.0, 1.1, 0.9)]
    assert np.array_equal(fe(tone, warp=1.0), fe(tone))
    centres = mel_to_hz(np.linspace(0, hz_to_mel(4000.0), 34))[1:-1]
    for p, hz in zip(peak, (1000.0, 1100.0, 900.0)):
        assert abs(centres[p] - hz) < 0.6 * (centres[p + 1] - centres[p - 1])


@needs_fsdd
def test_top_db_clamps_each_utterance_below_its_peak():
    from edgessm.data import fsdd
    from edgessm.data._root import data_root
    sig, recs = fsdd._listing(data_root(), False)
    f = fsdd._features(sig)[[r.speaker for r in recs].index("lucas")]
    nats = 50.0 * np.log(10.0) / 10.0
    c = fsdd._clamp(f, 50.0)
    assert c.max() == f.max() and np.isclose(c.min(), f.max() - nats) and f.min() < c.min()
    assert np.array_equal(c[f >= f.max() - nats], f[f >= f.max() - nats])
    assert fsdd._clamp(f, 0.0) is f
    a = load_task("fsdd", "test", speaker_holdout="lucas", normalize="cmn", limit=8)
    b = load_task("fsdd", "test", speaker_holdout="lucas", normalize="cmn", limit=8, top_db=50.0)
    assert not torch.equal(a.x, b.x) and torch.equal(a.lengths, b.lengths)
    n = int(b.lengths[0])
    assert torch.allclose(b.x[0, FSDD_SEQ_LEN - n:].double().mean(0), torch.zeros(32, dtype=torch.float64), atol=1e-4)


@needs_fsdd
def test_trim_db_drops_quiet_leading_and_trailing_frames():
    from edgessm.data import fsdd
    from edgessm.data._root import data_root
    sig, recs = fsdd._listing(data_root(), False)
    f = fsdd._features(sig)[[r.speaker for r in recs].index("lucas")]
    e = np.log(np.exp(f.astype(np.float64)).sum(1))
    t = fsdd._trim(f, 30.0)
    lo = e.max() - 30.0 * np.log(10.0) / 10.0
    start = int(np.argmax(e >= lo))
    assert len(t) < len(f) and np.array_equal(t, f[start:start + len(t)])
    assert e[start] >= lo and e[start + len(t) - 1] >= lo
    assert np.all(e[:start] < lo) and np.all(e[start + len(t):] < lo)
    assert fsdd._trim(f, 0.0) is f
    a = load_task("fsdd", "test", speaker_holdout="lucas", normalize="cmn", limit=8)
    b = load_task("fsdd", "test", speaker_holdout="lucas", normalize="cmn", limit=8, trim_db=30.0)
    assert torch.all(b.lengths <= a.lengths) and torch.any(b.lengths < a.lengths)
    n = int(b.lengths[0])
    assert torch.count_nonzero(b.x[0, :FSDD_SEQ_LEN - n]) == 0


@needs_fsdd
def test_val_speaker_split():
    from edgessm.data import fsdd
    from edgessm.data._root import data_root
    recs = fsdd.list_recordings(data_root())
    who = lambda idx: {recs[i].speaker for i in idx}  # noqa: E731
    tr = fsdd.split_recordings(recs, "train", speaker_holdout="theo", val_speaker="Lucas")
    va = fsdd.split_recordings(recs, "val", speaker_holdout="theo", val_speaker="lucas")
    assert who(va) == {"lucas"} and len(va) == 500
    assert who(tr) == {"george", "jackson", "nicolas", "yweweler"} and len(tr) == 2000
    va01 = fsdd.split_recordings(recs, "val", digits=(0, 1), val_speaker="lucas")   # conventional split
    assert who(va01) == {"lucas"} and all(recs[i].index >= 5 and recs[i].digit < 2 for i in va01)
    with pytest.raises(es.ConfigError, match="unknown FSDD speaker 'bob' for val_speaker; known speakers: george"):
        load_task("fsdd", "val", speaker_holdout="theo", val_speaker="bob")
    with pytest.raises(es.ConfigError, match="val_speaker must differ from speaker_holdout"):
        load_task("fsdd", "train", speaker_holdout="theo", val_speaker="theo")
    # the train statistics come from the four training speakers
    a = fsdd.train_statistics(data_root(), speaker_holdout="theo", normalize="cmn")
    b = fsdd.train_statistics(data_root(), speaker_holdout="theo", normalize="cmn", val_speaker="lucas")
    assert not np.allclose(a[1], b[1])


def test_bad_augmentation_option_trains_nothing(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[data]\ntask = "fsdd-01"\naug_stretch = 0.9\n[train]\nepochs = 1\n')
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "edgessm", "train", str(cfg), "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "aug_stretch must be a finite number >= 0 and <= 0.5" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_loso_configs_parse_and_hold_out_each_speaker():
    base = {load_config(p).data.task for p in (ROOT / "configs" / "loso").glob("fsdd*.toml")
            if "_" not in p.stem}
    assert base == {"fsdd", "fsdd-01"}
    folds = sorted(p for p in (ROOT / "configs" / "loso").glob("*_*.toml"))
    held = {}
    for p in folds:
        cfg = load_config(p)
        held.setdefault(cfg.data.task, set()).add(cfg.data.speaker_holdout)
        assert p.stem.endswith(cfg.data.speaker_holdout)
    six = {"george", "jackson", "lucas", "nicolas", "theo", "yweweler"}
    assert held == {"fsdd": six, "fsdd-01": six}


@needs_fsdd
def test_utterance_normalization():
    tr = load_task("fsdd-01", "train", normalize="cmn", speaker_holdout="lucas")
    te = load_task("fsdd-01", "test", normalize="cmvn", speaker_holdout="lucas", limit=20)
    for ds in (tr, te):
        for i in range(5):
            n = int(ds.lengths[i])
            real = ds.x[i, FSDD_SEQ_LEN - n:].double()
            assert torch.allclose(real.mean(0), torch.zeros(32, dtype=torch.float64), atol=1e-4)
            assert torch.count_nonzero(ds.x[i, :FSDD_SEQ_LEN - n]) == 0     # padding stays zero
    real = torch.cat([tr.x[i, FSDD_SEQ_LEN - int(n):] for i, n in enumerate(tr.lengths)])
    assert torch.allclose(real.std(0), torch.ones(32), atol=1e-3)            # cmn: train std 1
    n = int(te.lengths[0])
    sd = te.x[0, FSDD_SEQ_LEN - n:].std(0, unbiased=False)
    assert float(sd.max()) <= 1.0 + 1e-4 and float(sd.median()) > 0.99      # cmvn: per utterance
    # a gain on the recording is a constant offset in log-mel: cmn removes it
    from edgessm.data import fsdd
    from edgessm.data._root import data_root
    sig, recs = fsdd._listing(data_root(), False)
    w = fsdd._waveforms(sig)[0]
    a = fsdd.FRONT_END(w)
    b = fsdd.FRONT_END(w * 2.0)
    ones = np.ones(32, dtype=np.float32)
    floor = np.log(fsdd.FRONT_END.log_floor)
    ok = (a.min(0) > floor + 3) & (b.min(0) > floor + 3)       # channels never at the log floor
    assert ok.sum() >= 24
    na, nb = fsdd._normalized(a, "cmn", 0 * ones, ones), fsdd._normalized(b, "cmn", 0 * ones, ones)
    assert np.abs(a - b)[:, ok].min() > 1.3                     # log(4): the gain shifted every frame
    assert np.allclose(na[:, ok], nb[:, ok], atol=1e-3)


@needs_fsdd
def test_augmented_batches_depend_on_their_key_only():
    a = Augment(**{k[4:]: v for k, v in AUG.items()})
    ds = load_task("fsdd-01", "train", augment=a, normalize="cmn", limit=64)
    rows = torch.arange(16)
    state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    x1 = ds.batch(rows, (3, 1, 2, 0))
    assert np.array_equal(np.random.get_state()[1], state[0]) and torch.equal(torch.get_rng_state(), state[1])
    again = load_task("fsdd-01", "train", augment=a, normalize="cmn", limit=64)
    assert torch.equal(x1, again.batch(rows, (3, 1, 2, 0)))
    assert not torch.equal(x1, ds.batch(rows, (3, 1, 3, 0)))
    assert not torch.equal(x1, ds.x[:16])
    assert x1.shape == ds.x[:16].shape and torch.isfinite(x1).all()
    plain = load_task("fsdd-01", "train", normalize="cmn", limit=64)
    assert plain.augment is None and torch.equal(plain.batch(rows, (3, 1, 2, 0)), plain.x[:16])
    # each augmentation alone changes the batch; off, the features are the un-augmented ones
    for k, v in AUG.items():
        if k in ("aug_time_mask_frames", "aug_freq_mask_channels"):
            continue
        one = {k[4:]: v}
        if k == "aug_time_masks":
            one["time_mask_frames"] = 20
        if k == "aug_freq_masks":
            one["freq_mask_channels"] = 4
        d1 = load_task("fsdd-01", "train", augment=Augment(**one), normalize="cmn", limit=16)
        assert not torch.equal(d1.batch(rows, (0, 0, 0, 0)), plain.x[:16]), k


@needs_fsdd
def test_augmented_run_resumes_exactly(tmp_path):
    full = train(from_dict(TINY), tmp_path / "full", progress=False)
    stopped = train(from_dict(TINY), tmp_path / "part", max_minutes=1e-6, progress=False)
    assert stopped["stopped"] and stopped["step_in_epoch"] == 1
    resumed = train(from_dict(TINY), tmp_path / "part", resume=True, progress=False)
    assert resumed["test_accuracy"] == full["test_accuracy"]
    a, b = es.load(tmp_path / "full" / "last").state_dict(), es.load(tmp_path / "part" / "last").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the held-out speaker and the normalization travel with the checkpoint
    from edgessm.io import trained_task_options
    m = es.load(tmp_path / "full" / "best")
    assert trained_task_options(m) == {"speaker_holdout": "theo", "normalize": "cmn", "val_speaker": "lucas",
                                      "top_db": 50.0, "trim_db": 40.0}
    assert trained_task_options(m, "fsdd") == {}
    assert full["test_n"] == 16


@needs_fsdd
def test_loso_unknown_fold_lists_speakers(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "loso.py"), "--config",
                        str(ROOT / "configs" / "loso" / "fsdd01.toml"), "--out", str(tmp_path / "x"),
                        "--folds", "nobody"], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "unknown FSDD speaker(s) nobody" in r.stderr and "george, jackson, lucas" in r.stderr
    assert not (tmp_path / "x").exists()


@needs_fsdd
def test_loso_nested_folds_validate_on_the_next_speaker(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "loso.py"), "--config",
                        str(ROOT / "configs" / "loso" / "fsdd.toml"), "--out", str(tmp_path / "x"),
                        "--nested", "--write-configs", str(tmp_path / "c")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    pairs = {(c.data.speaker_holdout, c.data.val_speaker)
             for c in map(load_config, sorted((tmp_path / "c").glob("fsdd_*.toml")))}
    assert pairs == {("george", "jackson"), ("jackson", "lucas"), ("lucas", "nicolas"),
                     ("nicolas", "theo"), ("theo", "yweweler"), ("yweweler", "george")}
    cfg = tmp_path / "v.toml"
    cfg.write_text((ROOT / "configs" / "loso" / "fsdd.toml").read_text().replace(
        'task = "fsdd"', 'task = "fsdd"\nval_speaker = "theo"'))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "loso.py"), "--config", str(cfg),
                        "--out", str(tmp_path / "y"), "--nested", "--folds", "lucas"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--nested picks each fold's val_speaker" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "y").exists()


def test_split_options_follow_the_task_registry():
    from edgessm.data.tasks import TASKS, split_options
    from edgessm.train.config import DataConfig
    run = {"speaker_holdout": "theo", "normalize": "cmvn", "top_db": 40.0, "trim_db": 0.0,
           "val_speaker": "", "aug_snr_db": 20.0, "val_fraction": 0.2}
    # only the split/feature options the task accepts, and only when not the defaults
    assert split_options("fsdd", run) == {"speaker_holdout": "theo", "normalize": "cmvn", "top_db": 40.0}
    assert split_options("fsdd-01", {"normalize": "train"}) == {}
    assert split_options("smnist", run) == {} and split_options("no-such-task", run) == {}
    assert DataConfig(task="fsdd", normalize="cmn", trim_db=30.0).task_options() == {"normalize": "cmn", "trim_db": 30.0}
    assert DataConfig(task="smnist").task_options() == {}
    assert {t for t, i in TASKS.items() if i.augmentation == "audio"} == {"fsdd", "fsdd-01"}
    assert {t for t, i in TASKS.items() if i.augmentation == "image"} == {"scifar", "scifar-gray"}


@pytest.mark.parametrize("key, value, match", [
    ("label_smoothing", -0.1, r"label_smoothing must be a finite number >= 0"),
    ("label_smoothing", 1.0, r"label_smoothing must be .* < 1"),
    ("label_smoothing", "0.1", r"label_smoothing"),
    ("mixup", -0.2, r"mixup must be a finite number >= 0"),
    ("mixup", 11.0, r"mixup must be .* <= 10"),
])
def test_train_option_out_of_range_is_a_config_error(key, value, match):
    with pytest.raises(es.ConfigError, match=match):
        from_dict({"data": {"task": "fsdd-01"}, "train": {key: value}})


def test_mixup_batch_is_keyed_and_convex():
    from edgessm.train.loop import mix_batch
    x, y = torch.randn(6, 5, 3), torch.arange(6)
    a, b = mix_batch(x, y, 0.4, (1, 2, 3, 0)), mix_batch(x, y, 0.4, (1, 2, 3, 0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    xm, y2, lam = a
    assert 0.0 <= lam <= 1.0 and sorted(y2.tolist()) == list(range(6))
    assert torch.allclose(xm, lam * x + (1 - lam) * x[y2])
    c = mix_batch(x, y, 0.4, (1, 2, 4, 0))
    assert c[2] != lam or not torch.equal(c[1], y2)


def test_mixup_loss_weights_both_targets():
    from edgessm.train import loop
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y, y2 = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0]), torch.tensor([3, 3, 1, 0, 2])
    t = from_dict({"train": {"mixup": 0.4, "label_smoothing": 0.1, "grad_clip": 0.0}}).train
    with torch.no_grad():
        lg = model(x)
        want = 0.3 * F.cross_entropy(lg, y, label_smoothing=0.1) + 0.7 * F.cross_entropy(lg, y2, label_smoothing=0.1)
    _, loss = loop._step(model, model, opt, None, x, y, torch.device("cpu"), t, (y2, 0.3))
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)


def test_label_smoothing_is_the_training_loss(monkeypatch):
    """The optimizer step's loss is the cross-entropy against the smoothed targets."""
    from edgessm.train import loop
    seen = []
    real = loop.F.cross_entropy
    monkeypatch.setattr(loop.F, "cross_entropy",
                        lambda *a, **k: seen.append(k.get("label_smoothing", 0.0)) or real(*a, **k))
    model = torch.nn.Linear(3, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0])
    t = from_dict({"train": {"label_smoothing": 0.2, "grad_clip": 0.0}}).train
    with torch.no_grad():
        want = real(model(x), y, label_smoothing=0.2).item()
        plain = real(model(x), y).item()
    _, loss = loop._step(model, model, opt, None, x, y, torch.device("cpu"), t)
    assert seen == [0.2] and loss.item() == pytest.approx(want, rel=1e-6)
    assert want != pytest.approx(plain, rel=1e-3)
