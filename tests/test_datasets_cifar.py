"""CIFAR-10 / CIFAR-100 from tiny archives in the official python format, made here."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from dataset_files import CIFAR10_FOLDER, CIFAR100_FOLDER, tar_gz, write_cifar10, write_cifar100
from libcontinual.data.datasets.cifar import cifar10, cifar100
from libcontinual.errors import ConfigError, DataError


def _check_cifar10(data, expected):
    np.testing.assert_array_equal(data.train_images, expected["train_images"])
    np.testing.assert_array_equal(data.train_labels, expected["train_labels"])
    np.testing.assert_array_equal(data.test_images, expected["test_images"])
    np.testing.assert_array_equal(data.test_labels, expected["test_labels"])
    assert data.class_names == expected["class_names"]
    assert data.train_labels.dtype == np.int64 and data.train_images.flags.c_contiguous


@pytest.mark.parametrize("where", ["parent", "folder", "archive_in_root", "archive_path"])
def test_cifar10_reads_folder_or_archive(tmp_path, where):
    expected = write_cifar10(tmp_path / "src")
    if where == "parent":
        root = tmp_path / "src"
    elif where == "folder":
        root = tmp_path / "src" / CIFAR10_FOLDER
    else:
        archive = tar_gz(tmp_path / "src" / CIFAR10_FOLDER, tmp_path / "data" / "cifar-10-python.tar.gz")
        root = tmp_path / "data" if where == "archive_in_root" else archive
    data = cifar10(str(root))
    _check_cifar10(data, expected)
    assert data.source.endswith(".tar.gz") == where.startswith("archive")


def test_cifar10_pixel_layout_is_height_width_channel(tmp_path):
    expected = write_cifar10(tmp_path)
    data = cifar10(str(tmp_path))
    batch = pickle.loads((tmp_path / CIFAR10_FOLDER / "data_batch_1").read_bytes(), encoding="bytes")
    row = batch[b"data"][0]
    red, green, blue = row[:1024].reshape(32, 32), row[1024:2048].reshape(32, 32), row[2048:].reshape(32, 32)
    np.testing.assert_array_equal(data.train_images[0], np.stack([red, green, blue], axis=-1))
    assert data.image_shape == (32, 32, 3) and expected["train_images"].shape == (15, 32, 32, 3)


def test_cifar100_fine_labels_and_coarse_extras(tmp_path):
    expected = write_cifar100(tmp_path / "src")
    archive = tar_gz(tmp_path / "src" / CIFAR100_FOLDER, tmp_path / "cifar-100-python.tar.gz")
    for root in (tmp_path / "src", archive):
        data = cifar100(str(root))
        assert data.num_classes == 100 and data.class_names == expected["class_names"]
        for split in ("train", "test"):
            np.testing.assert_array_equal(getattr(data, f"{split}_images"), expected[f"{split}_images"])
            np.testing.assert_array_equal(getattr(data, f"{split}_labels"), expected[f"{split}_labels"])
            coarse = data.extras[f"{split}_coarse_labels"]
            assert coarse.dtype == np.int64
            np.testing.assert_array_equal(coarse, expected[f"{split}_coarse_labels"])
        assert data.extras["coarse_class_names"].dtype.kind == "U"
        assert list(data.extras["coarse_class_names"]) == expected["coarse_class_names"]


def test_image_size_resizes_with_pillow_bilinear(tmp_path):
    expected = write_cifar10(tmp_path)
    data = cifar10(str(tmp_path), image_size=16)
    assert data.train_images.shape == (15, 16, 16, 3)
    reference = Image.fromarray(expected["test_images"][2]).resize((16, 16), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(data.test_images[2], np.asarray(reference))


def test_missing_dataset_names_both_places_and_download(tmp_path):
    with pytest.raises(DataError) as error:
        cifar10(str(tmp_path / "nowhere"))
    message = str(error.value)
    for part in ("nowhere", "cifar-10-batches-py", "cifar-10-python.tar.gz", "download=True"):
        assert part in message


def test_data_root_is_required(tmp_path):
    with pytest.raises(ConfigError, match="data_root"):
        cifar100(None)


def test_bad_image_size_is_a_config_error(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(ConfigError, match="image_size"):
        cifar10(str(tmp_path), image_size=0)


def test_truncated_archive_names_the_file(tmp_path):
    write_cifar10(tmp_path / "src")
    archive = tar_gz(tmp_path / "src" / CIFAR10_FOLDER, tmp_path / "cifar-10-python.tar.gz")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as error:
        cifar10(str(tmp_path))
    assert str(archive) in str(error.value)


def test_archive_without_the_batches_is_rejected(tmp_path):
    (tmp_path / "src" / CIFAR10_FOLDER).mkdir(parents=True)
    (tmp_path / "src" / CIFAR10_FOLDER / "readme.txt").write_text("not cifar")
    tar_gz(tmp_path / "src" / CIFAR10_FOLDER, tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(DataError, match="lacks .*data_batch_1"):
        cifar10(str(tmp_path))


def test_folder_missing_a_batch_is_named(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / CIFAR10_FOLDER / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        cifar10(str(tmp_path))


class _Evil:
    def __reduce__(self):
        return (shutil.rmtree, ("/definitely/not/here",))


def test_pickle_with_foreign_globals_is_refused(tmp_path):
    write_cifar10(tmp_path)
    batch = tmp_path / CIFAR10_FOLDER / "test_batch"
    batch.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match="refusing to load shutil.rmtree") as error:
        cifar10(str(tmp_path))
    assert str(batch) in str(error.value)


def test_modern_pickle_protocol_is_accepted(tmp_path):
    expected = write_cifar10(tmp_path)
    batch = tmp_path / CIFAR10_FOLDER / "test_batch"
    content = pickle.loads(batch.read_bytes(), encoding="bytes")
    batch.write_bytes(pickle.dumps(content, protocol=pickle.HIGHEST_PROTOCOL))
    np.testing.assert_array_equal(cifar10(str(tmp_path)).test_images, expected["test_images"])


def test_label_count_mismatch_is_reported(tmp_path):
    write_cifar10(tmp_path)
    batch = tmp_path / CIFAR10_FOLDER / "data_batch_2"
    content = pickle.loads(batch.read_bytes(), encoding="bytes")
    content[b"labels"] = content[b"labels"][:-1]
    batch.write_bytes(pickle.dumps(content, protocol=2))
    with pytest.raises(DataError, match="2 entries in b'labels' for 3 images") as error:
        cifar10(str(tmp_path))
    assert "data_batch_2" in str(error.value)
