"""Finetune, the lower bound of every benchmark: train on each new task's data alone.

before_task: grow the head to every class seen so far (``Method``).
observe: cross-entropy over the new-class logits (``ce_classes: new``, PyCIL ``models/finetune.py``: old
    logits get no gradient from the new data) or over every seen class (``ce_classes: seen``, the form of
    LibContinual's and Avalanche's naive baseline). The first task has no old classes, so both are the same
    there.
after_task: nothing.
Measured: see benchmarks/BENCHMARKS.md (R5, seeds 1993/1994/1995) and the README's method table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.methods.base import Batch, Method
from libcontinual.methods.common import check_ce_classes, task_cross_entropy
from libcontinual.registry import register_method


@register_method("finetune")
class FinetuneBaseline(Method):
    """``Method`` (the contract every method subclasses) with the choice of cross-entropy classes."""

    def __init__(self, backbone: nn.Module, feat_dim: int, num_class: int, ce_classes: str = "new") -> None:
        super().__init__(backbone, feat_dim, num_class)
        check_ce_classes(ce_classes, None)
        self.ce_classes = ce_classes

    def before_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        check_ce_classes(self.ce_classes, buffer)
        super().before_task(task, buffer, train_loader, test_loaders)

    def observe(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels = batch["image"], batch["label"]
        logits = self.backbone(images)[:, : self.total_classes]
        loss = task_cross_entropy(logits, labels, self.known_classes, self.ce_classes)
        self.log_losses(loss_ce=loss)
        pred = logits.argmax(dim=1)
        return pred, (pred == labels).float().mean(), loss
