"""Permuted / rotated MNIST and CIFAR-100 superclass scenarios (GEM's protocols)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from libcontinual.config import load_config
from libcontinual.data.domain_scenarios import permute_pixels, permuted, rotate_images, rotated, superclass
from libcontinual.data.scenario import default_class_order
from libcontinual.data.types import ClassificationData
from libcontinual.engine.experiment import check_components, register_everything
from libcontinual.errors import ConfigError
from libcontinual.registry import SCENARIOS

SIDE = 4  # 16 pixel positions: channel 0 of every image encodes its positions (value = 10 * position)


def position_data(train: int = 50, test: int = 20, num_classes: int = 10) -> ClassificationData:
    """Images whose channel 0 is the position code and channel 1 the constant 20 * label."""
    rng = np.random.RandomState(0)

    def split(count):
        labels = rng.randint(0, num_classes, size=count).astype(np.int64)
        images = np.zeros((count, SIDE, SIDE, 2), dtype=np.uint8)
        images[..., 0] = (10 * np.arange(SIDE * SIDE)).reshape(SIDE, SIDE)
        images[..., 1] = (20 * labels)[:, None, None]
        return images, labels

    (train_images, train_labels), (test_images, test_labels) = split(train), split(test)
    return ClassificationData(
        "toy", train_images, train_labels, test_images, test_labels, [str(c) for c in range(num_classes)]
    )


def build(factory, data, **kwargs):
    args = dict(
        init_cls_num=10, inc_cls_num=10, task_num=4, class_order=None, order_seed=0, val_ratio=0.0, seed=0
    )
    args.update(kwargs)
    return factory(data, **args)


def task_permutation(task) -> np.ndarray:
    """The permutation a task applied, read from the position code of its first test image."""
    return task.test_images[0, 0].flatten().numpy() // 10


def test_scenarios_are_registered_and_configs_validate():
    register_everything()
    assert {"permuted", "rotated", "superclass"} <= set(SCENARIOS.names())
    config, _ = load_config(
        {
            "dataset": "mnist",
            "init_cls_num": 10,
            "inc_cls_num": 10,
            "task_num": 3,
            "epoch": 1,
            "backbone": "mlp",
            "method": "gem",
            "optimizer": "SGD",
            "scenario": {"name": "rotated", "kwargs": {"samples_per_task": 10, "angles": [0, 45, 90]}},
        }
    )
    check_components(config)
    config.scenario.kwargs["angle"] = [0]
    with pytest.raises(ConfigError, match="Did you mean 'angles'"):
        check_components(config)


# ---------------------------------------------------------------------- permuted


def test_each_permutation_is_a_bijection_and_differs_across_tasks():
    scenario = build(permuted, position_data())
    permutations = [task_permutation(task) for task in scenario.tasks]
    for task, permutation in zip(scenario.tasks, permutations, strict=True):
        assert sorted(permutation.tolist()) == list(range(SIDE * SIDE))
        # every image of the task (train and test) carries the same permutation
        assert (task.train_images[:, 0] == task.train_images[0, 0]).all()
        assert (task.test_images[:, 0] == task.test_images[0, 0]).all()
    assert len({tuple(p) for p in permutations}) == len(permutations)
    # as GEM's data script, the first task is permuted too
    assert permutations[0].tolist() != list(range(SIDE * SIDE))
    generator = torch.Generator().manual_seed(0)  # GEM: torch.manual_seed(seed); randperm per task
    assert permutations[0].tolist() == torch.randperm(SIDE * SIDE, generator=generator).tolist()


def test_permuted_tasks_keep_labels_and_all_classes():
    data = position_data()
    scenario = build(permuted, data, samples_per_task=30)
    for index, task in enumerate(scenario.tasks):
        info = task.info
        assert (info.index, info.num_tasks, info.known_classes, info.total_classes) == (index, 4, 0, 10)
        assert info.classes == tuple(range(10))
        # labels unchanged and still paired with their images (channel 1 = 20 * label)
        assert (task.train_images[:, 1, 0, 0] == 20 * task.train_labels).all()
        assert torch.equal(task.test_labels, torch.from_numpy(data.test_labels))
        # training samples: the first 30 of a shuffle seeded by seed + task
        chosen = np.random.RandomState(index).permutation(len(data.train_labels))[:30]
        assert torch.equal(task.train_labels, torch.from_numpy(data.train_labels[chosen]))
        assert len(task.test_labels) == len(data.test_labels)
    assert scenario.class_order == list(range(10)) and scenario.name == "permuted"


def test_permuted_is_seeded():
    data = position_data()
    first, second = build(permuted, data), build(permuted, data)
    for a, b in zip(first.tasks, second.tasks, strict=True):
        assert torch.equal(a.train_images, b.train_images) and torch.equal(a.train_labels, b.train_labels)
    other_tasks = build(permuted, data, order_seed=1)
    assert task_permutation(other_tasks.tasks[0]).tolist() != task_permutation(first.tasks[0]).tolist()
    other_samples = build(permuted, data, seed=1, samples_per_task=20)
    assert task_permutation(other_samples.tasks[0]).tolist() == task_permutation(first.tasks[0]).tolist()
    assert not torch.equal(other_samples.tasks[0].train_labels, first.tasks[0].train_labels[:20])


def test_permute_pixels_moves_every_channel_alike():
    images = torch.randint(0, 256, (3, 2, 5, 6), dtype=torch.uint8)
    permutation = torch.randperm(30)
    moved = permute_pixels(images, permutation)
    for channel in range(2):
        expected = images[:, channel].flatten(1)[:, permutation]
        torch.testing.assert_close(moved[:, channel].flatten(1), expected)


def test_domain_scenarios_reject_bad_settings():
    data = position_data()
    with pytest.raises(ConfigError, match="class_order"):
        build(permuted, data, class_order=list(range(10)))
    with pytest.raises(ConfigError, match="samples_per_task"):
        build(permuted, data, samples_per_task=0)
    with pytest.raises(ConfigError, match="angles"):
        build(rotated, data, angles=[0.0, 90.0])
    with pytest.raises(ConfigError, match="interpolation"):
        build(rotated, data, interpolation="bicubic")


def test_validation_hold_out_comes_from_the_task_samples():
    scenario = build(permuted, position_data(train=200), samples_per_task=100, val_ratio=0.2)
    for task in scenario.tasks:
        assert len(task.train_labels) + len(task.val_labels) == 100
        assert 10 <= len(task.val_labels) <= 30
        assert (task.val_images[:, 0] == task.train_images[0, 0]).all()  # transformed like the task


# ---------------------------------------------------------------------- rotated


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_rotation_by_zero_is_identity_and_by_quarter_turns_matches_rot90(interpolation):
    images = torch.randint(0, 256, (6, 2, 28, 28), dtype=torch.uint8)
    assert torch.equal(rotate_images(images, 0.0, interpolation), images)
    for turns in (1, 2, 3):
        rotated_images = rotate_images(images, 90.0 * turns, interpolation)
        expected = torch.rot90(images, turns, dims=(2, 3))  # counter-clockwise on the pixel grid
        assert (rotated_images.int() - expected.int()).abs().max() <= 1  # interpolation rounding only
    odd = torch.randint(0, 256, (2, 1, 5, 7), dtype=torch.uint8)  # non-square, odd sides
    assert torch.equal(rotate_images(odd, 180.0, interpolation), torch.rot90(odd, 2, dims=(2, 3)))


def test_rotation_matches_pil_like_gems_data_script():
    images = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    for angle in (17.0, 63.5, 151.2):
        ours = rotate_images(images, angle).numpy()
        for image, mine in zip(images.numpy(), ours, strict=True):
            pil = np.asarray(Image.fromarray(image[0], mode="L").rotate(angle))
            assert (pil != mine[0]).mean() < 0.01  # PIL's nearest neighbour, up to ties


def test_rotated_angles_follow_gems_slices_and_labels_stay():
    data = position_data()
    scenario = build(rotated, data, task_num=20, samples_per_task=10)
    width = 180.0 / 20
    draws = np.random.RandomState(0).uniform(size=20)
    for index, task in enumerate(scenario.tasks):
        angle = (index + draws[index]) * width
        assert index * width <= angle < (index + 1) * width
        expected = rotate_images(torch.from_numpy(data.test_images).permute(0, 3, 1, 2).contiguous(), angle)
        assert torch.equal(task.test_images, expected)
        assert torch.equal(task.test_labels, torch.from_numpy(data.test_labels))
        assert task.info.classes == tuple(range(10)) and task.info.known_classes == 0
    explicit = build(rotated, data, task_num=2, angles=[0.0, 90.0])
    original = torch.from_numpy(data.test_images).permute(0, 3, 1, 2)
    assert torch.equal(explicit.tasks[0].test_images, original)
    assert torch.equal(explicit.tasks[1].test_images, torch.rot90(original, 1, dims=(2, 3)))


# ---------------------------------------------------------------------- superclass


def superclass_data(num_super: int = 6, per_super: int = 3, per_class: int = 4) -> ClassificationData:
    """Fine classes scattered over superclasses (as in CIFAR-100); pixels encode the fine label."""
    num_fine = num_super * per_super
    coarse_of = np.random.RandomState(1).permutation(np.repeat(np.arange(num_super), per_super))
    labels = np.repeat(np.arange(num_fine), per_class).astype(np.int64)
    images = np.broadcast_to(labels[:, None, None, None], (len(labels), 4, 4, 3)).astype(np.uint8)
    names = [f"f{c}" for c in range(num_fine)]
    data = ClassificationData("toy100", images, labels, images.copy(), labels.copy(), names)
    data.extras["train_coarse_labels"] = coarse_of[labels]
    data.extras["test_coarse_labels"] = coarse_of[labels]
    return data


def build_superclass(data, **kwargs):
    args = dict(
        init_cls_num=3, inc_cls_num=3, task_num=4, class_order=None, order_seed=1993, val_ratio=0.0, seed=0
    )
    args.update(kwargs)
    return superclass(data, **args)


def test_superclass_tasks_group_fine_classes_by_coarse_label():
    data = superclass_data()
    coarse = data.extras["train_coarse_labels"]
    coarse_of = {int(f): int(c) for f, c in zip(data.train_labels, coarse, strict=True)}
    scenario = build_superclass(data)
    order = default_class_order(6, 1993)
    assert scenario.name == "superclass"
    for index, task in enumerate(scenario.tasks):
        assert task.info.classes == (3 * index, 3 * index + 1, 3 * index + 2)
        assert (task.info.known_classes, task.info.total_classes) == (3 * index, 3 * index + 3)
        fine = scenario.class_order[3 * index : 3 * index + 3]
        assert {coarse_of[f] for f in fine} == {order[index]}  # one whole superclass, in seeded order
        assert sorted(f for f, c in coarse_of.items() if c == order[index]) == fine
        # remapped labels stay paired with their images (pixels = original fine label)
        original = np.asarray(scenario.class_order)[task.train_labels.numpy()]
        assert (task.train_images[:, 0, 0, 0].numpy() == original).all()
    assert build_superclass(data, order_seed=5).class_order != scenario.class_order


def test_superclass_explicit_order_and_errors():
    data = superclass_data()
    coarse = data.extras["train_coarse_labels"]
    coarse_of = dict(zip(data.train_labels.tolist(), coarse.tolist(), strict=True))
    groups = [sorted(f for f, c in coarse_of.items() if c == s) for s in (4, 0)]
    explicit = build_superclass(data, task_num=2, class_order=groups[0][::-1] + groups[1])
    assert explicit.class_order == groups[0][::-1] + groups[1]
    with pytest.raises(ConfigError, match="superclass"):
        build_superclass(data, task_num=2, class_order=groups[0][:2] + groups[1] + groups[0][2:])
    with pytest.raises(ConfigError, match="init_cls_num and inc_cls_num"):
        build_superclass(data, init_cls_num=5, inc_cls_num=5)
    with pytest.raises(ConfigError, match="superclasses"):
        build_superclass(data, task_num=7)
    data.extras.clear()
    with pytest.raises(ConfigError, match="coarse labels"):
        build_superclass(data)
