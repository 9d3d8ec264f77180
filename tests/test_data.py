"""Tests of edgessm.data: tasks on the real data sets (from $EDGESSM_DATA), the audio
front end, and the failure paths (missing, truncated, corrupt, malicious input).

Real-data tests are skipped, with the reason, when the data root lacks the files.
Nothing here touches the network: downloads are exercised with file:// URLs.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import io
import os
import pathlib
import pickle
import shutil
import tarfile
import wave

import numpy as np
import pytest
import torch

from edgessm.data import TASKS, SequenceDataset, TaskInfo, data_root, load_task
from edgessm.data import audio, cifar, download, fsdd, mnist
from edgessm.data._splits import split_indices
from edgessm.data.tasks import (CIFAR_GRAY_MEAN, CIFAR_GRAY_STD, CIFAR_MEAN, CIFAR_STD,
                                LUMA_WEIGHTS, PSMNIST_SEED, psmnist_permutation)
from edgessm.errors import ConfigError, DataError, UnknownNameError

torch.set_num_threads(1)

ROOT = data_root()
MNIST_NAMES = [n for pair in mnist.MNIST_FILES.values() for n in pair]
HAVE_MNIST = all((ROOT / "mnist" / n).is_file() for n in MNIST_NAMES)
HAVE_CIFAR = all((ROOT / "cifar10" / n).is_file() for n in cifar.NPZ_FILES) or (
    ROOT / "cifar10" / cifar.BATCH_DIR).is_dir() or (ROOT / "cifar10" / cifar.ARCHIVE).is_file()
HAVE_FSDD = (ROOT / "fsdd" / "recordings").is_dir() and any((ROOT / "fsdd" / "recordings").glob("*.wav"))

needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason=f"MNIST IDX files not in data root {ROOT} (set EDGESSM_DATA)")
needs_cifar = pytest.mark.skipif(not HAVE_CIFAR, reason=f"CIFAR-10 not in data root {ROOT} (set EDGESSM_DATA)")
needs_fsdd = pytest.mark.skipif(not HAVE_FSDD, reason=f"FSDD recordings not in data root {ROOT} (set EDGESSM_DATA)")


@pytest.fixture(autouse=True)
def _no_download_env(monkeypatch):
    monkeypatch.delenv("EDGESSM_DOWNLOAD", raising=False)


def _check_basic(ds: SequenceDataset, name: str, n: int):
    info = TASKS[name]
    assert isinstance(ds, SequenceDataset) and ds.info == info
    assert ds.x.shape == (n, info.seq_len, info.d_input) and ds.x.dtype == torch.float32
    assert ds.y.shape == (n,) and ds.y.dtype == torch.int64
    assert int(ds.y.min()) >= 0 and int(ds.y.max()) < info.d_output
    assert torch.isfinite(ds.x).all()
    x0, y0 = ds[0]
    assert torch.equal(x0, ds.x[0]) and int(y0) == int(ds.y[0]) and len(ds) == n


# ---------------------------------------------------------------- registry, root, API


def test_registry_and_root(monkeypatch, tmp_path):
    assert set(TASKS) == {"smnist", "psmnist", "scifar", "scifar-gray", "fsdd", "fsdd-01"}
    for name, info in TASKS.items():
        assert isinstance(info, TaskInfo) and info.name == name and info.description
    with pytest.raises(Exception):
        TASKS["smnist"].seq_len = 5  # frozen
    assert (TASKS["smnist"].seq_len, TASKS["smnist"].d_input) == (784, 1)
    assert (TASKS["scifar"].seq_len, TASKS["scifar"].d_input, TASKS["scifar-gray"].d_input) == (1024, 3, 1)
    assert (TASKS["fsdd"].seq_len, TASKS["fsdd"].d_input, TASKS["fsdd-01"].d_output) == (226, 32, 2)
    assert str(PSMNIST_SEED) in TASKS["psmnist"].description
    monkeypatch.setenv("EDGESSM_DATA", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.delenv("EDGESSM_DATA")
    assert data_root() == pathlib.Path.home() / ".cache" / "edgessm"


def test_bad_arguments():
    with pytest.raises(UnknownNameError) as e:
        load_task("mnist-typo", "train")
    assert "smnist" in str(e.value) and "fsdd-01" in str(e.value)
    with pytest.raises(KeyError):  # UnknownNameError is also a KeyError
        load_task("nope", "train")
    with pytest.raises(ConfigError, match="split"):
        load_task("smnist", "training")
    with pytest.raises(ConfigError):
        load_task("smnist", "train", val_fraction=1.0)
    with pytest.raises(ConfigError):
        load_task("smnist", "train", limit=-1)
    with pytest.raises(ConfigError, match="speaker_holdout"):
        load_task("smnist", "train", speaker_holdout="theo")


def test_data_imports_nothing_else_from_the_package():
    folder = pathlib.Path(mnist.__file__).parent
    banned = {"torchvision", "torchaudio", "scipy", "librosa", "PIL", "sklearn"}
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    assert node.level == 1, f"{path.name} imports from outside data/"
                    continue
                mods = [node.module]
            else:
                continue
            for m in mods:
                assert m.split(".")[0] not in banned, f"{path.name} imports {m}"
                if m.startswith("edgessm"):
                    assert m in ("edgessm.errors", "edgessm.progress"), f"{path.name} imports {m}"


def test_split_indices_deterministic_and_disjoint():
    tr, va = split_indices(1000, "train", 0.1, 0), split_indices(1000, "val", 0.1, 0)
    assert len(va) == 100 and len(tr) == 900
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(1000))
    assert np.array_equal(va, split_indices(1000, "val", 0.1, 0))
    assert not np.array_equal(va, split_indices(1000, "val", 0.1, 1))
    assert np.all(np.diff(tr) > 0)


# ---------------------------------------------------------------- MNIST


@needs_mnist
def test_smnist_shapes_normalization_and_splits():
    ds = load_task("smnist", "train", limit=2000)
    _check_basic(ds, "smnist", 2000)
    assert abs(ds.x.mean().item()) < 0.05 and abs(ds.x.std().item() - 1.0) < 0.05
    # pixel 0 is background: (0 - 0.1307) / 0.3081
    assert ds.x[:, 0, 0].allclose(torch.tensor(-0.1307 / 0.3081))
    n_train, n_val = len(load_task("smnist", "train")), len(load_task("smnist", "val"))
    assert (n_train, n_val) == (54000, 6000)
    test = load_task("smnist", "test")
    assert len(test) == 10000
    assert torch.bincount(test.y, minlength=10).min() > 800
    # determinism of the seeded split, and that the seed matters
    a = load_task("smnist", "val", limit=50)
    b = load_task("smnist", "val", limit=50)
    c = load_task("smnist", "val", limit=50, seed=1)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x)
    assert len(load_task("smnist", "val", val_fraction=0.25)) == 15000


@needs_mnist
def test_psmnist_is_fixed_permutation_of_smnist():
    s = load_task("smnist", "test", limit=16)
    p = load_task("psmnist", "test", limit=16)
    _check_basic(p, "psmnist", 16)
    perm = psmnist_permutation()
    assert np.array_equal(perm, np.random.default_rng(seed=92916).permutation(784))
    assert torch.equal(p.y, s.y)
    assert torch.equal(p.x[:, :, 0], s.x[:, torch.from_numpy(perm), 0])
    assert not torch.equal(p.x, s.x)


# ---------------------------------------------------------------- CIFAR-10


@needs_cifar
def test_scifar_shapes_and_normalization():
    ds = load_task("scifar", "test", limit=512)
    _check_basic(ds, "scifar", 512)
    assert len(set(ds.y.tolist())) == 10  # the first samples cover every class
    mean, std = ds.x.mean(dim=(0, 1)), ds.x.std(dim=(0, 1))
    assert mean.abs().max() < 0.15 and (std - 1).abs().max() < 0.15
    gray = load_task("scifar-gray", "test", limit=512)
    _check_basic(gray, "scifar-gray", 512)
    assert torch.equal(gray.y, ds.y)
    rgb = ds.x * torch.tensor(CIFAR_STD) + torch.tensor(CIFAR_MEAN)
    luma = (rgb @ torch.tensor(LUMA_WEIGHTS)).unsqueeze(-1)
    assert torch.allclose(gray.x, (luma - CIFAR_GRAY_MEAN) / CIFAR_GRAY_STD, atol=1e-4)
    assert abs(gray.x.mean().item()) < 0.15 and abs(gray.x.std().item() - 1) < 0.15
    assert len(load_task("scifar-gray", "test")) == 10000
    assert len(load_task("scifar-gray", "val", limit=None)) == 5000


# ---------------------------------------------------------------- FSDD


@needs_fsdd
def test_fsdd_shapes_padding_normalization_and_splits():
    train = load_task("fsdd", "train")
    val = load_task("fsdd", "val")
    test = load_task("fsdd", "test")
    _check_basic(test, "fsdd", 300)
    assert len(train) + len(val) == 2700 and len(val) == 270
    assert torch.bincount(test.y, minlength=10).tolist() == [30] * 10
    L = TASKS["fsdd"].seq_len
    real = torch.arange(L)[None, :] >= (L - train.lengths)[:, None]  # (N, L) mask of real frames
    assert (train.x[~real] == 0).all()  # left padding with zeros
    assert real[:, -1].all() and (train.x[:, -1].abs().sum(-1) > 0).all()  # last token = end of utterance
    frames = train.x[real]
    assert frames.mean(0).abs().max() < 1e-3 and (frames.std(0) - 1).abs().max() < 1e-3
    assert int(train.lengths.max()) <= L and int(train.lengths.min()) >= 1
    ds01 = load_task("fsdd-01", "test")
    _check_basic(ds01, "fsdd-01", 60)
    assert set(ds01.y.tolist()) == {0, 1}
    assert len(load_task("fsdd-01", "train")) + len(load_task("fsdd-01", "val")) == 540
    assert sorted(load_task("fsdd", "test", limit=10).y.tolist()) == list(range(10))
    again = load_task("fsdd", "val", limit=10)
    assert torch.equal(again.x, val.x[:10]) and torch.equal(again.y, val.y[:10])


@needs_fsdd
def test_fsdd_speaker_holdout():
    recs = fsdd.list_recordings(ROOT)
    assert len(recs) == 3000
    test = fsdd.split_recordings(recs, "test", speaker_holdout="theo")
    train = fsdd.split_recordings(recs, "train", speaker_holdout="theo")
    val = fsdd.split_recordings(recs, "val", speaker_holdout="theo")
    assert {recs[i].speaker for i in test} == {"theo"} and len(test) == 500
    assert "theo" not in {recs[i].speaker for i in np.concatenate([train, val])}
    assert len(train) + len(val) == 2500
    conventional = fsdd.split_recordings(recs, "test")
    assert all(recs[i].index < 5 for i in conventional) and len(conventional) == 300
    ds = load_task("fsdd", "test", speaker_holdout="theo", limit=20)
    assert len(ds) == 20
    with pytest.raises(ConfigError, match="george"):
        load_task("fsdd", "test", speaker_holdout="nobody")


# ---------------------------------------------------------------- audio front end


def test_mel_scale_and_filterbank():
    assert audio.hz_to_mel(1000.0) == pytest.approx(1000.0, abs=0.1)
    f = np.array([0.0, 300.0, 1234.5, 4000.0])
    assert np.allclose(audio.mel_to_hz(audio.hz_to_mel(f)), f)
    fb = audio.mel_filterbank(32, 256, 8000)
    assert fb.shape == (32, 129) and fb.dtype == np.float32 and fb.min() >= 0 and fb.max() <= 1
    peaks = fb.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0) and peaks[-1] > peaks[0]
    for row in fb:  # triangular: one contiguous support, rising then falling
        nz = np.flatnonzero(row)
        assert len(nz) >= 1 and np.all(np.diff(nz) == 1)
        seg = row[nz[0]: nz[-1] + 1]
        top = seg.argmax()
        assert np.all(np.diff(seg[: top + 1]) > 0) and np.all(np.diff(seg[top:]) < 0)
    total = fb.sum(axis=0)
    assert np.all(total[1:-1] > 0)  # every bin strictly inside (0, Nyquist) is covered
    # neighbouring triangles cross-fade: between the first and last centres they sum to 1
    centres, bins = _mel_centres(), np.arange(129) * 8000 / 256
    inside = (bins >= centres[0]) & (bins <= centres[-1])
    assert inside.sum() > 100 and np.allclose(total[inside], 1.0, atol=1e-5)
    with pytest.raises(ConfigError):
        audio.mel_filterbank(200, 64, 8000)  # more filters than bins


def _mel_centres(n_mels=32, sr=8000):
    return audio.mel_to_hz(np.linspace(0, audio.hz_to_mel(sr / 2), n_mels + 2))[1:-1]


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0])
def test_front_end_sine_lands_in_right_channel(freq):
    fe = audio.FrontEnd()
    t = np.arange(8000) / 8000.0
    feats = fe(0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32))
    assert feats.shape == (fe.n_frames(8000), 32) == (98, 32)
    best = int(np.argmax(feats.mean(axis=0)))
    assert abs(best - int(np.argmin(np.abs(_mel_centres() - freq)))) <= 1


def test_front_end_frames_dct_and_mfcc():
    fe = audio.FrontEnd()
    assert fe.n_frames(18262) == fsdd.FSDD_SEQ_LEN == 226
    assert fe(np.zeros(18262, np.float32)).shape == (226, 32)
    assert fe(np.zeros(100, np.float32)).shape == (1, 32)  # shorter than a window
    silent = fe(np.zeros(400, np.float32))
    assert np.allclose(silent, np.log(fe.log_floor))  # the floor keeps silence finite
    d = audio.dct_ii_matrix(32)
    assert np.allclose(d @ d.T, np.eye(32), atol=1e-5)
    n = np.arange(32)
    assert np.allclose(d[3], np.sqrt(2 / 32) * np.cos(np.pi * 3 * (2 * n + 1) / 64), atol=1e-6)
    mf = audio.FrontEnd(n_mfcc=13)
    sig = np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 0.1
    out = mf(sig)
    assert out.shape == (mf.n_frames(4000), 13) and mf.n_features == 13
    assert np.allclose(out, fe(sig) @ audio.dct_ii_matrix(32, 13).T, atol=1e-4)
    assert np.allclose(audio.FrontEnd(window="hann")(sig).shape, fe(sig).shape)
    with pytest.raises(ConfigError):
        audio.FrontEnd(window="kaiser")


def _write_wav(path, samples, *, rate=8000, width=2, channels=1):
    with wave.open(path if isinstance(path, io.BytesIO) else str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())


def test_read_wav_validates_format(tmp_path):
    good = tmp_path / "good.wav"
    _write_wav(good, (np.arange(1000) % 200 * 100).astype("<i2"))
    x = audio.read_wav(good)
    assert x.dtype == np.float32 and x.shape == (1000,) and x[1] == pytest.approx(100 / 32768)
    cases = {
        "8bit.wav": dict(samples=np.full(1000, 128, np.uint8), width=1),
        "stereo.wav": dict(samples=np.zeros(2000, "<i2"), channels=2),
        "16k.wav": dict(samples=np.zeros(1000, "<i2"), rate=16000),
    }
    for name, kw in cases.items():
        _write_wav(tmp_path / name, kw.pop("samples"), **kw)
        with pytest.raises(DataError) as e:
            audio.read_wav(tmp_path / name)
        assert name in str(e.value)
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00junk")
    with pytest.raises(DataError, match="junk.wav"):
        audio.read_wav(tmp_path / "junk.wav")


def test_fsdd_bad_wav_in_data_root(tmp_path):
    rec = tmp_path / "fsdd" / "recordings"
    rec.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for d in (0, 1):
        for i in range(6):
            _write_wav(rec / f"{d}_alice_{i}.wav", (rng.standard_normal(2000) * 1000).astype("<i2"))
    ds = load_task("fsdd-01", "test", root=tmp_path)  # a tiny but valid root works
    assert len(ds) == 10 and ds.x.shape[1:] == (226, 32)
    _write_wav(rec / "1_alice_7.wav", np.zeros(4000, "<i2"), channels=2)
    with pytest.raises(DataError, match="1_alice_7.wav"):
        load_task("fsdd", "train", root=tmp_path)


# ---------------------------------------------------------------- missing / corrupt data


def test_missing_files_one_clear_message(tmp_path):
    with pytest.raises(DataError) as e:
        load_task("smnist", "train", root=tmp_path)
    msg = str(e.value)
    assert all(n in msg for n in MNIST_NAMES) and str(tmp_path) in msg
    assert "EDGESSM_DATA" in msg and "download=True" in msg and msg.count(". ") == 0
    for task, needle in (("scifar", "cifar10_train.npz"), ("fsdd", "recordings")):
        with pytest.raises(DataError) as e:
            load_task(task, "test", root=tmp_path)
        assert needle in str(e.value) and str(tmp_path) in str(e.value)


def _copy_mnist(dst: pathlib.Path) -> pathlib.Path:
    (dst / "mnist").mkdir(parents=True)
    for n in MNIST_NAMES:
        shutil.copy(ROOT / "mnist" / n, dst / "mnist" / n)
    return dst / "mnist"


@needs_mnist
def test_truncated_mnist_gz(tmp_path):
    folder = _copy_mnist(tmp_path)
    victim = folder / "t10k-images-idx3-ubyte.gz"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        load_task("smnist", "test", root=tmp_path)
    # the IDX/gzip parser itself (without the checksum) also refuses it, naming the file
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz"):
        mnist.read_idx_gz(victim)
    # a complete gzip whose IDX payload is short of what its header says
    raw = gzip.decompress(data)
    short = folder / "short-idx3-ubyte.gz"
    short.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match="short-idx3-ubyte.gz"):
        mnist.read_idx_gz(short)
    with pytest.raises(DataError, match="magic"):
        mnist.parse_idx(b"\x01\x02\x03\x04" + raw[4:], "x")


@needs_mnist
def test_corrupt_mnist_bytes_fail_checksum(tmp_path):
    folder = _copy_mnist(tmp_path)
    victim = folder / "train-labels-idx1-ubyte.gz"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(DataError) as e:
        load_task("smnist", "val", root=tmp_path)
    assert "train-labels-idx1-ubyte.gz" in str(e.value) and "MD5" in str(e.value)


# ---------------------------------------------------------------- CIFAR pickles


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _fake_batch(n, seed, protocol):
    rng = np.random.default_rng(seed)
    return pickle.dumps({b"batch_label": b"fake", b"labels": rng.integers(0, 10, n).tolist(),
                         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"filenames": [b"x.png"] * n}, protocol=protocol)


def _fake_cifar_folder(root: pathlib.Path, protocol=2) -> pathlib.Path:
    folder = root / "cifar10" / cifar.BATCH_DIR
    folder.mkdir(parents=True)
    for k, name in enumerate(cifar.BATCH_FILES):
        (folder / name).write_bytes(_fake_batch(20, k, protocol))
    return folder


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_batches_through_restricted_unpickler(tmp_path, protocol):
    folder = _fake_cifar_folder(tmp_path, protocol)
    ds = load_task("scifar", "test", root=tmp_path)
    assert ds.x.shape == (20, 1024, 3)
    raw = pickle.loads((folder / "test_batch").read_bytes())
    # channel-planar rows -> (32, 32, 3) pixels: pixel (0, 1) red is data[1], green data[1025]
    px = ds.x[0, 1] * torch.tensor(CIFAR_STD) + torch.tensor(CIFAR_MEAN)
    want = torch.tensor([raw[b"data"][0, 1], raw[b"data"][0, 1025], raw[b"data"][0, 2049]]) / 255.0
    assert torch.allclose(px, want.float(), atol=1e-5)
    assert ds.y.tolist() == raw[b"labels"]
    assert len(load_task("scifar", "train", root=tmp_path)) == 90  # 100 - 10% val


def test_malicious_pickle_is_rejected_not_executed(tmp_path):
    folder = _fake_cifar_folder(tmp_path)
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil(marker)}, protocol=2))
    with pytest.raises(DataError) as e:
        load_task("scifar", "train", root=tmp_path)
    assert "data_batch_3" in str(e.value) and "system" in str(e.value)
    assert not marker.exists()
    with pytest.raises(DataError):
        cifar.restricted_loads(pickle.dumps(_Evil(marker), protocol=4))
    with pytest.raises(DataError):  # _codecs.encode is allowed for latin-1 only
        cifar.restricted_loads(b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x04\x00\x00\x00hex_q\x00\x86R.")
    assert not marker.exists()
    (folder / "test_batch").write_bytes(b"\x80\x02}q\x00")  # truncated pickle
    shutil.copy(folder / "data_batch_1", folder / "data_batch_3")
    with pytest.raises(DataError, match="test_batch"):
        load_task("scifar", "test", root=tmp_path)


def test_cifar_archive_read_in_place(tmp_path, monkeypatch):
    src = _fake_cifar_folder(tmp_path / "src")
    archive = tmp_path / "root" / "cifar10" / cifar.ARCHIVE
    archive.parent.mkdir(parents=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=cifar.BATCH_DIR)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setitem(download.SOURCES["cifar10"], cifar.ARCHIVE, download.Source("file:///nowhere", md5))
    ds = load_task("scifar-gray", "test", root=tmp_path / "root")
    assert ds.x.shape == (20, 1024, 1)
    assert not (archive.parent / cifar.BATCH_DIR).exists()  # nothing extracted
    monkeypatch.setitem(download.SOURCES["cifar10"], cifar.ARCHIVE, download.Source("file:///nowhere", "0" * 32))
    archive.write_bytes(archive.read_bytes() + b"\0")
    with pytest.raises(DataError, match="MD5"):
        load_task("scifar", "test", root=tmp_path / "root")


# ---------------------------------------------------------------- downloads (file:// only)


def test_download_file_success_and_checksum_mismatch(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"edgessm" * 1000)
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    dest = tmp_path / "out" / "file.bin"
    download.download_file(src.as_uri(), dest, md5)
    assert dest.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.bin"]
    download.verify_checksum(dest, md5)
    bad = tmp_path / "out" / "bad.bin"
    with pytest.raises(DataError, match="MD5"):
        download.download_file(src.as_uri(), bad, "0" * 32)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.bin"]  # no temp, no bad file
    with pytest.raises(DataError, match="could not download"):
        download.download_file((tmp_path / "absent").as_uri(), tmp_path / "out" / "x.bin")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.bin"]


@needs_mnist
def test_load_task_downloads_when_allowed(tmp_path, monkeypatch):
    for n in MNIST_NAMES:
        old = download.SOURCES["mnist"][n]
        monkeypatch.setitem(download.SOURCES["mnist"], n,
                            download.Source((ROOT / "mnist" / n).as_uri(), old.md5))
    root = tmp_path / "root"
    monkeypatch.setenv("EDGESSM_DOWNLOAD", "1")
    ds = load_task("smnist", "test", root=root, limit=5)
    assert len(ds) == 5 and sorted(p.name for p in (root / "mnist").iterdir()) == sorted(MNIST_NAMES)
    # a mirror serving wrong bytes: DataError and nothing left behind
    root2 = tmp_path / "root2"
    junk = tmp_path / "junk.gz"
    junk.write_bytes(b"not mnist")
    monkeypatch.setitem(download.SOURCES["mnist"], MNIST_NAMES[0],
                        download.Source(junk.as_uri(), download.SOURCES["mnist"][MNIST_NAMES[0]].md5))
    with pytest.raises(DataError, match="MD5"):
        load_task("smnist", "test", root=root2, download=True)
    assert not any(p.name.startswith(MNIST_NAMES[0]) or p.name.startswith("." + MNIST_NAMES[0])
                   for p in (root2 / "mnist").iterdir())


def test_fsdd_download_extracts_only_recordings(tmp_path, monkeypatch):
    tarball = tmp_path / "fsdd.tar.gz"
    wav = io.BytesIO()
    _write_wav(wav, (np.random.default_rng(0).standard_normal(1500) * 800).astype("<i2"))
    names = [f"{d}_bob_{i}.wav" for d in range(2) for i in range(6)]
    with tarfile.open(tarball, "w:gz") as tar:
        for member, payload in [(f"fsdd-1.0.10/recordings/{n}", wav.getvalue()) for n in names] + [
            ("fsdd-1.0.10/README.md", b"readme"), ("fsdd-1.0.10/recordings/../../evil.wav", b"x")]:
            info = tarfile.TarInfo(member)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    key = next(iter(download.SOURCES["fsdd"]))
    monkeypatch.setitem(download.SOURCES["fsdd"], key, download.Source(tarball.as_uri(), None))
    monkeypatch.setattr(fsdd, "FSDD_N_RECORDINGS", len(names))
    root = tmp_path / "root"
    ds = load_task("fsdd", "test", root=root, download=True)
    assert len(ds) == 10
    assert sorted(p.name for p in (root / "fsdd").iterdir()) == ["recordings"]
    assert sorted(p.name for p in (root / "fsdd" / "recordings").iterdir()) == sorted(names)
    assert not (tmp_path / "evil.wav").exists()
    monkeypatch.setattr(fsdd, "FSDD_N_RECORDINGS", 3000)  # wrong count: refused, nothing installed
    with pytest.raises(DataError, match="3000"):
        load_task("fsdd", "test", root=tmp_path / "root3", download=True)
    assert not (tmp_path / "root3" / "fsdd" / "recordings").exists()
    assert list((tmp_path / "root3" / "fsdd").iterdir()) == []
