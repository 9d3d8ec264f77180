"""The embedded data sample (a fresh machine with no data root) and downloads over a loopback
HTTP server (127.0.0.1 only): a good file, a corrupt one, an interrupted one."""
from __future__ import annotations

import hashlib
import http.server
import threading

import pytest
import torch

from edgessm import demo
from edgessm.data import data_root, download, load_task, mnist, sample
from edgessm.errors import DataError, MissingDataError

ROOT = data_root()
MNIST_NAMES = [n for pair in mnist.MNIST_FILES.values() for n in pair]
HAVE_MNIST = all((ROOT / "mnist" / n).is_file() for n in MNIST_NAMES)
HAVE_FSDD = (ROOT / "fsdd" / "recordings").is_dir()
PAYLOAD = bytes(range(256)) * 400          # 100 KiB


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}

    def do_GET(self):  # noqa: N802
        name = self.path.lstrip("/")
        if name == "cut.bin":            # promises the whole payload, sends a third, hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        body = self.files.get(name)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def server():
    _Handler.files = {"good.bin": PAYLOAD, "corrupt.bin": PAYLOAD[:-1] + b"\0"}
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/", _Handler.files
    srv.shutdown()
    srv.server_close()


def test_http_download_good_corrupt_interrupted(server, tmp_path):
    base, _ = server
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    out = tmp_path / "d"
    p = download.download_file(base + "good.bin", out / "good.bin", md5)
    assert p.read_bytes() == PAYLOAD
    with pytest.raises(DataError, match="MD5"):
        download.download_file(base + "corrupt.bin", out / "corrupt.bin", md5)
    with pytest.raises(DataError, match="could not download"):
        download.download_file(base + "cut.bin", out / "cut.bin", md5)
    with pytest.raises(DataError, match="could not download"):   # no checksum: still no half file
        download.download_file(base + "cut.bin", out / "cut2.bin", None)
    with pytest.raises(DataError, match="404"):
        download.download_file(base + "absent.bin", out / "absent.bin", md5)
    assert sorted(q.name for q in out.iterdir()) == ["good.bin"]      # nothing half-written


def test_ensure_files_over_http(server, tmp_path, monkeypatch):
    base, files = server
    names = ["a.bin", "b.bin"]
    for n in names:
        files[n] = PAYLOAD + n.encode()
        monkeypatch.setitem(download.SOURCES["mnist"], n,
                            download.Source(base + n, hashlib.md5(files[n]).hexdigest()))
    with pytest.raises(MissingDataError, match="a.bin, b.bin missing"):
        download.ensure_files("mnist", tmp_path, names, download=False)
    paths = download.ensure_files("mnist", tmp_path, names, download=True)
    assert [p.read_bytes() for p in paths] == [files[n] for n in names]
    files["b.bin"] = b"tampered"      # a mirror serving other bytes: refused, nothing left behind
    with pytest.raises(DataError, match="MD5"):
        download.ensure_files("mnist", tmp_path / "r2", names, download=True)
    assert sorted(p.name for p in (tmp_path / "r2" / "mnist").iterdir()) == ["a.bin"]


def test_sample_only_inside_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESSM_DATA", str(tmp_path))
    sample.reset_used()
    with pytest.raises(MissingDataError):
        load_task("smnist", "test", limit=3)
    with sample.fallback():
        ds = load_task("smnist", "test")
        tr = load_task("psmnist", "train", limit=16)
        f = load_task("fsdd-01", "test")
        with pytest.raises(MissingDataError):
            load_task("scifar", "test")                                 # no sample of CIFAR
        with pytest.raises(MissingDataError):
            load_task("smnist", "train", seed=3)                        # only the default split
    assert len(ds) == sample.MNIST_TEST and ds.x.shape == (500, 784, 1) and len(tr) == 16
    assert len(f) == 60 and set(f.y.tolist()) == {0, 1} and f.lengths is not None
    assert sample.used() == {"smnist": {"test": 500}, "psmnist": {"train": 16}, "fsdd-01": {"test": 60}}
    with pytest.raises(MissingDataError):
        load_task("smnist", "test")                                     # off again


@pytest.mark.skipif(not (HAVE_MNIST and HAVE_FSDD), reason=f"MNIST/FSDD not in data root {ROOT}")
def test_sample_equals_the_full_data(tmp_path, monkeypatch):
    full = [load_task("smnist", "test", limit=500), load_task("psmnist", "train", limit=512),
            load_task("fsdd-01", "test"), load_task("fsdd-01", "train", limit=128)]
    monkeypatch.setenv("EDGESSM_DATA", str(tmp_path))
    with sample.fallback():
        emb = [load_task("smnist", "test"), load_task("psmnist", "train", limit=512),
               load_task("fsdd-01", "test"), load_task("fsdd-01", "train")]
    for a, b in zip(full[:2], emb[:2]):                         # MNIST: the same pixels
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    for a, b in zip(full[2:], emb[2:]):
        # FSDD: log-mel features computed here against those stored with the sample; the FFT and
        # matrix products round differently on other CPUs (up to 8e-7 seen, features up to 2.8)
        torch.testing.assert_close(a.x, b.x, rtol=1e-6, atol=1e-5)
        assert torch.equal(a.y, b.y) and torch.equal(a.lengths, b.lengths)


def test_demo_data_offline_corrupt_and_downloaded(server, tmp_path, monkeypatch):
    base, files = server
    monkeypatch.setenv("EDGESSM_DATA", str(tmp_path / "root"))
    st = demo.prepare_data(("smnist",), offline=True)
    assert st["smnist"]["data"] == "sample" and "offline" in st["smnist"]["why"]
    for n in MNIST_NAMES:                         # a mirror on loopback serving corrupt files
        files[n] = b"corrupt"
        monkeypatch.setitem(download.SOURCES["mnist"], n,
                            download.Source(base + n, download.SOURCES["mnist"][n].md5))
    st = demo.prepare_data(("smnist",))
    assert st["smnist"]["data"] == "sample" and "MD5" in st["smnist"]["why"]
    assert not any(p.is_file() for p in (tmp_path / "root").rglob("*"))
    monkeypatch.setitem(download.SOURCES["mnist"], MNIST_NAMES[0],
                        download.Source("http://127.0.0.1:9/x", download.SOURCES["mnist"][MNIST_NAMES[0]].md5))
    st = demo.prepare_data(("smnist",))           # nothing listens on port 9: no network
    assert st["smnist"]["data"] == "sample" and "unreachable" in st["smnist"]["why"]
    if not HAVE_MNIST:
        pytest.skip(f"MNIST not in data root {ROOT}: the full download is not exercised")
    for n in MNIST_NAMES:
        files[n] = (ROOT / "mnist" / n).read_bytes()
        monkeypatch.setitem(download.SOURCES["mnist"], n,
                            download.Source(base + n, download.SOURCES["mnist"][n].md5))
    st = demo.prepare_data(("smnist",))
    assert st["smnist"]["data"] == "downloaded"
    assert sorted(p.name for p in (tmp_path / "root" / "mnist").iterdir()) == sorted(MNIST_NAMES)
