"""The scenarios of GEM's paper (Lopez-Paz & Ranzato, NeurIPS 2017), registered by name.

``permuted`` and ``rotated`` are domain-incremental: every task has all the dataset's classes with
unchanged labels (``TaskInfo.classes`` = all of them, ``known_classes`` 0), and only the inputs change
from task to task. ``superclass`` splits CIFAR-100 into its 20 superclasses of 5 fine classes (used
task-incrementally). Seeds follow GEM's split of roles: ``order_seed`` fixes what the tasks are
(permutations, angles, superclass order; GEM's data scripts use seed 0), ``seed`` fixes which training
samples each task keeps and its validation hold-out (GEM's run seed draws the samples).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from libcontinual.data.scenario import (
    Scenario,
    Task,
    TaskInfo,
    class_incremental,
    default_class_order,
    split_validation,
    to_tensor_images,
)
from libcontinual.data.types import ClassificationData
from libcontinual.errors import ConfigError, DataError
from libcontinual.registry import register_scenario

logger = logging.getLogger(__name__)

ImageTransform = Callable[[torch.Tensor], torch.Tensor]


def permute_pixels(images: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Reorder the H*W pixel positions of uint8 (N, C, H, W) images; every channel moves alike."""
    n, c, h, w = images.shape
    return images.reshape(n, c, h * w)[:, :, permutation].reshape(n, c, h, w)


def rotate_images(images: torch.Tensor, degrees: float, interpolation: str = "nearest") -> torch.Tensor:
    """Rotate uint8 (N, C, H, W) images counter-clockwise about their centre, zeros outside.

    One ``grid_sample`` call for the whole set (images are stacked as channels of one sample, so the
    grid is built once). PIL's ``Image.rotate`` (GEM's data script) uses the same centre, direction,
    fill and, by default, nearest-neighbour interpolation.
    """
    n, c, h, w = images.shape
    if n == 0:
        return images
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    # affine_grid maps output to input positions in [-1, 1] coordinates (x right, y down); the
    # inverse of a counter-clockwise turn on screen, corrected for a non-square aspect ratio.
    theta = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], dtype=torch.float32)
    grid = F.affine_grid(theta[None], [1, 1, h, w], align_corners=False)
    stacked = images.reshape(1, n * c, h, w).float()
    rotated = F.grid_sample(stacked, grid, mode=interpolation, padding_mode="zeros", align_corners=False)
    return rotated.round_().clamp_(0, 255).to(torch.uint8).reshape(n, c, h, w)


def _domain_scenario(
    name: str,
    data: ClassificationData,
    transforms: Sequence[ImageTransform],
    samples_per_task: int | None,
    class_order: Sequence[int] | None,
    val_ratio: float,
    seed: int,
) -> Scenario:
    """One task per transform: a seeded subset of the training images and every test image, transformed."""
    if class_order is not None:
        raise ConfigError(
            f"Config key 'class_order' has no meaning in the {name!r} scenario: every task keeps all "
            f"{data.num_classes} classes with their labels. Remove it."
        )
    if samples_per_task is not None and samples_per_task < 1:
        raise ConfigError(
            "Config key 'scenario.kwargs.samples_per_task' must be positive or null (all), "
            f"got {samples_per_task}."
        )
    train_images, test_images = to_tensor_images(data.train_images), to_tensor_images(data.test_images)
    classes = tuple(range(data.num_classes))
    tasks = []
    for index, transform in enumerate(transforms):
        chosen = np.random.RandomState(seed + index).permutation(len(data.train_labels))[:samples_per_task]
        keep, held_out = split_validation(data.train_labels[chosen], val_ratio, seed + index)
        train_index, val_index = torch.from_numpy(chosen[keep]), torch.from_numpy(chosen[held_out])
        info = TaskInfo(index, len(transforms), classes, known_classes=0, total_classes=len(classes))
        tasks.append(
            Task(
                info=info,
                train_images=transform(train_images[train_index]),
                train_labels=torch.from_numpy(data.train_labels[chosen[keep]]),
                test_images=transform(test_images),
                test_labels=torch.from_numpy(data.test_labels),
                val_images=transform(train_images[val_index]),
                val_labels=torch.from_numpy(data.train_labels[chosen[held_out]]),
            )
        )
    return Scenario(tasks=tasks, class_order=list(classes), class_names=list(data.class_names), name=name)


