"""Feature distillation: finetune + lamda * MSE between the features of the current model and those of
the model frozen after the previous task (a tutorial method; docs/add-a-method.md builds it step by step).

before_task: from the second task on, freeze a copy of the model as the teacher; then grow the head.
observe: cross-entropy over the seen classes + lamda * MSE(features, teacher features).
after_task: drop the teacher (the next task copies the model again).
Measured: not yet measured under R5 (the tutorial compares it with finetune on the demo stream).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from libcontinual import Method, register_method
from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.methods.base import Batch, frozen_copy


@register_method("distill_features")
class DistillFeatures(Method):
    """Finetune whose features are pulled towards those of the previous model."""

    def __init__(self, backbone: nn.Module, feat_dim: int, num_class: int, lamda: float = 1.0) -> None:
        super().__init__(backbone, feat_dim, num_class)
        self.lamda = lamda
        self.teacher: nn.Module | None = None  # the name "teacher" lets a resumed run recreate it

    def before_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        """Copy the model before the head grows: the teacher is the model as it was after the last task."""
        if task.known_classes > 0:
            self.teacher = frozen_copy(self.backbone)
        super().before_task(task, buffer, train_loader, test_loaders)

    def observe(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cross-entropy over every seen class, plus the distillation term once there is a teacher."""
        images, labels = batch["image"], batch["label"]
        features = self.backbone.forward_features(images)
        logits = self.backbone.forward_head(features)[:, : self.total_classes]
        loss_ce = F.cross_entropy(logits, labels)
        loss = loss_ce
        if self.teacher is not None:
            with torch.no_grad():
                teacher_features = self.teacher.forward_features(images)
            loss_fd = F.mse_loss(features, teacher_features)
            loss = loss_ce + self.lamda * loss_fd
            self.log_losses(loss_fd=loss_fd)
        self.log_losses(loss_ce=loss_ce)
        pred = logits.argmax(dim=1)
        return pred, (pred == labels).float().mean(), loss

    def after_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        """The teacher is only needed while a task trains; the next task copies the model afresh."""
        self.teacher = None
