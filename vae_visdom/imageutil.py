"""Image grids and PNGs, as torchvision's make_grid/save_image lay them out (padding 2, black)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def make_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 0.0) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] -> (C, H', W'), B images in rows of `nrow`, like torchvision.utils.make_grid."""
    images = images.detach().float().cpu()
    b, c, h, w = images.shape
    ncol = min(nrow, b)
    nrows = int(math.ceil(b / ncol))
    grid = torch.full((c, nrows * (h + padding) + padding, ncol * (w + padding) + padding), pad_value)
    for i in range(b):
        r, k = divmod(i, ncol)
        top, left = r * (h + padding) + padding, k * (w + padding) + padding
        grid[:, top:top + h, left:left + w] = images[i]
    return grid


def to_uint8_hwc(grid: torch.Tensor) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> (H, W, C) uint8, with torchvision's rounding."""
    arr = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return arr


def save_image(images: torch.Tensor, path: str | Path, nrow: int = 8) -> None:
    """Save a batch (B, C, H, W) in [0, 1] as one PNG grid; grey stays grey."""
    from PIL import Image

    arr = to_uint8_hwc(make_grid(images, nrow=nrow))
    if arr.shape[2] == 1:
        img = Image.fromarray(arr[:, :, 0], mode="L")
    else:
        img = Image.fromarray(arr, mode="RGB")
    tmp = Path(path).with_suffix(".tmp.png")
    img.save(tmp)
    tmp.replace(path)
