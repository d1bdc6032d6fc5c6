"""Image grids and PNGs, laid out as torchvision's make_grid/save_image do (padding 2, black).

Pure numpy on purpose: the visdom monitor encodes grids on its sender thread, and a torch op
there starts a second OpenMP thread team that competes with the training step's (measured:
epochs 1.8x slower on 2 cores; see docs/performance.md).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from vae_visdom import safe_io


def _as_array(images) -> np.ndarray:
    """A CPU tensor or an array (B, C, H, W) -> float32 numpy, without running a torch kernel."""
    if hasattr(images, "detach"):
        images = images.detach().numpy()
    return np.asarray(images, dtype=np.float32)


def make_grid(images, nrow: int = 8, padding: int = 2, pad_value: float = 0.0) -> np.ndarray:
    """(B, C, H, W) in [0, 1] -> (C, H', W'), B images in rows of `nrow`, like torchvision.utils.make_grid."""
    images = _as_array(images)
    b, c, h, w = images.shape
    ncol = min(nrow, b)
    nrows = int(math.ceil(b / ncol))
    grid = np.full((c, nrows * (h + padding) + padding, ncol * (w + padding) + padding), pad_value,
                   dtype=np.float32)
    for i in range(b):
        r, k = divmod(i, ncol)
        top, left = r * (h + padding) + padding, k * (w + padding) + padding
        grid[:, top:top + h, left:left + w] = images[i]
    return grid


def to_uint8_hwc(grid: np.ndarray) -> np.ndarray:
    """(C, H, W) float in [0, 1] -> (H, W, C) uint8, with torchvision's rounding."""
    return np.clip(grid * 255 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def save_image(images, path: str | Path, nrow: int = 8) -> None:
    """Save a batch (B, C, H, W) in [0, 1] as one PNG grid; grey stays grey. Atomic (safe_io)."""
    import io

    from PIL import Image  # late: a run that saves no image never loads PIL

    arr = to_uint8_hwc(make_grid(images, nrow=nrow))
    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    safe_io.atomic_write(path, buf.getvalue())
