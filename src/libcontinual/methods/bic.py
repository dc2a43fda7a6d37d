"""BiC — Large Scale Incremental Learning (Wu, Chen, Wang, Ye, Liu, Guo, Fu; CVPR 2019).

before_task: freeze the previous (bias-corrected) model as teacher, grow the head, merge the exemplars, then
    hold out a class-balanced validation set from that data: per class ``val_ratio`` (10 %) of the smallest
    old-class exemplar count, from the exemplars of old classes and the same count from each new class
    (held-out samples are not trained on; no test data is used).
observe: lambda * KD(T=2) on the old-class logits + (1 - lambda) * CE, lambda = n_old / n_seen; every logit
    goes through the bias layers of earlier tasks (fixed), as does the teacher's.
after_task: stage 2 (from the second task on): only beta (init 1) and gamma (init 0) of this task's bias
    layer, applied to the new-class logits as beta * z + gamma, are trained on the validation logits
    (network fixed, no augmentation) with CE + ``gamma_penalty`` (0.1) * gamma^2; then the memory update
    among all the task's samples, held-out ones included (herding on unnormalised features: buffer
    ``normalize_features: false``), then drop the teacher.
Bias layers of all tasks are kept as per-class ``beta``/``gamma`` buffers; the validation set is part of the
state while a task runs (resume inside a task).
Measured v0.1 (R5, seed 1993): last accuracy 28.80, average incremental 37.37 (finetune 16.31 / 33.79, replay
32.81 / 39.95: below replay on this 5-epoch protocol, benchmarks/BENCHMARKS.md says why);
`python benchmarks/r5.py bic`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from libcontinual.buffers.linear import LinearBuffer
from libcontinual.buffers.strategies import class_balanced_split, random_subset
from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.errors import ConfigError
from libcontinual.methods.base import Batch
from libcontinual.methods.common import extract_features, kd_loss
from libcontinual.methods.replay import Replay, plain_transform
from libcontinual.registry import register_method

logger = logging.getLogger(__name__)


@register_method("bic")
class BiC(Replay):
    distills = True

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        num_class: int,
        temperature: float = 2.0,
        val_ratio: float = 0.1,
        bias_epochs: int = 250,
        bias_lr: float = 0.1,
        bias_milestones: Sequence[int] = (100, 150, 200),
        gamma_penalty: float = 0.1,
    ) -> None:
        super().__init__(backbone, feat_dim, num_class)
        self.temperature = temperature
        self.val_ratio = val_ratio
        self.bias_epochs = bias_epochs
        self.bias_lr = bias_lr
        self.bias_milestones = list(bias_milestones)
        self.gamma_penalty = gamma_penalty
        self.register_buffer("beta", torch.ones(num_class))
        self.register_buffer("gamma", torch.zeros(num_class))
        self.validation: tuple[torch.Tensor, torch.Tensor] | None = None

    def corrected(self, logits: torch.Tensor) -> torch.Tensor:
        """Every bias layer applied to its classes' logits (identity for classes not yet corrected)."""
        width = logits.shape[1]
        return logits * self.beta[:width] + self.gamma[:width]

    def before_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        if not isinstance(buffer, LinearBuffer):
            raise ConfigError(
                "BiC holds out part of the merged exemplars for validation: use buffer name 'linear'."
            )
        super().before_task(task, buffer, train_loader, test_loaders)
        self.validation = None
        if task.known_classes > 0 and len(buffer):
            counts = torch.bincount(buffer.labels)
            per_class = max(1, int(self.val_ratio * int(counts[counts > 0].min())))
            held, kept = class_balanced_split(train_loader.labels, per_class, train_loader.generator)
            self.validation = (train_loader.images[held], train_loader.labels[held])
            train_loader.images, train_loader.labels = train_loader.images[kept], train_loader.labels[kept]

    def observe(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = self.replay(batch)
        images, labels = batch["image"], batch["label"]
        logits = self.corrected(self.backbone(images)[:, : self.total_classes])
        loss = loss_ce = F.cross_entropy(logits, labels)
        if self.teacher is not None:
            known = self.known_classes
            with torch.no_grad():
                teacher_logits = self.corrected(self.teacher(images)[:, :known])
            loss_kd = kd_loss(logits[:, :known], teacher_logits, self.temperature)
            weight = known / self.total_classes
            loss = weight * loss_kd + (1 - weight) * loss_ce
            self.log_losses(loss_kd=loss_kd)
        self.log_losses(loss_ce=loss_ce)
        pred = logits.argmax(dim=1)
        return pred, (pred == labels).float().mean(), loss

    def after_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        own = train_loader.labels >= task.known_classes  # the task's samples (exemplars are old classes)
        candidates = [(train_loader.images[own], train_loader.labels[own])]
        if self.validation is not None:
            images, labels = self.validation
            with torch.no_grad():
                features = extract_features(self.backbone, images, plain_transform(train_loader))
                logits = self.corrected(self.backbone.forward_head(features)[:, : task.total_classes])
            self.correct_bias(
                logits, labels, task.known_classes, train_loader.batch_size, train_loader.generator
            )
            held_new = labels >= task.known_classes
            candidates.append((images[held_new], labels[held_new]))
            self.validation = None
        images, labels = (torch.cat(parts) for parts in zip(*candidates, strict=True))
        buffer.update(self, train_loader, (images, labels))
        self.teacher = None
        self.update_class_means(task, buffer, train_loader)

    def correct_bias(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        known: int,
        batch_size: int,
        generator: torch.Generator,
    ) -> None:
        """Stage 2: fit this task's (beta, gamma) on fixed validation logits; only new-class logits change."""
        beta = nn.Parameter(logits.new_ones(()))
        gamma = nn.Parameter(logits.new_zeros(()))
        optimizer = torch.optim.SGD([beta, gamma], lr=self.bias_lr, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, self.bias_milestones, gamma=0.1)
        old, new = logits[:, :known], logits[:, known:]
        for _ in range(self.bias_epochs):
            order = random_subset(labels.shape[0], labels.shape[0], generator).to(labels.device)
            for start in range(0, labels.shape[0], batch_size):
                index = order[start : start + batch_size]
                scores = torch.cat([old[index], beta * new[index] + gamma], dim=1)
                loss = F.cross_entropy(scores, labels[index]) + self.gamma_penalty * gamma**2
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            scheduler.step()
        total = logits.shape[1]
        accuracy_before = (self.corrected(logits).argmax(dim=1) == labels).float().mean()
        self.beta[known:total] = beta.detach()
        self.gamma[known:total] = gamma.detach()
        accuracy_after = (self.corrected(logits).argmax(dim=1) == labels).float().mean()
        logger.info(
            "bias correction of classes %d-%d: beta %.4f, gamma %.4f; validation accuracy %.2f%% -> %.2f%%",
            known,
            total - 1,
            float(self.beta[known]),
            float(self.gamma[known]),
            100 * float(accuracy_before),
            100 * float(accuracy_after),
        )

    def get_extra_state(self) -> Any:
        return {**super().get_extra_state(), "validation": self.validation}

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        self.validation = state["validation"]

    def logit_scores(self, features: torch.Tensor) -> torch.Tensor:
        return self.corrected(super().logit_scores(features))  # only ``cnn``: NME distances are not logits
