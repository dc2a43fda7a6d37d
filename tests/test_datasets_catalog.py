"""The dataset catalog for `libcontinual datasets`, and the loader contract every registered dataset keeps."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from libcontinual.data.datasets import describe_datasets
from libcontinual.data.datasets.catalog import default_location
from libcontinual.data.datasets.mnist import FASHION_MNIST_SYSTEM_ROOT, has_idx_files
from libcontinual.registry import DATASETS

OURS = {"cifar10", "cifar100", "image_folder", "mnist", "fashion_mnist", "npz"}


def test_every_registered_dataset_is_described():
    rows = describe_datasets()
    assert [row["name"] for row in rows] == DATASETS.names()
    assert {row["name"] for row in rows} >= OURS
    for row in rows:
        assert set(row) == {"name", "description", "options", "default_location", "found"}
        assert row["description"], f"{row['name']} has no docstring"
        assert (row["found"] is None) == (row["default_location"] is None)


def test_fashion_mnist_reports_its_system_location():
    row = next(row for row in describe_datasets() if row["name"] == "fashion_mnist")
    assert row["default_location"] == FASHION_MNIST_SYSTEM_ROOT
    assert row["found"] == has_idx_files(Path(FASHION_MNIST_SYSTEM_ROOT))
    assert row["options"] == {"channels": 1, "download": False, "url": None}


def test_default_location_marks_a_loader(tmp_path):
    @default_location(str(tmp_path), lambda path: (path / "x").exists())
    def loader(data_root, image_size=None):
        """A loader."""

    assert loader.default_location == str(tmp_path) and not loader.found_at_default(tmp_path)
    (tmp_path / "x").touch()
    assert loader.found_at_default(tmp_path)


@pytest.mark.parametrize("name", DATASETS.names())
def test_loader_signature_contract(name):
    """(data_root, image_size=None, *, explicit kwargs): the config layer checks user kwargs against it."""
    parameters = list(inspect.signature(DATASETS.get(name)).parameters.values())
    assert [p.name for p in parameters[:2]] == ["data_root", "image_size"]
    assert parameters[1].default is None
    for parameter in parameters[2:]:
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, (
            f"{name}: {parameter.name} is not keyword-only"
        )
