"""Image files decoded once to uint8 (Pillow: centred square crop, resize) and cached by their file list."""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from vae_visdom.safe_io import atomic_write

_CACHE_FORMAT = 1


@dataclass
class Decoded:
    """What the cache holds: the images of a file list, before the split."""

    images: torch.Tensor  # (N, C, SIZE, SIZE) uint8
    names: list[str]  # relative paths of the images kept, in order
    skipped: list[str]  # relative paths that could not be decoded


# --------------------------------------------------------------------------- decoding

def _decode(path: Path, crop: float, size: int) -> tuple[np.ndarray, bool] | None:
    """One file -> ((size, size) or (size, size, 3) uint8, is_grey), or None when unreadable."""
    im: Image.Image  # the opened file, then each converted copy of it
    try:
        with Image.open(path) as im:
            # JPEG only: let the decoder downscale by 1/2, 1/4, 1/8 in the DCT; it never goes below
            # the size asked for. Measured: 1.6x faster on CelebA's 178x218, 4x on a 2000x1500 photo.
            w, h = im.size
            need = size / (crop * min(w, h))  # the scale the final resize will apply
            im.draft("L" if im.mode in ("L", "1") else "RGB", (math.ceil(w * need), math.ceil(h * need)))
            im = ImageOps.exif_transpose(im)
            im = _to_8bit(im)
            w, h = im.size
            side = crop * min(w, h)
            box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)  # centred square
            im = im.resize((size, size), Image.Resampling.BILINEAR, box=box)
            arr = np.asarray(im)
    except Exception:  # any decoder failure: truncated, corrupt, not an image after all
        return None
    if arr.ndim == 2:
        return arr, True
    return arr, bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all())


def _to_8bit(im: Image.Image) -> Image.Image:
    """Any mode -> 'L' or 'RGB'. 16-bit and float grey are rescaled, not clipped."""
    if im.mode in ("L", "RGB"):
        return im
    if im.mode in ("1", "LA"):
        return im.convert("L")
    if im.mode.startswith("I") or im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray((arr.clip(0, top) * (255.0 / top) + 0.5).astype(np.uint8), "L")
    return im.convert("RGB")  # P, RGBA, CMYK, YCbCr, ...


ENV_WORKERS = "VAE_VISDOM_DECODE_WORKERS"  # decoding processes (default: every CPU)
POOL_FROM = 512  # fewer files than this are decoded in this process's threads: a pool costs more to start
CHUNK = 64  # files per task handed to a worker process


def _decode_chunk(root: Path, names: list[str], crop: float, size: int) -> list:
    return [_decode(root / n, crop, size) for n in names]


def decode_workers() -> int:
    return max(1, int(os.environ.get(ENV_WORKERS) or os.cpu_count() or 1))


def _decode_results(root: Path, names: list[str], crop: float, size: int) -> list:
    """Every file decoded (or None), in order: by worker processes, with a progress bar, for a large folder."""
    workers = decode_workers()
    if len(names) < POOL_FROM or workers == 1:
        # Pillow releases the GIL while decoding and resizing; on 2 cores threads gained little over a loop
        with ThreadPoolExecutor(min(8, workers)) as pool:
            return list(pool.map(lambda n: _decode(root / n, crop, size), names))
    chunks = [names[i:i + CHUNK] for i in range(0, len(names), CHUNK)]
    results: list = []
    with ProcessPoolExecutor(workers) as pool, \
            tqdm(total=len(names), unit="img", desc=f"decoding {root.name} ({workers} workers)", file=sys.stderr,
                 mininterval=1.0) as bar:
        for part in pool.map(_decode_chunk, *zip(*[(root, c, crop, size) for c in chunks])):
            results += part
            bar.update(len(part))
    return results


def _decode_all(root: Path, names: list[str], crop: float, size: int) -> Decoded:
    results = _decode_results(root, names, crop, size)
    kept = [(n, r) for n, r in zip(names, results) if r is not None]
    skipped = [n for n, r in zip(names, results) if r is None]
    if not kept:
        return Decoded(torch.zeros(0, 1, size, size, dtype=torch.uint8), [], skipped)
    if all(grey for _, (_, grey) in kept):  # grey unless some image has colour in it
        arrays = [a if a.ndim == 2 else a[..., 0] for _, (a, _) in kept]
        images = torch.from_numpy(np.stack(arrays)).unsqueeze(1)  # (N, 1, H, W)
    else:
        arrays = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for _, (a, _) in kept]
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
    return Decoded(images, [n for n, _ in kept], skipped)


# --------------------------------------------------------------------------- cache

def cached_decode(dataset: str, root: Path, names: list[str], crop: float, size: int, cache_dir: Path | None,
                   variant: str = "") -> tuple[Decoded, bool]:
    """Decode `names` under `root`, or read them from the cache. Returns (decoded, was_cached).

    The file is named DATASET-WHERE-CONTENT.pt: WHERE hashes the folder and the settings, CONTENT
    the file list with sizes and mtimes. A new CONTENT replaces the older files of the same WHERE,
    so a folder that keeps changing does not fill the cache.
    """
    stats = [(n, st.st_size, st.st_mtime_ns) for n in names for st in [(root / n).stat()]]
    where = _digest([_CACHE_FORMAT, dataset, str(root.resolve()), crop, size, variant])[:12]
    path = Path(cache_dir) / "images" / f"{dataset}-{where}-{_digest(stats)[:16]}.pt" if cache_dir else None
    if path is not None and path.is_file():
        try:
            # memory-mapped: the pages are the file's, shared by every rank (and process) reading it
            d = torch.load(path, weights_only=True, mmap=True)
            return Decoded(d["images"], list(d["names"]), list(d["skipped"])), True
        except Exception:  # a truncated or foreign file: decode again and overwrite it
            pass
    decoded = _decode_all(root, names, crop, size)
    if path is not None and decoded.names:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            payload = {"images": decoded.images, "names": decoded.names, "skipped": decoded.skipped}
            # atomic: a concurrent reader sees the old file or the whole new one
            atomic_write(path, lambda tmp: torch.save(payload, tmp), shared=True)
            for old in path.parent.glob(f"{dataset}-{where}-*.pt"):
                if old != path:
                    old.unlink(missing_ok=True)
        except OSError:  # a read-only or full cache only costs the next load its speed
            pass
    return decoded, False


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()
