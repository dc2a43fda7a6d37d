"""LUCIR: frozen old-class weights, imprinting, the bounded cosine head, its losses and its state."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import libcontinual
from libcontinual.backbones import build_backbone
from libcontinual.buffers import LinearBuffer
from libcontinual.data.augment import BatchAugment, Normalize
from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.methods.lucir import LUCIR, margin_ranking
from probes import KeepMethods

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def task(index: int, per_task: int = 2, num_tasks: int = 3) -> TaskInfo:
    known = index * per_task
    return TaskInfo(index, num_tasks, tuple(range(known, known + per_task)), known, known + per_task)


def loader_for(info: TaskInfo, n: int = 12, seed: int = 0) -> DeviceLoader:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.tensor([info.classes[i % len(info.classes)] for i in range(n)])
    return DeviceLoader(images, labels, 6, BatchAugment(MEAN, STD), shuffle=True, generator=generator)


def lucir(**kwargs) -> LUCIR:
    torch.manual_seed(0)
    return LUCIR(build_backbone("resnet8", last_relu=False), 64, 6, **kwargs)


def lucir_config(tiny_config: dict) -> dict:
    tiny_config["backbone"] = {"name": tiny_config["backbone"]["name"], "kwargs": {"last_relu": False}}
    tiny_config["method"] = {"name": "lucir"}
    tiny_config["buffer"] = {"name": "linear", "kwargs": {"memory_per_class": 4, "strategy": "herding"}}
    tiny_config["optimizer"] = {"name": "SGD", "kwargs": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}}
    return tiny_config


def test_old_class_weights_do_not_change_in_later_tasks(tiny_config):
    tiny_config["epoch"] = 1
    keep = KeepMethods()
    libcontinual.run(lucir_config(tiny_config), callbacks=[keep])
    heads = [method.backbone.head for method in keep.methods]
    assert [head.chunk_sizes for head in heads] == [[2], [2, 2], [2, 2, 2]]
    for later in (1, 2):
        for chunk in range(later):
            assert torch.equal(heads[later].weights[chunk], heads[chunk].weights[chunk])
    assert not torch.equal(heads[1].sigma, heads[2].sigma)  # sigma keeps learning
    stem = [dict(method.backbone.named_parameters())["stem.0.weight"] for method in keep.methods]
    assert not torch.equal(stem[1], stem[2])  # and so does the backbone


def test_imprinted_weights_point_to_the_class_means_with_the_old_norm():
    method = lucir()
    buffer = LinearBuffer(memory_per_class=4)
    first, second = task(0), task(1)
    method.before_task(first, buffer, loader_for(first), [])
    with torch.no_grad():
        method.backbone.head.weights[0].mul_(torch.linspace(0.5, 3.0, 2).unsqueeze(1))  # unequal norms
    method.after_task(first, buffer, loader_for(first), [])
    loader = loader_for(second, seed=1)
    method.before_task(second, buffer, loader, [])
    head = method.backbone.head
    old, new = head.weights[0], head.weights[1]
    torch.testing.assert_close(new.norm(dim=1), old.norm(dim=1).mean().expand(2))
    model = copy.deepcopy(method.backbone).eval()
    with torch.no_grad():
        for row, cls in enumerate(second.classes):
            images = loader.images[loader.labels == cls]  # the task's own samples (exemplars are old classes)
            features = F.normalize(model.forward_features(Normalize(MEAN, STD)(images)), dim=1)
            direction = F.normalize(features.mean(dim=0), dim=0)
            torch.testing.assert_close(F.normalize(new[row], dim=0), direction, rtol=1e-5, atol=1e-6)
    trained = {id(p) for p in method.get_parameters(None)}
    assert id(old) not in trained and id(new) in trained and id(head.sigma) in trained
    assert method.lamda == pytest.approx(5.0 * math.sqrt(2 / 2))


def test_cosine_scores_are_bounded_by_the_scale():
    method = lucir()
    method.before_task(task(0), LinearBuffer(memory_per_class=4), loader_for(task(0)), [])
    with torch.no_grad():
        method.backbone.head.sigma.fill_(3.5)
        method.backbone.head.weights[0].mul_(100.0)  # the weights' norm does not matter
    images = torch.randn(32, 3, 8, 8) * 10
    scores = method.eval().scores(images)
    assert scores.shape == (32, 2)
    assert scores.abs().max() <= 3.5 + 1e-5 and scores.abs().max() > 0.5


def test_margin_ranking_uses_old_class_samples_and_the_top_k_new_cosines():
    cosines = torch.tensor([[0.9, 0.1, 0.7, 0.2, -0.5], [0.0, 0.0, 0.9, 0.8, 0.0]])
    labels = torch.tensor([0, 3])  # classes 0-1 are old; the second sample is new and ignored
    # Old sample: max(0, 0.5 - 0.9 + 0.7) = 0.3 and max(0, 0.5 - 0.9 + 0.2) = 0 -> mean 0.15.
    torch.testing.assert_close(margin_ranking(cosines, labels, 2, 0.5, 2), torch.tensor(0.15))
    assert margin_ranking(cosines, torch.tensor([2, 3]), 2, 0.5, 2) == 0


def test_later_tasks_add_less_forget_and_margin_losses():
    method = lucir()
    buffer = LinearBuffer(memory_per_class=4)
    first, second = task(0), task(1)
    method.before_task(first, buffer, loader_for(first), [])
    method.after_task(first, buffer, loader_for(first), [])
    loader = loader_for(second, seed=1)
    method.before_task(second, buffer, loader, [])
    assert loader.num_samples == 12 + 8  # the exemplars of classes 0 and 1 were merged
    method.eval()  # the teacher's BatchNorm statistics: the student still is its teacher
    method.observe(next(iter(loader)))
    losses = method.pop_losses()
    assert set(losses) == {"loss_ce", "loss_lf", "loss_mr"}
    assert abs(losses["loss_lf"]) < 1e-5


def test_state_dict_round_trip_gives_identical_outputs(tiny_config):
    tiny_config["task_num"] = 2
    tiny_config["epoch"] = 1
    keep = KeepMethods()
    libcontinual.run(lucir_config(tiny_config), callbacks=[keep])
    trained = keep.methods[-1].eval()
    fresh = LUCIR(build_backbone(tiny_config["backbone"]["name"], last_relu=False), 64, 6)
    fresh.load_state_dict(trained.state_dict())
    methods = [trained, fresh.eval()]
    images = Normalize(MEAN, STD)(loader_for(task(2)).images)
    for classifier in ("cnn", "nme"):
        expected, got = (method.scores(images, None, classifier) for method in methods)
        assert torch.equal(expected, got)
    losses = []
    for method in methods:
        buffer = LinearBuffer(memory_per_class=4)
        buffer.load_state_dict(keep.buffers[-1].state_dict())
        loader = loader_for(task(2))
        torch.manual_seed(0)  # the new head chunk's initialisation (then imprinted)
        method.before_task(task(2), buffer, loader, [])
        losses.append(method.observe(next(iter(loader)))[2])
    assert torch.equal(losses[0], losses[1]) and losses[0] > 0
