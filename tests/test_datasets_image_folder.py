"""The image_folder loader: layout checks, exact Pillow pixels, the decode cache, and real CIFAR-10 JPEGs."""

from __future__ import annotations

import logging
import os
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset_files import SHARED_DATA, write_image_folder
from libcontinual.data.datasets import image_folder as image_folder_module
from libcontinual.data.datasets.image_folder import CACHE_FOLDER, image_folder
from libcontinual.errors import ConfigError, DataError

CIFAR10_JPG = SHARED_DATA / "cifar10-jpg.tar.gz"
LOSSLESS = SHARED_DATA / "cifar10-lossless-subset.npz"
SUBSET_PER_CLASS = 20
LOGGER = "libcontinual.data.datasets"


def _pillow(paths, mode="RGB"):
    return np.stack([np.asarray(Image.open(path).convert(mode)).reshape(8, 8, -1) for path in paths])


def _cache_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


def test_pixels_labels_and_classes(tmp_path):
    files = write_image_folder(tmp_path)
    data = image_folder(str(tmp_path))
    assert data.class_names == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(data.train_images, _pillow(files["train"]))
    np.testing.assert_array_equal(data.test_images, _pillow(files["test"]))
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert data.train_labels.dtype == np.int64 and data.source == str(tmp_path)


def test_extensions_any_case_and_hidden_or_other_files_ignored(tmp_path):
    write_image_folder(tmp_path, per_class=1)
    source = Image.fromarray(np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    for extension in ("PNG", "jpg", "JPEG", "bmp", "gif", "webp", "ppm", "tif", "TIFF"):
        source.save(tmp_path / "train" / "cat" / f"extra.{extension}")
    source.save(tmp_path / "train" / "cat" / ".hidden.png")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / ".thumbnails").mkdir()
    (tmp_path / "test" / ".thumbnails").mkdir()
    data = image_folder(str(tmp_path))
    assert data.class_names == ["cat", "dog", "emu"]
    assert np.bincount(data.train_labels).tolist() == [10, 1, 1]
    paths = sorted(
        p for p in (tmp_path / "train" / "cat").iterdir() if p.suffix != ".txt" and p.name[0] != "."
    )
    np.testing.assert_array_equal(data.train_images[:10], _pillow(paths))


def test_channels_one_and_image_size_match_pillow(tmp_path):
    files = write_image_folder(tmp_path)
    grey = image_folder(str(tmp_path), channels=1)
    np.testing.assert_array_equal(grey.train_images, _pillow(files["train"], "L"))
    resized = image_folder(str(tmp_path), image_size=5)
    expected = Image.open(files["test"][4]).convert("RGB").resize((5, 5), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(resized.test_images[4], np.asarray(expected))
    with pytest.raises(ConfigError, match="channels"):
        image_folder(str(tmp_path), channels=4)


def test_images_of_different_sizes_need_image_size(tmp_path):
    write_image_folder(tmp_path)
    odd = tmp_path / "train" / "dog" / "001.png"
    Image.new("RGB", (12, 9)).save(odd)
    with pytest.raises(DataError, match="image_size") as error:
        image_folder(str(tmp_path))
    assert str(odd) in str(error.value)
    assert image_folder(str(tmp_path), image_size=8).train_images.shape == (9, 8, 8, 3)


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    write_image_folder(tmp_path)
    first = image_folder(str(tmp_path))
    cache = tmp_path / CACHE_FOLDER
    names = _cache_files(cache)
    assert len(names) == 3 and not [name for name in names if name.endswith(".part")]

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(image_folder_module, "decode_image", no_decoding)
    second = image_folder(str(tmp_path))
    np.testing.assert_array_equal(second.train_images, first.train_images)
    np.testing.assert_array_equal(second.test_labels, first.test_labels)
    assert second.train_images.flags.writeable
    assert len(_cache_files(cache)) == 3


def test_a_changed_file_invalidates_the_cache(tmp_path):
    files = write_image_folder(tmp_path)
    image_folder(str(tmp_path))
    changed = files["test"][0]
    Image.new("RGB", (8, 8), (1, 2, 3)).save(changed)
    data = image_folder(str(tmp_path))
    assert data.test_images[0].tolist() == [[[1, 2, 3]] * 8] * 8
    image_folder(str(tmp_path), image_size=4)
    assert len(_cache_files(tmp_path / CACHE_FOLDER)) == 6  # the stale entry is gone: current + resized


@pytest.mark.parametrize("damage", ["index", "array"])
def test_a_corrupt_cache_is_rebuilt_with_a_warning(tmp_path, caplog, damage):
    files = write_image_folder(tmp_path)
    image_folder(str(tmp_path))
    cache = tmp_path / CACHE_FOLDER
    suffix = ".npz" if damage == "index" else ".train_images.npy"
    target = next(path for path in cache.iterdir() if path.name.endswith(suffix))
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        data = image_folder(str(tmp_path))
    assert "corrupt cache" in caplog.text and str(cache) in caplog.text
    np.testing.assert_array_equal(data.train_images, _pillow(files["train"]))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        image_folder(str(tmp_path))
    assert caplog.text == ""  # rebuilt, so the third load is clean


def test_unwritable_cache_dir_falls_back_to_the_user_cache(tmp_path, monkeypatch, caplog):
    write_image_folder(tmp_path / "data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "blocker").write_text("a file where the cache folder should go")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        image_folder(str(tmp_path / "data"), cache_dir=str(tmp_path / "blocker" / "cache"))
    assert "not writable" in caplog.text and str(tmp_path / "xdg" / "libcontinual") in caplog.text
    assert len(_cache_files(tmp_path / "xdg" / "libcontinual")) == 3
    (tmp_path / "data" / CACHE_FOLDER).write_text("blocks the default cache folder too")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        data = image_folder(str(tmp_path / "data"))
    assert data.num_classes == 3 and "Loaded" in caplog.text and "from the cache" in caplog.text


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda root: os.rename(root, root.with_name("moved")), "image folder .* not found"),
        (lambda root: [p.unlink() for p in (root / "test" / "emu").iterdir()], "test/emu has no images"),
        (lambda root: (root / "train" / "fox").mkdir(), r"only in train: \['fox'\]; only in test: none"),
        (lambda root: os.rename(root / "test", root / "val"), "split .*test not found"),
    ],
)
def test_layout_problems_name_the_path(tmp_path, breakage, message):
    root = tmp_path / "data"
    write_image_folder(root)
    breakage(root)
    with pytest.raises(DataError, match=message) as error:
        image_folder(str(root))
    assert str(root) in str(error.value)


