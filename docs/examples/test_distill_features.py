"""Properties of distill_features: lamda 0 trains exactly like finetune; the distillation term is zero
while the model equals its teacher; the teacher survives a checkpoint. Run: python -m pytest -q"""

from __future__ import annotations

import copy

import torch
from distill_features import DistillFeatures

from libcontinual import Finetune, Method
from libcontinual.backbones import build_backbone
from libcontinual.data.scenario import TaskInfo

torch.set_num_threads(1)  # tiny tensors: extra threads cost more than they save
TASKS = [TaskInfo(0, 2, (0, 1), 0, 2), TaskInfo(1, 2, (2, 3), 2, 4)]


def batches(task: TaskInfo, count: int = 3) -> list[dict[str, torch.Tensor]]:
    """A few normalised-image batches of the task's classes (fixed seed: every call gives the same)."""
    generator = torch.Generator().manual_seed(task.index)
    labels = torch.tensor(task.classes).repeat(4)
    return [{"image": torch.randn(8, 3, 8, 8, generator=generator), "label": labels} for _ in range(count)]


def train(method: Method) -> Method:
    """The trainer's hook order on two tasks: before_task, observe + optimizer_step per batch, after_task."""
    torch.manual_seed(0)  # head.expand draws the new head rows from the global generator
    for task in TASKS:
        method.before_task(task, None, None, [])
        optimizer = torch.optim.SGD(method.get_parameters(None), lr=0.1)
        method.train()
        for batch in batches(task):
            _, _, loss = method.observe(batch)
            method.optimizer_step(loss, optimizer)
        method.after_task(task, None, None, [])
    return method


def test_zero_weight_trains_exactly_like_finetune():
    backbone = build_backbone("resnet8")
    finetune = train(Finetune(copy.deepcopy(backbone), backbone.num_features, 4))
    distill = train(DistillFeatures(copy.deepcopy(backbone), backbone.num_features, 4, lamda=0.0))
    expected, got = finetune.backbone.state_dict(), distill.backbone.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[key], got[key]) for key in expected)


def test_distillation_is_zero_while_the_model_equals_its_teacher():
    backbone = build_backbone("resnet8")
    method = DistillFeatures(backbone, backbone.num_features, 4, lamda=1.0)
    method.before_task(TASKS[0], None, None, [])
    method.after_task(TASKS[0], None, None, [])
    method.before_task(TASKS[1], None, None, [])
    assert not any(p.requires_grad for p in method.teacher.parameters())
    method.eval()  # the same BatchNorm statistics as the teacher: the student is its teacher
    method.observe(batches(TASKS[1])[0])
    assert method.pop_losses()["loss_fd"] == 0.0
    with torch.no_grad():
        method.backbone.stem[0].weight.mul_(1.5)  # once the student moves, the term is positive
    method.observe(batches(TASKS[1])[0])
    assert method.pop_losses()["loss_fd"] > 0.0
    method.train()
    assert not method.teacher.training  # the teacher keeps its running statistics


def test_the_teacher_survives_a_checkpoint():
    backbone = build_backbone("resnet8")
    method = DistillFeatures(backbone, backbone.num_features, 4)
    method.before_task(TASKS[0], None, None, [])
    method.after_task(TASKS[0], None, None, [])
    method.before_task(TASKS[1], None, None, [])  # a checkpoint inside task 1 holds the teacher
    fresh_backbone = build_backbone("resnet8")
    fresh = DistillFeatures(fresh_backbone, fresh_backbone.num_features, 4)
    fresh.load_state_dict(method.state_dict())
    images = batches(TASKS[1])[0]["image"]
    method.eval(), fresh.eval()
    assert torch.equal(fresh.teacher.forward_features(images), method.teacher.forward_features(images))
    assert not any(p.requires_grad for p in fresh.teacher.parameters())
