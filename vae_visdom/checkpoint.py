"""Checkpoints: everything needed to continue a run exactly where it stopped.

One file, RUN_DIR/checkpoint.pt, replaced atomically (write to a temp file, then
os.replace) at the end of every epoch and when a run is stopped mid-epoch, so a
crash at any instant leaves the previous good checkpoint in place.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT = "checkpoint.pt"


def save(run_dir: str | Path, state: dict[str, Any]) -> Path:
    path = Path(run_dir) / CHECKPOINT
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    with open(tmp, "rb") as f:  # the bytes are on disk before the rename makes them the checkpoint
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load(run_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint in {run_dir} (expected {path})")
    # our own files hold RNG states (ByteTensors) and plain containers: weights_only loading handles them
    return torch.load(path, map_location=map_location, weights_only=True)


def exists(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHECKPOINT).exists()
