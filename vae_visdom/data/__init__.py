"""Datasets as uint8 tensors in memory, and the one entry point `load_dataset`.

Every loader returns an `ImageData`: the whole train and test sets as uint8
(N, C, H, W) tensors, decoded once. The trainer moves them to the training
device and slices batches by indexing a permutation: no per-sample PIL work.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch


class DataError(RuntimeError):
    """Data that cannot be had or cannot be trusted. str(err) tells the user what to do."""


@dataclass
class ImageData:
    name: str
    train: torch.Tensor  # (N, C, H, W) uint8
    test: torch.Tensor  # (M, C, H, W) uint8
    train_labels: torch.Tensor | None = None  # (N,) int64
    test_labels: torch.Tensor | None = None  # (M,) int64
    source: str = ""  # where the data came from, in words (shown in the run pane)
    skipped: int = 0  # unreadable files skipped while loading

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.shape[1:])  # type: ignore[return-value]

    def __post_init__(self) -> None:
        for split in (self.train, self.test):
            if split.dtype != torch.uint8 or split.dim() != 4:
                raise ValueError(f"{self.name}: expected uint8 (N, C, H, W), got {split.dtype} {tuple(split.shape)}")


def default_cache_dir() -> Path:
    """The app's data cache: $VAE_VISDOM_CACHE, else $XDG_CACHE_HOME/vae_visdom, else ~/.cache/vae_visdom."""
    if os.environ.get("VAE_VISDOM_CACHE"):
        return Path(os.environ["VAE_VISDOM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vae_visdom"


def load_dataset(name: str, data_dir: str | None = None, *, seed: int = 1, test_fraction: float = 0.1,
                 subset: int | None = None, cache_dir: Path | None = None) -> ImageData:
    """Load a dataset by name; raise DataError with a clear message when it cannot be had."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"data dir {data_dir} does not exist or is not a folder")
    if name in ("mnist", "fashion-mnist"):
        from vae_visdom.data.mnist import load_idx_dataset

        return load_idx_dataset(name, data_dir=data_dir, cache_dir=cache)
    if name in ("orl", "folder", "celeba"):
        from vae_visdom.data import images

        return images.load(name, data_dir=data_dir, seed=seed, test_fraction=test_fraction, subset=subset,
                           cache_dir=cache)
    raise DataError(f"unknown dataset {name!r}")