@register_scenario("permuted")
def permuted(
    data: ClassificationData,
    *,
    init_cls_num: int,
    inc_cls_num: int,
    task_num: int,
    class_order: Sequence[int] | None,
    order_seed: int,
    val_ratio: float,
    seed: int,
    samples_per_task: int | None = 1000,
) -> Scenario:
    """Permuted MNIST: task t applies its own fixed pixel permutation; labels are shared.

    As GEM's ``mnist_permutations.py``, every task is permuted (task 0 too): ``torch.manual_seed(order_seed)``
    then one ``randperm(H*W)`` per task. Each task trains on the first ``samples_per_task`` images of
    a shuffle seeded by ``seed + t`` (null: all) and tests on the whole test set. ``init_cls_num`` and
    ``inc_cls_num`` are not used: every task has all classes.
    """
    height, width = data.image_shape[:2]
    generator = torch.Generator().manual_seed(order_seed)
    permutations = [torch.randperm(height * width, generator=generator) for _ in range(task_num)]
    transforms = [lambda images, p=p: permute_pixels(images, p) for p in permutations]
    return _domain_scenario("permuted", data, transforms, samples_per_task, class_order, val_ratio, seed)


@register_scenario("rotated")
def rotated(
    data: ClassificationData,
    *,
    init_cls_num: int,
    inc_cls_num: int,
    task_num: int,
    class_order: Sequence[int] | None,
    order_seed: int,
    val_ratio: float,
    seed: int,
    samples_per_task: int | None = 1000,
    min_rotation: float = 0.0,
    max_rotation: float = 180.0,
    angles: Sequence[float] | None = None,
    interpolation: str = "nearest",
) -> Scenario:
    """Rotated MNIST: task t rotates every image by its own angle (degrees, counter-clockwise).

    As GEM's ``mnist_rotations.py`` (run with 0 and 180): task t's angle is drawn uniformly from the
    t-th of ``task_num`` equal slices of [min_rotation, max_rotation), so angles grow with t; here the
    draw is seeded by ``order_seed`` (GEM's used Python's unseeded ``random``). ``angles`` lists them
    explicitly instead. Samples and unused keys as for ``permuted``; ``interpolation`` is nearest
    (PIL's default, as GEM) or bilinear.
    """
    if interpolation not in ("nearest", "bilinear"):
        raise ConfigError(
            f"Config key 'scenario.kwargs.interpolation' must be nearest or bilinear, got {interpolation!r}."
        )
    if angles is None:
        width = (max_rotation - min_rotation) / task_num
        draws = np.random.RandomState(order_seed).uniform(size=task_num)
        angles = [min_rotation + (t + u) * width for t, u in enumerate(draws)]
    elif len(angles) != task_num:
        raise ConfigError(
            f"Config key 'scenario.kwargs.angles' lists {len(angles)} angles but task_num is {task_num}."
        )
    angles = [float(a) for a in angles]
    logger.info("rotated scenario: angles %s", ", ".join(f"{a:.1f}" for a in angles))
    transforms = [lambda images, a=a: rotate_images(images, a, interpolation) for a in angles]
    return _domain_scenario("rotated", data, transforms, samples_per_task, class_order, val_ratio, seed)


