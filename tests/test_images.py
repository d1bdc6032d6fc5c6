"""Face and image-folder datasets: decoding, cropping, splits, the decode cache, ORL and CelebA layouts."""
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vae_visdom.data import DataError, ImageData, images, load_dataset


def _noise(w: int, h: int, mode: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if mode == "L":
        return Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """12 readable images (PNG/JPEG/BMP/PGM, RGB and grey, odd sizes, nested), one corrupt file, one text file."""
    root = tmp_path / "faces"
    specs = [("a/1.png", 50, 70, "RGB"), ("a/2.jpg", 300, 200, "RGB"), ("a/3.JPEG", 17, 33, "L"),
             ("b/4.bmp", 64, 64, "RGB"), ("b/deep/5.pgm", 92, 112, "L"), ("b/deep/6.png", 128, 96, "L"),
             ("c/7.jpg", 65, 63, "L"), ("c/8.png", 640, 480, "RGB"), ("c/9.png", 33, 200, "RGB"),
             ("c/10.jpg", 178, 218, "RGB"), ("d/11.png", 1, 1, "L"), ("d/12.tif", 80, 60, "RGB")]
    for i, (name, w, h, mode) in enumerate(specs):
        _save(_noise(w, h, mode, i), root / name)
    (root / "d" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (root / "d" / "notes.txt").write_text("not an image, not counted")
    (root / ".hidden").mkdir()
    _save(_noise(10, 10, "RGB", 99), root / ".hidden" / "thumb.png")  # hidden folders are skipped
    return root


def test_a_mixed_folder_becomes_uint8_rgb_64x64_and_the_corrupt_file_is_counted(mixed_folder, tmp_path):
    data = load_dataset("folder", str(mixed_folder), seed=3, test_fraction=0.25, cache_dir=tmp_path / "cache")
    assert isinstance(data, ImageData)
    assert data.train.dtype == data.test.dtype == torch.uint8
    assert data.image_shape == (3, 64, 64)  # some images have colour: all become RGB
    assert len(data.train) + len(data.test) == 12 and len(data.test) == 3
    assert data.skipped == 1 and "1 unreadable file skipped" in data.source and "broken.png" in data.source
    # every image sits in a first-level sub-folder: that folder is its label, as in ImageFolder
    assert sorted(torch.cat([data.train_labels, data.test_labels]).tolist()) == [0] * 3 + [1] * 3 + [2] * 4 + [3] * 2


def test_the_split_is_fixed_by_the_seed_and_changes_with_it(mixed_folder, tmp_path):
    kw = dict(test_fraction=0.25, cache_dir=tmp_path / "cache")
    a = load_dataset("folder", str(mixed_folder), seed=1, **kw)
    b = load_dataset("folder", str(mixed_folder), seed=1, **kw)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    others = [load_dataset("folder", str(mixed_folder), seed=s, **kw).test for s in (2, 3, 4)]
    assert any(not torch.equal(a.test, t) for t in others)
    for t in others:  # a different seed only moves images between the sides
        assert len(t) == 3


def test_an_all_grey_folder_gives_one_channel_even_from_rgb_files(tmp_path):
    root = tmp_path / "grey"
    for i in range(4):
        _save(_noise(40 + i, 50, "L", i), root / f"{i}.png")
    _save(_noise(60, 60, "L", 9).convert("RGB"), root / "rgb_but_grey.png")  # R == G == B
    data = load_dataset("folder", str(root), cache_dir=tmp_path / "cache")
    assert data.image_shape == (1, 64, 64)
    assert data.train_labels is None  # a flat folder has no classes


def test_images_are_resized_on_the_short_side_and_centre_cropped(tmp_path):
    root = tmp_path / "crop"
    wide = np.zeros((100, 300), np.uint8)
    wide[:, 100:200] = 255  # only the centred 100x100 square is white
    tall = np.zeros((300, 100), np.uint8)
    tall[100:200, :] = 255
    _save(Image.fromarray(wide), root / "wide.png")
    _save(Image.fromarray(tall), root / "tall.png")
    data = images.load_folder(root, test_fraction=0.5, cache_dir=None)
    for img in torch.cat([data.train, data.test]):
        assert img.shape == (1, 64, 64)
        assert img[:, 1:-1, 1:-1].min() == 255  # nothing of the black sides made it in


def test_an_empty_or_unreadable_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        load_dataset("folder", str(tmp_path / "empty"), cache_dir=tmp_path / "cache")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"garbage")
    (bad / "y.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"found 0 readable image.*2 unreadable"):
        load_dataset("folder", str(bad), cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="data-dir"):
        images.load("folder", None)


def test_a_second_load_reads_the_cache_instead_of_decoding(mixed_folder, tmp_path):
    cache = tmp_path / "cache"
    first = load_dataset("folder", str(mixed_folder), cache_dir=cache)
    assert "from the cache" not in first.source
    assert len(list((cache / "images").glob("folder-*.pt"))) == 1
    # Rewrite one image with other pixels but the same size and mtime: only a cache read returns the old pixels.
    target = mixed_folder / "b" / "4.bmp"
    st = target.stat()
    _save(_noise(64, 64, "RGB", 1234), target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size
    second = load_dataset("folder", str(mixed_folder), cache_dir=cache)
    assert "from the cache" in second.source and second.skipped == 1
    assert torch.equal(first.train, second.train) and torch.equal(first.test, second.test)


def test_a_changed_folder_is_decoded_afresh(mixed_folder, tmp_path):
    cache = tmp_path / "cache"
    first = load_dataset("folder", str(mixed_folder), test_fraction=0.25, cache_dir=cache)
    _save(_noise(64, 64, "RGB", 77), mixed_folder / "e" / "13.png")  # an added file
    added = load_dataset("folder", str(mixed_folder), test_fraction=0.25, cache_dir=cache)
    assert "from the cache" not in added.source and len(added.train) + len(added.test) == 13
    target = mixed_folder / "b" / "4.bmp"  # rewritten in place: same size (uncompressed BMP), new mtime
    size = target.stat().st_size
    _save(Image.new("RGB", (64, 64), (255, 0, 0)), target)
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    assert target.stat().st_size == size
    changed = load_dataset("folder", str(mixed_folder), test_fraction=0.25, cache_dir=cache)
    assert "from the cache" not in changed.source
    everything = torch.cat([changed.train, changed.test])
    red = (everything[:, 0] == 255) & (everything[:, 1] == 0) & (everything[:, 2] == 0)  # (N, 64, 64)
    assert red.flatten(1).all(1).sum() == 1
    (mixed_folder / "d" / "broken.png").unlink()  # a removed file
    removed = load_dataset("folder", str(mixed_folder), test_fraction=0.25, cache_dir=cache)
    assert removed.skipped == 0 and "from the cache" not in removed.source
    assert len(list((cache / "images").glob("folder-*.pt"))) == 1  # stale versions are not kept
    assert len(first.train) + len(first.test) == 12


SKIN = (240, 180, 140)


def _celeba(root: Path, n: int, with_partition: bool) -> None:
    """n fake 178x218 aligned faces: a skin-coloured 148x148 centre on black, which the CelebA crop keeps."""
    arr = np.zeros((218, 178, 3), np.uint8)
    arr[35:183, 15:163] = SKIN
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        Image.fromarray(arr).save(root / f"{i:06d}.jpg", quality=95)
    if with_partition:  # like the real file: train first, then valid, then test
        parts = [0] * (n - 4) + [1, 1, 2, 2]
        (root.parent / "list_eval_partition.txt").write_text(
            "".join(f"{i:06d}.jpg {p}\n" for i, p in enumerate(parts, 1)))


def test_celeba_in_torchvisions_layout_uses_the_official_split_and_the_148_crop(tmp_path):
    _celeba(tmp_path / "ds" / "celeba" / "img_align_celeba", 12, with_partition=True)
    data = load_dataset("celeba", str(tmp_path / "ds"), cache_dir=tmp_path / "cache")
    assert data.image_shape == (3, 64, 64)
    assert (len(data.train), len(data.test)) == (8, 2)  # partition 0 / 2; 'valid' is left out
    assert "official split" in data.source
    inner = data.train[:, :, 2:-2, 2:-2].flatten(2)  # (N, 3, 60*60)
    for channel, value in enumerate(SKIN):  # the black border lay outside the 148x148 crop
        assert (inner[:, channel].int() - value).abs().max() <= 6


@pytest.mark.parametrize("layout", ["bare", "flat"])
def test_a_small_celeba_subset_takes_the_first_images_by_name(tmp_path, layout):
    folder = tmp_path / "ds" / "img_align_celeba" if layout == "bare" else tmp_path / "ds"
    _celeba(folder, 10, with_partition=False)
    data = load_dataset("celeba", str(tmp_path / "ds"), subset=6, test_fraction=0.5, cache_dir=tmp_path / "c")
    assert (len(data.train), len(data.test)) == (3, 3)
    assert "first 6 images" in data.source and "seeded split" in data.source


def test_a_subset_inside_the_official_train_partition_falls_back_to_a_seeded_split(tmp_path):
    _celeba(tmp_path / "ds" / "celeba" / "img_align_celeba", 12, with_partition=True)
    data = load_dataset("celeba", str(tmp_path / "ds"), subset=5, test_fraction=0.2, cache_dir=tmp_path / "c")
    assert (len(data.train), len(data.test)) == (4, 1) and "seeded split" in data.source


def test_subsets_of_one_folder_are_cached_side_by_side(tmp_path):
    _celeba(tmp_path / "ds" / "img_align_celeba", 8, with_partition=False)
    for subset in (4, 6, 4, 6):
        data = load_dataset("celeba", str(tmp_path / "ds"), subset=subset, cache_dir=tmp_path / "c")
        assert len(data.train) + len(data.test) == subset
    assert "from the cache" in data.source
    assert len(list((tmp_path / "c" / "images").glob("celeba-*.pt"))) == 2


def test_a_read_only_cache_only_costs_speed(mixed_folder, tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache folder should be")
    data = load_dataset("folder", str(mixed_folder), cache_dir=blocker)
    assert len(data.train) + len(data.test) == 12


def test_celeba_without_images_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="img_align_celeba"):
        load_dataset("celeba", str(tmp_path), cache_dir=tmp_path / "c")


def test_orl_faces_load_as_400_grey_64x64_images_split_by_person(tmp_path):
    data = load_dataset("orl", cache_dir=tmp_path)
    assert data.image_shape == (1, 64, 64) and data.train.dtype == torch.uint8
    assert (len(data.train), len(data.test)) == (360, 40)
    assert torch.bincount(data.train_labels).tolist() == [9] * 40
    assert torch.bincount(data.test_labels).tolist() == [1] * 40
    assert data.train.float().std() > 20  # real faces, not a blank
    again = load_dataset("orl", cache_dir=tmp_path)
    assert torch.equal(again.test, data.test) and "from the cache" in again.source
    two = load_dataset("orl", cache_dir=tmp_path, test_fraction=0.2, seed=5)
    assert torch.bincount(two.test_labels).tolist() == [2] * 40 and len(two.train) == 320
    assert not torch.equal(two.test[::2], data.test)


def test_orl_from_a_data_dir_with_the_same_layout(tmp_path):
    src = images.orl_root()
    for person in ("s1", "s2", "s3"):
        shutil.copytree(src / person, tmp_path / "ORL_faces" / person)
    data = load_dataset("orl", str(tmp_path), cache_dir=tmp_path / "cache")
    assert (len(data.train), len(data.test)) == (27, 3)
    assert sorted(set(data.train_labels.tolist())) == [0, 1, 2]
    with pytest.raises(DataError, match="s1..s40"):
        load_dataset("orl", str(tmp_path / "cache"), cache_dir=tmp_path / "cache")
