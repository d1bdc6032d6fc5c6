"""Datasets as uint8 tensors in memory, and the one entry point `load_dataset`.

Every loader returns an `ImageData`: the whole train and test sets as uint8
(N, C, H, W) tensors, decoded once. The trainer moves them to the training
device and slices batches by indexing a permutation: no per-sample PIL work.
"""
from __future__ import annotations

from pathlib import Path

from vae_visdom.data import images
from vae_visdom.data.base import DataError, ImageData, default_cache_dir
from vae_visdom.data.mnist import load_idx_dataset

__all__ = ["DataError", "ImageData", "default_cache_dir", "load_dataset"]


def load_dataset(name: str, data_dir: str | None = None, *, seed: int = 1, test_fraction: float = 0.1,
                 subset: int | None = None, cache_dir: Path | None = None) -> ImageData:
    """Load a dataset by name; raise DataError with a clear message when it cannot be had."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"data dir {data_dir} does not exist or is not a folder")
    if name in ("mnist", "fashion-mnist"):
        return load_idx_dataset(name, data_dir=data_dir, cache_dir=cache)
    if name in ("orl", "folder", "celeba"):
        return images.load(name, data_dir=data_dir, seed=seed, test_fraction=test_fraction, subset=subset,
                           cache_dir=cache)
    raise DataError(f"unknown dataset {name!r}")
