"""A large image folder is decoded by worker processes (the same pixels as one process's threads), and the
cache is read back memory-mapped: the file's pages, shared by every rank, not a private copy."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vae_visdom.data import image_cache


def jpegs(root: Path, n: int) -> list[str]:
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (44, 36, 3), dtype=np.uint8)).save(root / f"{i:04d}.jpg", quality=90)
    return sorted(p.name for p in root.iterdir())


def test_worker_processes_decode_what_threads_decode_and_the_cache_is_memory_mapped(tmp_path, monkeypatch, capsys):
    root = tmp_path / "faces"
    names = jpegs(root, image_cache.POOL_FROM + 40)
    monkeypatch.setenv(image_cache.ENV_WORKERS, "1")
    alone, _ = image_cache.cached_decode("folder", root, names, 1.0, 16, None)
    monkeypatch.setenv(image_cache.ENV_WORKERS, "2")
    pooled, cached = image_cache.cached_decode("folder", root, names, 1.0, 16, tmp_path / "cache")
    assert not cached and torch.equal(pooled.images, alone.images) and pooled.names == names
    assert "decoding faces (2 workers)" in capsys.readouterr().err  # the progress bar
    again, cached = image_cache.cached_decode("folder", root, names, 1.0, 16, tmp_path / "cache")
    assert cached and torch.equal(again.images, alone.images)
    (cache_file,) = (tmp_path / "cache" / "images").glob("*.pt")
    maps = Path(f"/proc/{os.getpid()}/maps").read_text()
    assert str(cache_file) in maps  # read back as a mapping of the file
