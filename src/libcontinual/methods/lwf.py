"""LwF — Learning without Forgetting (Li & Hoiem, ECCV 2016 / TPAMI 2017), class-incremental form.

The single-head form of PyCIL (``models/lwf.py``) and of the ABD paper's baselines (Smith et al. ICCV 2021):
loss = CE + lambda * KD(T) on the old-class logits against the model frozen after the previous task.
before_task: freeze a copy of the model as teacher (from task 2 on), grow the head, merge exemplars from the
    buffer into the task's data when there is one (ABD's "LwF with 2000-image coreset").
observe: CE over the new-class logits (PyCIL, ``ce_classes: new``) or over every seen class (ABD, needed with
    exemplars, ``ce_classes: seen``) + lambda * KD(T=2) on old-class logits, no T^2 factor (PyCIL/ABD code).
after_task: drop the teacher (the next task copies the model again) and update the buffer.
Original LwF is multi-head with a warm-up of the new head; that form is not implemented here.
Measured v0.1 (R5, seed 1993, no memory): last 21.89, average incremental 35.73 (finetune 16.31 / 33.79);
`python benchmarks/r5.py lwf`; with a 2000-image coreset: 35.02 / 40.06 (replay 32.81 / 39.95),
`python benchmarks/r5.py lwf_coreset`; table and notes in benchmarks/BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.methods.base import Batch, Method
from libcontinual.methods.common import check_ce_classes, frozen_copy, kd_loss, task_cross_entropy
from libcontinual.registry import register_method


@register_method("lwf")
class LwF(Method):
    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        num_class: int,
        lamda: float = 3.0,
        temperature: float = 2.0,
        ce_classes: str = "new",
    ) -> None:
        super().__init__(backbone, feat_dim, num_class)
        check_ce_classes(ce_classes, None)
        self.lamda = lamda
        self.temperature = temperature
        self.ce_classes = ce_classes
        self.teacher: nn.Module | None = None
        self.buffer: Any = None

    def before_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        check_ce_classes(self.ce_classes, buffer)
        if task.known_classes > 0:
            self.teacher = frozen_copy(self.backbone)
        super().before_task(task, buffer, train_loader, test_loaders)
        self.buffer = buffer
        if buffer is not None:
            buffer.merge(train_loader)

    def resume_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        self.buffer = buffer
        if buffer is not None:
            buffer.resume(train_loader)

    def observe(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.buffer is not None:
            batch = self.buffer.mix(batch)
        images, labels = batch["image"], batch["label"]
        logits = self.backbone(images)[:, : self.total_classes]
        loss_ce = task_cross_entropy(logits, labels, self.known_classes, self.ce_classes)
        loss = loss_ce
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.teacher(images)[:, : self.known_classes]
            loss_kd = kd_loss(logits[:, : self.known_classes], teacher_logits, self.temperature)
            loss = loss_ce + self.lamda * loss_kd
            self.log_losses(loss_ce=loss_ce, loss_kd=loss_kd)
        else:
            self.log_losses(loss_ce=loss_ce)
        pred = logits.argmax(dim=1)
        return pred, (pred == labels).float().mean(), loss

    def after_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        self.teacher = None
        if buffer is not None:
            buffer.update(self, train_loader)