def test_no_class_folders_and_no_data_root(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        image_folder(str(tmp_path))
    with pytest.raises(ConfigError, match="data_root"):
        image_folder(None)


def _break_images(root: Path) -> list[Path]:
    garbage = root / "train" / "dog" / "000.png"
    garbage.write_bytes(b"this is not an image")
    jpeg = root / "test" / "cat" / "zzz.jpg"
    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8)).save(jpeg)
    jpeg.write_bytes(jpeg.read_bytes()[:-40])
    return [garbage, jpeg]


def test_corrupt_images_are_named_and_nothing_is_cached(tmp_path):
    write_image_folder(tmp_path)
    garbage, _ = _break_images(tmp_path)
    with pytest.raises(DataError, match="skip_bad_images") as error:
        image_folder(str(tmp_path))
    assert str(garbage) in str(error.value) and "1 more" in str(error.value)
    assert _cache_files(tmp_path / CACHE_FOLDER) == []


def test_skip_bad_images_leaves_them_out_and_logs_them(tmp_path, caplog):
    files = write_image_folder(tmp_path)
    garbage, jpeg = _break_images(tmp_path)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        data = image_folder(str(tmp_path), skip_bad_images=True)
    assert (
        "Skipped 2 unreadable images" in caplog.text
        and str(garbage) in caplog.text
        and str(jpeg) in caplog.text
    )
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    np.testing.assert_array_equal(data.train_images, _pillow([p for p in files["train"] if p != garbage]))
    assert len(data.test_labels) == 9
    cached = image_folder(str(tmp_path), skip_bad_images=True)
    np.testing.assert_array_equal(cached.train_images, data.train_images)


@pytest.fixture(scope="module")
def cifar10_subset(tmp_path_factory):
    """The first SUBSET_PER_CLASS images of every class and split of the real CIFAR-10 JPEG archive."""
    if not CIFAR10_JPG.is_file():
        pytest.skip(f"shared CIFAR-10 JPEG archive not found at {CIFAR10_JPG}")
    target = tmp_path_factory.mktemp("cifar10-jpg-subset")
    with tarfile.open(CIFAR10_JPG) as tar:
        members = [m for m in tar if m.isfile() and int(Path(m.name).stem) < SUBSET_PER_CLASS]
        tar.extractall(target, members=members, filter="data")
    return target / "cifar10-jpg"


def test_real_cifar10_jpeg_subset_matches_pillow(cifar10_subset, tmp_path):
    data = image_folder(str(cifar10_subset), cache_dir=str(tmp_path))
    assert data.class_names[0] == "airplane" and data.class_names[-1] == "truck"
    assert data.train_images.shape == (10 * SUBSET_PER_CLASS, 32, 32, 3)
    paths = sorted((cifar10_subset / "train").glob("*/*.jpg"))
    expected = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in paths])
    np.testing.assert_array_equal(data.train_images, expected)


@pytest.mark.skipif(not LOSSLESS.is_file(), reason=f"shared lossless CIFAR-10 subset not found at {LOSSLESS}")
def test_real_cifar10_jpeg_subset_is_close_to_the_lossless_originals(cifar10_subset, tmp_path):
    data = image_folder(str(cifar10_subset), cache_dir=str(tmp_path))
    with np.load(LOSSLESS) as lossless:
        originals, labels = lossless["x_train_first4000"], lossless["y_train_first4000"]
    errors = []
    for label in range(10):
        ours = data.train_images[data.train_labels == label].astype(np.int16)
        errors.append(np.abs(ours - originals[labels == label][:SUBSET_PER_CLASS]).mean())
    assert 4.0 < np.mean(errors) < 8.0  # README: JPEG quality 75, mean abs error 5.8/255


@pytest.mark.slow
def test_real_cifar10_jpeg_full_load_and_fast_cached_reload(tmp_path):
    if not CIFAR10_JPG.is_file():
        pytest.skip(f"shared CIFAR-10 JPEG archive not found at {CIFAR10_JPG}")
    with tarfile.open(CIFAR10_JPG) as tar:
        tar.extractall(tmp_path, filter="data")
    root = str(tmp_path / "cifar10-jpg")
    first = image_folder(root)
    assert first.train_images.shape == (50000, 32, 32, 3) and first.test_images.shape == (10000, 32, 32, 3)
    assert np.bincount(first.train_labels).tolist() == [5000] * 10
    started = time.perf_counter()
    cached = image_folder(root)
    assert time.perf_counter() - started < 1.0
    np.testing.assert_array_equal(cached.test_images, first.test_images)
