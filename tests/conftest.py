"""Shared fixtures: a tiny real experiment (generated data, small networks) that runs in seconds."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

# Tiny tensors: one thread avoids thread start-up and contention costs that dwarf the work.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

TINY_CONFIG = {
    "dataset": {
        "name": "synthetic",
        "kwargs": {"num_classes": 6, "train_per_class": 24, "test_per_class": 8},
    },
    "image_size": 8,
    "init_cls_num": 2,
    "inc_cls_num": 2,
    "task_num": 3,
    "epoch": 2,
    "batch_size": 16,
    "backbone": {"name": "resnet8"},
    "method": {"name": "finetune"},
    "optimizer": {"name": "SGD", "kwargs": {"lr": 0.05, "momentum": 0.9}},
    "seed": 7,
    "device": "cpu",
    "num_threads": 1,
}


@pytest.fixture
def tiny_config(tmp_path: Path) -> dict:
    """A valid config dict for a 3-task run on generated 8x8 images; writes into tmp_path."""
    config = copy.deepcopy(TINY_CONFIG)
    config["save_path"] = str(tmp_path / "runs")
    return config
