"""Atomic cache files: interrupted writes leave nothing that looks complete; damaged entries are rebuilt."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from dataset_files import write_image_folder
from libcontinual.data.datasets import cache
from libcontinual.data.datasets.image_folder import CACHE_FOLDER, image_folder

LARGE, SMALL = ("images",), ("labels",)


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "file.bin"
    with cache.atomic_write(target) as handle:
        handle.write(b"complete")
    with pytest.raises(RuntimeError), cache.atomic_write(target) as handle:
        handle.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"complete"
    assert [path.name for path in tmp_path.iterdir()] == ["file.bin"]


def test_entry_round_trip_is_memory_mapped_and_writable(tmp_path):
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    assert cache.save_entry(tmp_path / "e", {"images": images}, {"labels": np.array([0, 1])})
    loaded = cache.load_entry(tmp_path / "e", LARGE, SMALL)
    np.testing.assert_array_equal(loaded["images"], images)
    assert type(loaded["images"]) is np.ndarray and loaded["images"].flags.writeable
    loaded["images"][0] = 0  # copy-on-write: the file keeps its content
    np.testing.assert_array_equal(cache.load_entry(tmp_path / "e", LARGE, SMALL)["images"], images)


def test_an_entry_without_its_index_is_absent(tmp_path, monkeypatch):
    def full_disk(path, arrays):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache, "save_arrays", full_disk)
    assert not cache.save_entry(tmp_path / "e", {"images": np.zeros((1, 2, 2, 1), np.uint8)}, {"labels": [0]})
    assert cache.load_entry(tmp_path / "e", LARGE, SMALL) is None
    assert not [path for path in tmp_path.iterdir() if path.suffix in (".npz", ".part")]


@pytest.mark.parametrize("victim", ["e.npz", "e.images.npy"])
def test_a_damaged_entry_is_discarded_with_a_warning(tmp_path, caplog, victim):
    cache.save_entry(tmp_path / "e", {"images": np.ones((50, 8, 8, 3), np.uint8)}, {"labels": np.zeros(50)})
    path = tmp_path / victim
    path.write_bytes(path.read_bytes()[:-100])
    with caplog.at_level(logging.WARNING, logger="libcontinual.data.datasets.cache"):
        assert cache.load_entry(tmp_path / "e", LARGE, SMALL) is None
    assert "corrupt cache" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_writable_cache_dir_falls_back_then_gives_up(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.writable_cache_dir(tmp_path / "ok", explicit=True) == tmp_path / "ok"
    (tmp_path / "file").write_text("")
    assert (
        cache.writable_cache_dir(tmp_path / "file" / "sub", explicit=True)
        == tmp_path / "xdg" / "libcontinual"
    )
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    assert cache.writable_cache_dir(tmp_path / "file" / "sub", explicit=False) is None


def test_fingerprint_depends_on_every_part_and_their_order():
    assert cache.fingerprint(["a", "b"]) == cache.fingerprint(["a", "b"])
    assert len({cache.fingerprint(parts) for parts in (["a", "b"], ["b", "a"], ["ab"], ["a", "b", ""])}) == 4


def test_image_folder_survives_a_failed_cache_write(tmp_path, monkeypatch, caplog):
    write_image_folder(tmp_path)

    def full_disk(path, arrays):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache, "save_arrays", full_disk)
    with caplog.at_level(logging.WARNING, logger="libcontinual.data.datasets.cache"):
        data = image_folder(str(tmp_path))
    assert data.train_images.shape == (9, 8, 8, 3) and "Could not write cache" in caplog.text
    leftovers = [path.name for path in (tmp_path / CACHE_FOLDER).iterdir()]
    assert not [name for name in leftovers if name.endswith((".npz", ".part"))]


def test_a_changed_folder_replaces_its_stale_entry_and_keeps_other_sources(tmp_path):
    shared = tmp_path / "cache"
    first, second = tmp_path / "first", tmp_path / "second"
    files = write_image_folder(first)
    write_image_folder(second, seed=1)

    def indexes() -> set[str]:
        return {path.name for path in shared.glob("*.npz")}

    image_folder(str(first), cache_dir=str(shared))
    image_folder(str(first), image_size=4, cache_dir=str(shared))
    image_folder(str(second), cache_dir=str(shared))
    before = indexes()
    assert len(before) == 3
    files["train"][0].write_bytes(files["train"][1].read_bytes())  # the dataset changes: new size/mtime
    changed = image_folder(str(first), cache_dir=str(shared))
    after = indexes()
    assert len(after) == 3 and len(after - before) == 1  # one entry replaced, two kept
    stale = (before - after).pop()
    assert not list(shared.glob(stale.removesuffix(".npz") + "*"))  # its .npy files went with it
    np.testing.assert_array_equal(changed.train_images[0], changed.train_images[1])
    np.testing.assert_array_equal(
        image_folder(str(first), cache_dir=str(shared)).train_images, changed.train_images
    )
