"""Scenarios: how a dataset becomes a stream of tasks.

The class-incremental scenario follows PyCIL/FACIL: the class order is
``np.random.seed(order_seed); np.random.permutation(n)`` (or ``class_order``), label ``y`` becomes
its position in the order, so task t owns a contiguous label range; the first task has
``init_cls_num`` classes and every later one ``inc_cls_num``. Other scenarios (permuted or rotated
inputs, superclass tasks) register themselves here by name; the trainer only sees tasks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from libcontinual.data.types import ClassificationData
from libcontinual.errors import ConfigError
from libcontinual.registry import register_scenario


@dataclass(frozen=True)
class TaskInfo:
    """What a method is told about a task: its index and its classes (labels after remapping)."""

    index: int
    num_tasks: int
    classes: tuple[int, ...]
    known_classes: int  # head outputs before this task (classes of earlier tasks)
    total_classes: int  # head outputs after this task

    @property
    def new_classes(self) -> int:
        return self.total_classes - self.known_classes


@dataclass
class Task:
    """One task's data as uint8 (N, C, H, W) CPU tensors and int64 labels."""

    info: TaskInfo
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    val_images: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.uint8))
    val_labels: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))


@dataclass
class Scenario:
    tasks: list[Task]
    class_order: list[int]  # original class ids, in training order
    class_names: list[str]  # names of the remapped labels 0..n-1
    name: str

    @property
    def num_classes(self) -> int:
        return max(task.info.total_classes for task in self.tasks)

    def describe(self) -> dict:
        """The protocol facts that make two runs comparable."""
        return {
            "scenario": self.name,
            "class_order": self.class_order,
            "tasks": [
                {
                    "classes": list(task.info.classes),
                    "class_names": [self.class_names[c] for c in task.info.classes],
                    "train_size": int(task.train_labels.shape[0]),
                    "val_size": int(task.val_labels.shape[0]),
                    "test_size": int(task.test_labels.shape[0]),
                }
                for task in self.tasks
            ],
        }


def default_class_order(num_classes: int, order_seed: int = 1993) -> list[int]:
    """``np.random.seed(order_seed); np.random.permutation(num_classes)``, without touching global state."""
    return np.random.RandomState(order_seed).permutation(num_classes).tolist()


def to_tensor_images(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) numpy -> uint8 (N, C, H, W) torch, contiguous."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def split_validation(labels: np.ndarray, ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced seeded hold-out: indices (train, val) with round(ratio * n_c) per class in val."""
    if ratio <= 0:
        return np.arange(len(labels)), np.arange(0)
    rng = np.random.RandomState(seed)
    val = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = int(round(ratio * len(members)))
        val.append(rng.permutation(members)[:count])
    val_index = np.sort(np.concatenate(val))
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[val_index] = False
    return np.flatnonzero(train_mask), val_index


def class_splits(init_cls_num: int, inc_cls_num: int, task_num: int) -> list[range]:
    """Label ranges per task for the B/Inc split."""
    ranges = [range(0, init_cls_num)]
    for t in range(1, task_num):
        start = init_cls_num + (t - 1) * inc_cls_num
        ranges.append(range(start, start + inc_cls_num))
    return ranges


def resolve_class_order(
    num_classes: int, class_order: Sequence[int] | None, order_seed: int, needed: int
) -> list[int]:
    if class_order is None:
        return default_class_order(num_classes, order_seed)
    bad = [c for c in class_order if not 0 <= c < num_classes]
    if bad:
        raise ConfigError(
            f"Config key 'class_order' lists classes {bad} that the dataset does not have "
            f"(it has classes 0..{num_classes - 1})."
        )
    if len(class_order) < needed:
        raise ConfigError(
            f"Config key 'class_order' lists {len(class_order)} classes but the split "
            f"(init_cls_num + inc_cls_num * (task_num - 1)) needs {needed}."
        )
    return list(class_order)


@register_scenario("class_incremental")
def class_incremental(
    data: ClassificationData,
    *,
    init_cls_num: int,
    inc_cls_num: int,
    task_num: int,
    class_order: Sequence[int] | None,
    order_seed: int,
    val_ratio: float,
    seed: int,
) -> Scenario:
    """B/Inc class-incremental split with PyCIL/FACIL label remapping."""
    needed = init_cls_num + inc_cls_num * (task_num - 1)
    if needed > data.num_classes:
        raise ConfigError(
            f"The split needs init_cls_num + inc_cls_num * (task_num - 1) = {init_cls_num} + "
            f"{inc_cls_num} * {task_num - 1} = {needed} classes, but dataset {data.name!r} has "
            f"{data.num_classes}. Lower task_num, init_cls_num or inc_cls_num."
        )
    order = resolve_class_order(data.num_classes, class_order, order_seed, needed)
    remap = np.full(data.num_classes, -1, dtype=np.int64)
    remap[np.asarray(order)] = np.arange(len(order))
    train_labels = remap[data.train_labels]
    test_labels = remap[data.test_labels]
    tasks = []
    for index, label_range in enumerate(class_splits(init_cls_num, inc_cls_num, task_num)):
        train_index = np.flatnonzero((train_labels >= label_range.start) & (train_labels < label_range.stop))
        test_index = np.flatnonzero((test_labels >= label_range.start) & (test_labels < label_range.stop))
        if len(train_index) == 0 or len(test_index) == 0:
            raise ConfigError(
                f"Task {index} (classes {[order[c] for c in label_range]}) has no "
                f"{'training' if len(train_index) == 0 else 'test'} samples in dataset {data.name!r}."
            )
        keep, held_out = split_validation(train_labels[train_index], val_ratio, seed + index)
        info = TaskInfo(
            index=index,
            num_tasks=task_num,
            classes=tuple(label_range),
            known_classes=label_range.start,
            total_classes=label_range.stop,
        )
        tasks.append(
            Task(
                info=info,
                train_images=to_tensor_images(data.train_images[train_index[keep]]),
                train_labels=torch.from_numpy(train_labels[train_index[keep]]),
                test_images=to_tensor_images(data.test_images[test_index]),
                test_labels=torch.from_numpy(test_labels[test_index]),
                val_images=to_tensor_images(data.train_images[train_index[held_out]]),
                val_labels=torch.from_numpy(train_labels[train_index[held_out]]),
            )
        )
    class_names = [data.class_names[c] for c in order]
    return Scenario(tasks=tasks, class_order=order, class_names=class_names, name="class_incremental")
