import numpy as np
import pytest
import torch

from libcontinual.data.scenario import class_incremental, class_splits, default_class_order, split_validation
from libcontinual.data.types import ClassificationData
from libcontinual.errors import ConfigError


def make_data(num_classes=10, per_class=6, test_per_class=3):
    rng = np.random.RandomState(0)
    train_labels = np.repeat(np.arange(num_classes), per_class)
    test_labels = np.repeat(np.arange(num_classes), test_per_class)
    # encode the original label in the pixels so remapping can be checked
    train = np.broadcast_to(train_labels[:, None, None, None], (len(train_labels), 4, 4, 3)).astype(np.uint8)
    test = np.broadcast_to(test_labels[:, None, None, None], (len(test_labels), 4, 4, 3)).astype(np.uint8)
    rng.shuffle(train_labels)  # labels and pixels must stay paired: reorder both
    train = np.broadcast_to(train_labels[:, None, None, None], train.shape).astype(np.uint8)
    return ClassificationData(
        "toy", train, train_labels, test, test_labels, [f"c{i}" for i in range(num_classes)]
    )


def build(data, **kwargs):
    args = dict(
        init_cls_num=4, inc_cls_num=2, task_num=4, class_order=None, order_seed=1993, val_ratio=0.0, seed=0
    )
    args.update(kwargs)
    return class_incremental(data, **args)


def test_default_order_is_pycil_seed_1993():
    order = default_class_order(100, 1993)
    assert order[:5] == [68, 56, 78, 8, 23]
    assert order[:10] == [68, 56, 78, 8, 23, 84, 90, 65, 74, 76]  # METHODS.md: first task of B0 Inc10
    np.random.seed(1993)
    assert order == np.random.permutation(100).tolist()


def test_default_order_leaves_global_numpy_state_alone():
    np.random.seed(5)
    expected = np.random.rand()
    np.random.seed(5)
    default_class_order(10, 1993)
    assert np.random.rand() == expected


def test_split_sizes():
    assert [list(r) for r in class_splits(4, 2, 4)] == [[0, 1, 2, 3], [4, 5], [6, 7], [8, 9]]
    assert [len(r) for r in class_splits(50, 10, 6)] == [50, 10, 10, 10, 10, 10]


def test_labels_are_remapped_to_the_order_and_tasks_own_contiguous_ranges():
    data = make_data()
    scenario = build(data)
    order = default_class_order(10, 1993)
    assert scenario.class_order == order
    for task in scenario.tasks:
        labels = task.train_labels.numpy()
        assert set(labels) == set(task.info.classes)
        assert task.info.classes == tuple(range(task.info.known_classes, task.info.total_classes))
        # pixel value = original class id; remapped label = its position in the order
        originals = task.train_images[:, 0, 0, 0].numpy()
        assert all(order.index(o) == y for o, y in zip(originals, labels, strict=True))
        assert set(task.test_labels.numpy()) == set(task.info.classes)
    assert scenario.class_names[0] == f"c{order[0]}"
    assert scenario.num_classes == 10


def test_explicit_class_order_overrides_and_may_use_a_subset():
    scenario = build(make_data(), class_order=[9, 8, 7, 6, 5, 4], init_cls_num=2, task_num=3)
    assert scenario.class_order == [9, 8, 7, 6, 5, 4]
    assert scenario.tasks[0].train_images[:, 0, 0, 0].unique().tolist() == [8, 9]
    assert scenario.num_classes == 6


def test_different_order_seed_gives_a_different_first_task():
    assert build(make_data(), order_seed=1).tasks[0].info.classes == (0, 1, 2, 3)
    a = build(make_data(), order_seed=1).class_order
    b = build(make_data(), order_seed=2).class_order
    assert a != b


def test_split_needing_more_classes_than_the_dataset_is_an_error():
    with pytest.raises(ConfigError, match=r"4 \+ 2 \* 4 = 12 classes.*has 10"):
        build(make_data(), task_num=5)


def test_class_order_with_unknown_class_is_an_error():
    with pytest.raises(ConfigError, match="class_order"):
        build(make_data(), class_order=[0, 1, 2, 3, 4, 5, 6, 7, 8, 99])


def test_validation_split_is_class_balanced_seeded_and_disjoint():
    labels = np.repeat(np.arange(3), 20)
    train, val = split_validation(labels, 0.25, seed=3)
    assert np.bincount(labels[val]).tolist() == [5, 5, 5]
    assert not set(train) & set(val) and len(train) + len(val) == 60
    again, val_again = split_validation(labels, 0.25, seed=3)
    assert np.array_equal(val, val_again)
    scenario = build(make_data(per_class=10), val_ratio=0.2)
    task = scenario.tasks[0]
    assert task.val_labels.shape[0] == 4 * 2 and task.train_labels.shape[0] == 4 * 8
    assert torch.bincount(task.val_labels).tolist() == [2, 2, 2, 2]
