"""The npz loader: valid files, conversions, and every kind of bad file named in the error."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from dataset_files import SHARED_DATA
from libcontinual.data.datasets.npz import npz
from libcontinual.errors import ConfigError, DataError

LOSSLESS = SHARED_DATA / "cifar10-lossless-subset.npz"


def _arrays(rng=None, train=12, test=6, shape=(8, 8, 3)):
    rng = rng or np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (train, *shape), dtype=np.uint8),
        "y_train": np.arange(train) % 4,
        "x_test": rng.integers(0, 256, (test, *shape), dtype=np.uint8),
        "y_test": np.arange(test) % 4,
    }


def _save(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_valid_file_and_folder_with_one_file(tmp_path):
    arrays = _arrays()
    path = _save(tmp_path / "set.npz", **arrays, class_names=np.array(["a", "b", "c", "d", "e"]))
    for root in (path, tmp_path):
        data = npz(str(root))
        np.testing.assert_array_equal(data.train_images, arrays["x_train"])
        np.testing.assert_array_equal(data.test_labels, arrays["y_test"])
        assert data.class_names == ["a", "b", "c", "d", "e"] and data.source == str(path)
        assert data.train_labels.dtype == np.int64


def test_grey_images_get_a_channel_and_default_class_names(tmp_path):
    arrays = _arrays(shape=(8, 8))
    data = npz(str(_save(tmp_path / "grey.npz", **arrays)))
    assert data.image_shape == (8, 8, 1) and data.class_names == ["0", "1", "2", "3"]


def test_float_images_are_converted(tmp_path, caplog):
    arrays = _arrays()
    unit = {**arrays, "x_train": arrays["x_train"] / 255.0, "x_test": arrays["x_test"].astype(np.float32)}
    with caplog.at_level(logging.INFO, logger="libcontinual.data.datasets.npz"):
        data = npz(str(_save(tmp_path / "float.npz", **unit)))
    np.testing.assert_array_equal(data.train_images, arrays["x_train"])
    np.testing.assert_array_equal(data.test_images, arrays["x_test"])
    assert "[0, 1]" in caplog.text and "[0, 255]" in caplog.text


def test_keras_style_column_labels_are_flattened(tmp_path):
    arrays = _arrays()
    arrays["y_train"] = arrays["y_train"][:, None]
    assert npz(str(_save(tmp_path / "k.npz", **arrays))).train_labels.shape == (12,)


def test_image_size_resizes(tmp_path):
    data = npz(str(_save(tmp_path / "r.npz", **_arrays())), image_size=4)
    assert data.train_images.shape == (12, 4, 4, 3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("y_test"), "lacks 'y_test'"),
        (
            lambda a: a.update(y_train=a["y_train"][:-1]),
            "key 'y_train': 11 labels for 12 images in 'x_train'",
        ),
        (lambda a: a.update(y_test=np.full(6, -1)), "key 'y_test': negative label -1"),
        (lambda a: a.update(y_test=np.arange(6) % 9), "key 'y_test': label 5 .* out of range"),
        (lambda a: a.update(y_train=a["y_train"] * 0.5), "labels must be a 1-D integer array"),
        (lambda a: a.update(x_test=a["x_test"] * 2.0), r"pixel values must lie in \[0, 255\]"),
        (lambda a: a.update(x_train=a["x_train"].transpose(0, 3, 1, 2)[:, :, :, :2]), "channels first"),
        (lambda a: a.update(x_test=a["x_test"][:, :4]), "train images are .* but test images are"),
    ],
)
def test_bad_files_name_file_key_and_problem(tmp_path, change, message):
    arrays = {**_arrays(), "class_names": np.array(["a", "b", "c", "d", "e"])}
    change(arrays)
    path = _save(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message) as error:
        npz(str(path))
    assert str(path) in str(error.value)


def test_object_class_names_get_a_hint(tmp_path):
    path = _save(tmp_path / "obj.npz", **_arrays(), class_names=np.array(["a", 1], dtype=object))
    with pytest.raises(DataError, match="save class_names as a str array"):
        npz(str(path))


def test_folder_must_hold_exactly_one_file(tmp_path):
    with pytest.raises(DataError, match="exactly one .npz file, found none"):
        npz(str(tmp_path))
    _save(tmp_path / "a.npz", **_arrays())
    _save(tmp_path / "b.npz", **_arrays())
    with pytest.raises(DataError, match="found a.npz, b.npz"):
        npz(str(tmp_path))
    with pytest.raises(DataError, match="not found"):
        npz(str(tmp_path / "missing.npz"))


def test_corrupt_file_is_named(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError, match="cannot read") as error:
        npz(str(path))
    assert str(path) in str(error.value)


def test_keys_must_be_known_names(tmp_path):
    with pytest.raises(ConfigError, match="unknown images"):
        npz(str(_save(tmp_path / "a.npz", **_arrays())), keys={"images": "x"})


@pytest.mark.skipif(not LOSSLESS.is_file(), reason=f"shared lossless CIFAR-10 subset not found at {LOSSLESS}")
def test_lossless_cifar10_subset_with_mapped_keys():
    keys = {
        "x_train": "x_train_first4000",
        "y_train": "y_train_first4000",
        "x_test": "x_test_first1000",
        "y_test": "y_test_first1000",
    }
    data = npz(str(LOSSLESS), keys=keys)
    assert data.train_images.shape == (4000, 32, 32, 3) and data.test_images.shape == (1000, 32, 32, 3)
    assert data.class_names[0] == "airplane" and data.class_names[9] == "truck"
