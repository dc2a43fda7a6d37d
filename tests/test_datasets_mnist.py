"""MNIST / Fashion-MNIST IDX files: tiny ones made here (raw and gzip) and the real shared copies."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from dataset_files import SHARED_DATA, write_idx, write_mnist
from libcontinual.data.datasets.mnist import (
    FASHION_MNIST_SYSTEM_ROOT,
    IMAGES_MAGIC,
    fashion_mnist,
    mnist,
    read_idx,
)
from libcontinual.errors import ConfigError, DataError

MNIST_ROOT = SHARED_DATA / "mnist"


@pytest.mark.parametrize("compress", [False, True])
def test_tiny_idx_files_load_exactly(tmp_path, compress):
    expected = write_mnist(tmp_path, compress=compress)
    data = mnist(str(tmp_path))
    assert data.train_images.shape == (20, 28, 28, 1) and data.test_images.shape == (8, 28, 28, 1)
    np.testing.assert_array_equal(data.train_images[..., 0], expected["train_images"])
    np.testing.assert_array_equal(data.test_labels, expected["test_labels"])
    assert data.train_labels.dtype == np.int64 and data.class_names == [str(digit) for digit in range(10)]


def test_gzip_is_detected_by_content_and_dotted_names_accepted(tmp_path):
    expected = write_mnist(tmp_path / "raw", compress=True)
    for path in (tmp_path / "raw").iterdir():  # gzip content under uncompressed, dotted names
        path.rename(path.with_name(path.name.removesuffix(".gz").replace("-idx", ".idx")))
    data = mnist(str(tmp_path))
    np.testing.assert_array_equal(data.test_images[..., 0], expected["test_images"])


def test_channels_three_repeats_grey_and_image_size_resizes(tmp_path):
    expected = write_mnist(tmp_path, compress=False)
    data = mnist(str(tmp_path), channels=3, image_size=32)
    assert data.train_images.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(data.train_images[..., 0], data.train_images[..., 2])
    plain = mnist(str(tmp_path), channels=3)
    np.testing.assert_array_equal(plain.train_images[..., 1], expected["train_images"])


def test_wrong_magic_names_the_file(tmp_path):
    write_mnist(tmp_path, compress=False)
    labels = tmp_path / "train-labels-idx1-ubyte"
    images = tmp_path / "train-images-idx3-ubyte"
    labels.rename(tmp_path / "swap")
    images.rename(labels)
    (tmp_path / "swap").rename(images)
    with pytest.raises(DataError, match="magic number 0x00000801, expected 0x00000803") as error:
        mnist(str(tmp_path))
    assert str(images) in str(error.value)


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_file_names_the_file(tmp_path, compress):
    write_mnist(tmp_path, compress=compress)
    name = "t10k-images-idx3-ubyte" + (".gz" if compress else "")
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DataError, match="truncated") as error:
        mnist(str(tmp_path))
    assert str(path) in str(error.value)


def test_images_and_labels_counts_must_match(tmp_path):
    write_mnist(tmp_path, compress=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(19, dtype=np.uint8), compress=False)
    with pytest.raises(DataError, match="20 images but .*19 labels"):
        mnist(str(tmp_path))


def test_label_out_of_range_is_rejected(tmp_path):
    write_mnist(tmp_path, compress=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.full(8, 12, dtype=np.uint8), compress=False)
    with pytest.raises(DataError, match="labels must lie in"):
        mnist(str(tmp_path))


def test_missing_file_and_missing_data_root(tmp_path):
    write_mnist(tmp_path, compress=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as error:
        mnist(str(tmp_path))
    assert str(tmp_path) in str(error.value) and "download=True" in str(error.value)
    with pytest.raises(ConfigError, match="data_root"):
        mnist(None)


def test_bad_channels_is_a_config_error(tmp_path):
    write_mnist(tmp_path, compress=False)
    with pytest.raises(ConfigError, match="channels"):
        mnist(str(tmp_path), channels=2)


def test_read_idx_returns_writable_arrays(tmp_path):
    path = write_idx(tmp_path / "x", np.arange(24, dtype=np.uint8).reshape(2, 3, 4), compress=True)
    array = read_idx(path, IMAGES_MAGIC)
    assert array.shape == (2, 3, 4) and array.flags.writeable


@pytest.mark.skipif(not MNIST_ROOT.is_dir(), reason=f"shared MNIST copy not found at {MNIST_ROOT}")
def test_real_mnist():
    data = mnist(str(MNIST_ROOT))
    assert data.train_images.shape == (60000, 28, 28, 1) and data.test_images.shape == (10000, 28, 28, 1)
    assert np.bincount(data.train_labels).tolist()[:3] == [5923, 6742, 5958]
    assert data.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    raw = gzip.decompress((MNIST_ROOT / "train-images-idx3-ubyte.gz").read_bytes())
    assert hashlib.md5(raw).hexdigest() == "6bbc9ace898e44ae57da46a324031adb"
    assert data.train_images.tobytes() == raw[16:]


@pytest.mark.skipif(
    not Path(FASHION_MNIST_SYSTEM_ROOT).is_dir(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_from_the_system_location():
    data = fashion_mnist(None)
    assert data.train_images.shape == (60000, 28, 28, 1) and data.test_images.shape == (10000, 28, 28, 1)
    assert np.bincount(data.test_labels).tolist() == [1000] * 10
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    assert data.source == FASHION_MNIST_SYSTEM_ROOT


def test_fashion_mnist_with_a_data_root(tmp_path):
    expected = write_mnist(tmp_path, compress=True)
    data = fashion_mnist(str(tmp_path))
    np.testing.assert_array_equal(data.train_images[..., 0], expected["train_images"])
    with pytest.raises(ConfigError, match="data_root"):
        fashion_mnist(None, download=True)
