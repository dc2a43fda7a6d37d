"""LwF.MC — LwF in iCaRL's multi-class form, without exemplars
(Rebuffi et al., CVPR 2017, the "LwF.MC" baseline; as the ABD paper's code runs it:
GT-RIPL/AlwaysBeDreaming-DFCIL ``learners/kd.py``, ``LWF_MC``).

before_task: refuse a buffer (memory 0); from the second task on freeze a copy of the model as teacher;
    grow the head.
observe: sigmoid outputs with binary cross-entropy over every seen class; targets are the one-hot labels,
    except that the old-class targets are replaced by the teacher's sigmoid outputs (``loss_bce``); summed
    over classes, averaged over the batch (the reference's BCELoss(sum) / B; iCaRL here averages over
    classes too, a factor n_seen smaller).
after_task: drop the teacher (the next task copies the model again).
Computed from logits (``binary_cross_entropy_with_logits``): the same value as sigmoid + BCELoss without
its clamp of log at -100.
Measured: R5-DF seeds 1993–1995: last 31.48 ± 0.45, avg. inc. 43.69 ± 0.98
(seed 1993: 31.00 / 43.24; 1994: 31.88 / 44.81; 1995: 31.56 / 43.01; benchmarks/BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.methods.base import Batch, Method, frozen_copy, refuse_buffer
from libcontinual.registry import register_method


@register_method("lwf_mc")
class LwFMC(Method):
    exemplar_free = True

    def __init__(self, backbone: nn.Module, feat_dim: int, num_class: int) -> None:
        super().__init__(backbone, feat_dim, num_class)
        self.teacher: nn.Module | None = None

    def before_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        refuse_buffer(buffer, "lwf_mc")
        if task.known_classes > 0:
            self.teacher = frozen_copy(self.backbone)
        super().before_task(task, buffer, train_loader, test_loaders)

    def targets(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One-hot labels over the seen classes, old-class columns replaced by the teacher's sigmoids."""
        targets = F.one_hot(labels, self.total_classes).float()
        if self.teacher is not None:
            with torch.no_grad():
                targets[:, : self.known_classes] = torch.sigmoid(
                    self.teacher(images)[:, : self.known_classes]
                )
        return targets

    def observe(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels = batch["image"], batch["label"]
        logits = self.backbone(images)[:, : self.total_classes]
        targets = self.targets(images, labels)
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / labels.shape[0]
        self.log_losses(loss_bce=loss)
        pred = logits.argmax(dim=1)
        return pred, (pred == labels).float().mean(), loss

    def after_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        self.teacher = None