@register_scenario("superclass")
def superclass(
    data: ClassificationData,
    *,
    init_cls_num: int,
    inc_cls_num: int,
    task_num: int,
    class_order: Sequence[int] | None,
    order_seed: int,
    val_ratio: float,
    seed: int,
    superclass_order: Sequence[int] | None = None,
) -> Scenario:
    """CIFAR-100 superclasses: task t holds the fine classes of one coarse class (5 for CIFAR-100).

    Needs ``extras["train_coarse_labels"]`` (the cifar100 loader provides it). The superclass order is
    ``permutation(n_superclasses)`` seeded by ``order_seed``, fine classes ascending within a
    superclass; an explicit ``class_order`` (fine classes) must list whole superclasses one after
    another. ``superclass_order`` lists coarse labels in task order instead (CPG: 0..19, the official
    alphabetical order of ``coarse_label_names``). Labels are remapped contiguously as in
    ``class_incremental``; ``init_cls_num`` and ``inc_cls_num`` must equal the superclass size.
    """
    coarse = data.extras.get("train_coarse_labels")
    if coarse is None:
        raise ConfigError(
            f"The superclass scenario needs coarse labels (extras['train_coarse_labels']), which dataset "
            f"{data.name!r} does not provide. Use dataset cifar100."
        )
    members: dict[int, list[int]] = {}
    for fine in range(data.num_classes):
        owners = np.unique(coarse[data.train_labels == fine])
        if len(owners) > 1:
            raise DataError(
                f"dataset {data.name!r}: fine class {fine} belongs to several superclasses {owners.tolist()}"
            )
        if len(owners) == 1:
            members.setdefault(int(owners[0]), []).append(fine)
    superclasses = sorted(members)
    if task_num > len(superclasses):
        raise ConfigError(
            f"task_num is {task_num} but dataset {data.name!r} has {len(superclasses)} superclasses."
        )
    if superclass_order is not None:
        if class_order is not None:
            raise ConfigError("Set either 'class_order' or 'scenario.kwargs.superclass_order', not both.")
        unknown = [c for c in superclass_order if c not in members]
        repeated = len(set(superclass_order)) != len(superclass_order)
        if unknown or repeated or len(superclass_order) < task_num:
            raise ConfigError(
                "Config key 'scenario.kwargs.superclass_order' must list at least "
                f"task_num={task_num} distinct superclasses of {sorted(members)}; "
                f"got {list(superclass_order)}."
            )
        groups = [members[s] for s in list(superclass_order)[:task_num]]
    elif class_order is None:
        order_of_superclasses = [superclasses[i] for i in default_class_order(len(superclasses), order_seed)]
        groups = [members[s] for s in order_of_superclasses[:task_num]]
    else:
        groups = _groups_of(list(class_order), coarse, data.train_labels, members, task_num)
    sizes = {len(group) for group in groups}
    if sizes != {init_cls_num} or inc_cls_num != init_cls_num:
        raise ConfigError(
            f"Superclass tasks have {sorted(sizes)} classes each, so init_cls_num and inc_cls_num must "
            f"both be {min(sizes)} (got {init_cls_num} and {inc_cls_num})."
        )
    order = [fine for group in groups for fine in group]
    scenario = class_incremental(
        data,
        init_cls_num=init_cls_num,
        inc_cls_num=inc_cls_num,
        task_num=task_num,
        class_order=order,
        order_seed=order_seed,
        val_ratio=val_ratio,
        seed=seed,
    )
    scenario.name = "superclass"
    return scenario


def _groups_of(
    class_order: list[int],
    coarse: np.ndarray,
    labels: np.ndarray,
    members: dict[int, list[int]],
    task_num: int,
) -> list[list[int]]:
    """Split an explicit fine-class order into superclasses; each must appear whole and contiguous."""
    groups, start = [], 0
    while len(groups) < task_num:
        if start >= len(class_order):
            raise ConfigError(f"Config key 'class_order' lists fewer than {task_num} whole superclasses.")
        owner = coarse[labels == class_order[start]]
        group = members[int(owner[0])] if owner.size else [class_order[start]]
        chunk = class_order[start : start + len(group)]
        if sorted(chunk) != sorted(group):
            raise ConfigError(
                f"Config key 'class_order': superclass tasks need each superclass's fine classes together; "
                f"position {start} starts {chunk} but that superclass is {sorted(group)}."
            )
        groups.append(chunk)
        start += len(group)
    return groups
