"""E2E — End-to-End Incremental Learning (Castro, Marín-Jiménez, Guil, Schmid, Alahari; ECCV 2018).

before_task: freeze the previous model as teacher, grow the head, merge the exemplars (Replay).
observe: CE over every seen class + one KD(T=2) term per old task, each on that task's block of logits
    (the paper's distillation per old classification layer), unweighted sum.
after_task: balanced finetuning (from the second task on): the same number of samples per class (the
    smallest exemplar count of an old class; exemplars of old classes, random samples of new ones),
    ``balanced_epochs`` (30) at ``balanced_lr`` (0.01, x0.1 at ``balanced_milestones`` 10 and 20), with the
    training augmentation, its own SGD, and a temporary KD(T=2) on the new-class block against the model
    as it was before this stage (old blocks keep their KD against the teacher); then the memory update
    (herding, 2000 exemplars: the paper updates the memory last), then drop the teacher.
Deviation: the paper's brightness is additive (+-63) and ours multiplicative; contrast jitter as the paper.
Measured v0.1 (R5, seed 1993): last accuracy 33.71, average incremental 39.65 (finetune 16.31 / 33.79, replay
32.81 / 39.95); `python benchmarks/r5.py e2e`, table and notes in benchmarks/BENCHMARKS.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from libcontinual.buffers.strategies import class_balanced_split
from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.methods.base import Batch
from libcontinual.methods.common import frozen_copy, kd_loss
from libcontinual.methods.replay import Replay
from libcontinual.registry import register_method

logger = logging.getLogger(__name__)


@register_method("e2e")
class E2E(Replay):
    distills = True

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        num_class: int,
        temperature: float = 2.0,
        balanced_epochs: int = 30,
        balanced_lr: float = 0.01,
        balanced_milestones: Sequence[int] = (10, 20),
        balanced_momentum: float = 0.9,
        balanced_weight_decay: float = 1.0e-4,
    ) -> None:
        super().__init__(backbone, feat_dim, num_class)
        self.temperature = temperature
        self.balanced_epochs = balanced_epochs
        self.balanced_lr = balanced_lr
        self.balanced_milestones = list(balanced_milestones)
        self.balanced_momentum = balanced_momentum
        self.balanced_weight_decay = balanced_weight_decay

    def distillation(
        self, images: torch.Tensor, logits: torch.Tensor, teacher: nn.Module, tasks: Sequence[TaskInfo]
    ) -> torch.Tensor:
        """Sum over ``tasks`` of KD(T) between the student's and the teacher's logits of that task."""
        with torch.no_grad():
            teacher_logits = teacher(images)
        terms = [
            kd_loss(
                logits[:, t.known_classes : t.total_classes],
                teacher_logits[:, t.known_classes : t.total_classes],
                self.temperature,
            )
            for t in tasks
        ]
        return torch.stack(terms).sum()

    def observe(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = self.replay(batch)
        images, labels = batch["image"], batch["label"]
        logits = self.backbone(images)[:, : self.total_classes]
        loss = loss_ce = F.cross_entropy(logits, labels)
        if self.teacher is not None:
            loss_kd = self.distillation(images, logits, self.teacher, self.seen_tasks[:-1])
            loss = loss_ce + loss_kd
            self.log_losses(loss_kd=loss_kd)
        self.log_losses(loss_ce=loss_ce)
        pred = logits.argmax(dim=1)
        return pred, (pred == labels).float().mean(), loss

    def after_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        if task.known_classes > 0 and self.balanced_epochs > 0 and len(buffer):
            self.balanced_finetuning(task, buffer, train_loader)
        super().after_task(task, buffer, train_loader, test_loaders)

    def balanced_finetuning(self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader) -> None:
        """Finetune on a class-balanced subset with a temporary distillation on the new classes."""
        counts = torch.bincount(buffer.labels, minlength=task.known_classes)[: task.known_classes]
        per_class = int(counts[counts > 0].min())
        new = train_loader.labels >= task.known_classes
        images = torch.cat([buffer.images, train_loader.images[new]])
        labels = torch.cat([buffer.labels, train_loader.labels[new]])
        subset, _ = class_balanced_split(labels, per_class, train_loader.generator)
        loader = DeviceLoader(
            images[subset],
            labels[subset],
            train_loader.batch_size,
            train_loader.transform,
            shuffle=True,
            generator=train_loader.generator,
            device=train_loader.device,
        )
        stage_one = frozen_copy(self.backbone)
        optimizer = torch.optim.SGD(
            self.get_parameters(None),
            lr=self.balanced_lr,
            momentum=self.balanced_momentum,
            weight_decay=self.balanced_weight_decay,
        )
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, self.balanced_milestones, gamma=0.1)
        self.train()
        loss_sum = torch.zeros((), device=train_loader.device)
        for _ in range(self.balanced_epochs):
            loss_sum.zero_()
            for batch in loader:
                inputs = batch["image"]
                logits = self.backbone(inputs)[:, : task.total_classes]
                loss = F.cross_entropy(logits, batch["label"])
                loss = loss + self.distillation(inputs, logits, stage_one, [task])  # temporary, new classes
                if self.teacher is not None:
                    loss = loss + self.distillation(inputs, logits, self.teacher, self.seen_tasks[:-1])
                self.optimizer_step(loss, optimizer)
                loss_sum += loss.detach()
            scheduler.step()
        logger.info(
            "balanced finetuning on %d samples (%d per class): last epoch loss %.4f",
            loader.num_samples,
            per_class,
            float(loss_sum) / max(len(loader), 1),
        )
