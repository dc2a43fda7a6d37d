"""CIFAR-100's twenty superclass tasks from the official archive format, downloaded from 127.0.0.1."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import libcontinual
from dataset_files import _dump, _rows, md5, serve, tar_gz
from libcontinual.config import load_config
from libcontinual.data.datasets import cifar
from libcontinual.engine.experiment import build_scenario, load_dataset, register_everything
from libcontinual.errors import ConfigError

register_everything()
REPO = Path(__file__).resolve().parents[1]
COARSE_OF_FINE = np.random.RandomState(3).permutation(100) // 5  # every superclass has 5 fine classes


def write_superclass_archive(parent: Path, train_per_class: int = 2, test_per_class: int = 1) -> Path:
    """``cifar-100-python.tar.gz`` in the official layout, fine labels with consistent coarse labels."""
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        fine = np.repeat(np.arange(100), per_class)
        images = rng.integers(0, 256, (len(fine), 32, 32, 3), dtype=np.uint8)
        images[..., 0] = (fine * 2)[:, None, None]  # the class is visible in the red channel
        content = {b"fine_labels": fine.tolist(), b"coarse_labels": COARSE_OF_FINE[fine].tolist()}
        _dump(folder / split, {**content, b"data": _rows(images)})
    _dump(
        folder / "meta",
        {
            b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"superclass{i:02d}".encode() for i in range(20)],
        },
    )
    return tar_gz(folder, parent / "cifar-100-python.tar.gz")


@pytest.fixture
def served_archive(tmp_path, monkeypatch):
    archive = write_superclass_archive(tmp_path / "src").read_bytes()
    monkeypatch.setattr(cifar, "CIFAR100", dataclasses.replace(cifar.CIFAR100, md5=md5(archive)))
    with serve({"/cifar-100-python.tar.gz": [(archive, None, False)]}) as (server, url):
        yield server, f"{url}/cifar-100-python.tar.gz"


def superclass_config(tmp_path: Path, url: str, **overrides) -> dict:
    """The paper header (configs/headers/cifar100_superclass.yaml) downloading from the local server."""
    config = {
        "includes": [str(REPO / "configs" / "headers" / "cifar100_superclass.yaml")],
        "dataset": {"name": "cifar100", "kwargs": {"download": True, "url": url}},
        "data_root": str(tmp_path / "data"),
        "method": {"name": "packnet"},
        "optimizer": {"name": "SGD", "kwargs": {"lr": 0.05, "momentum": 0.9}},
        "epoch": 1,
        "save_path": str(tmp_path / "runs"),
        "device": "cpu",
        "num_threads": 1,
    }
    config.update(overrides)
    return config


def test_superclass_tasks_come_from_the_downloaded_archive_in_cpg_order(tmp_path, served_archive):
    server, url = served_archive
    config, _ = load_config(superclass_config(tmp_path, url))
    data = load_dataset(config)
    assert server.requests == ["/cifar-100-python.tar.gz"]
    assert (tmp_path / "data" / "cifar-100-python.tar.gz").is_file()
    scenario = build_scenario(config, data)
    assert len(scenario.tasks) == 20
    for index, task in enumerate(scenario.tasks):
        assert task.info.classes == tuple(range(5 * index, 5 * index + 5))
        fine = [scenario.class_order[c] for c in task.info.classes]
        assert sorted(fine) == sorted(np.flatnonzero(index == COARSE_OF_FINE).tolist())  # superclass `index`
        assert len(task.train_labels) == 10 and len(task.test_labels) == 5
        assert set(task.train_labels.tolist()) == set(task.info.classes)
        red = task.train_images[:, 0, 0, 0].long()  # fine * 2, so the remapping is checked pixel by pixel
        assert [scenario.class_order[int(y)] for y in task.train_labels] == (red // 2).tolist()


def test_a_task_incremental_run_over_superclass_tasks(tmp_path, served_archive):
    _, url = served_archive
    config = superclass_config(
        tmp_path,
        url,
        task_num=3,
        backbone={"name": "vgg16_bn", "kwargs": {"width": 0.0625, "fc_features": 256}},
    )
    result = libcontinual.run(config)
    assert list(result.accuracy_matrix) == ["cnn_task_il"]
    assert [len(row) for row in result.accuracy_matrix["cnn_task_il"]] == [1, 2, 3]
    assert result.results["protocol"]["scenario"] == "superclass"
    assert result.results["protocol"]["tasks"][1]["class_names"] == [
        f"fine{f}" for f in sorted(np.flatnonzero(COARSE_OF_FINE == 1).tolist())
    ]


def test_a_bad_superclass_order_is_a_clear_error(tmp_path, served_archive):
    _, url = served_archive
    config = superclass_config(
        tmp_path, url, scenario={"kwargs": {"superclass_order": [0, 0, 1]}}, task_num=3
    )
    config, _ = load_config(config)
    with pytest.raises(ConfigError, match="superclass_order' must list at least task_num=3 distinct"):
        build_scenario(config, load_dataset(config))
