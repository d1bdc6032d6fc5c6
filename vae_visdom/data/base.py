"""What every dataset is: ImageData (uint8 tensors in memory), DataError, the cache folder."""
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
        _, c, h, w = self.train.shape  # (N, C, H, W): __post_init__ checked the four dimensions
        return c, h, w

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


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]; float input is taken as already in [0, 1]. The one such conversion."""
    if x.dtype == torch.uint8:
        return x.float().div_(255)
    return x.float()
