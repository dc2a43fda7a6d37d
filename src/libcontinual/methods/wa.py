"""WA — Weight Aligning (Zhao, Xiao, Gan, Zhang, Xia; "Maintaining Discrimination and Fairness in Class
Incremental Learning", CVPR 2020).

before_task: freeze the previous (aligned) model as teacher, grow the head, merge the exemplars (Replay).
observe: (1 - lambda) * CE + lambda * KD(T=2) on the old-class logits, lambda = n_old / n_seen (the paper's
    Eq.; PyCIL ``models/wa.py`` uses CE + 2 * KD instead).
optimizer_step: from the second task on, after each step clamp the classifier weights to be non-negative
    (the paper's weight clipping, Sec. 3.3, part of its incremental phase; ``clip_weights``). The first task
    is plain cross-entropy training, identical to finetune's. PyCIL does not clip (``clip_weights: false``).
after_task: weight aligning (from the second task on): scale the new classes' weight vectors by
    mean ||w_old|| / mean ||w_new|| (biases untouched, as PyCIL), then the memory update (herding), then drop
    the teacher.
Measured v0.1 (R5, seed 1993): last accuracy 36.49, average incremental 47.01 (finetune 16.31 / 33.79);
`python benchmarks/r5.py wa`, table in benchmarks/BENCHMARKS.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.methods.base import Batch
from libcontinual.methods.common import kd_loss
from libcontinual.methods.replay import Replay
from libcontinual.registry import register_method

logger = logging.getLogger(__name__)


@torch.no_grad()
def align_weights(head: nn.Module, known_classes: int) -> float:
    """Scale the weight rows of classes >= ``known_classes`` so their mean norm equals the old rows'.

    Returns the factor. ``head`` is an ``IncrementalLinear``; only whole chunks after ``known_classes`` move.
    """
    norms = head.weight.norm(dim=1)
    factor = float(norms[:known_classes].mean() / norms[known_classes:].mean())
    start = 0
    for weight in head.weights:
        if start >= known_classes:
            weight.mul_(factor)
        start += weight.shape[0]
    return factor


@register_method("wa")
class WA(Replay):
    distills = True

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        num_class: int,
        temperature: float = 2.0,
        clip_weights: bool = True,
    ) -> None:
        super().__init__(backbone, feat_dim, num_class)
        self.temperature = temperature
        self.clip_weights = clip_weights

    def observe(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = self.replay(batch)
        images, labels = batch["image"], batch["label"]
        logits = self.backbone(images)[:, : self.total_classes]
        loss = loss_ce = F.cross_entropy(logits, labels)
        if self.teacher is not None:
            known = self.known_classes
            with torch.no_grad():
                teacher_logits = self.teacher(images)[:, :known]
            loss_kd = kd_loss(logits[:, :known], teacher_logits, self.temperature)
            weight = known / self.total_classes
            loss = (1 - weight) * loss_ce + weight * loss_kd
            self.log_losses(loss_kd=loss_kd)
        self.log_losses(loss_ce=loss_ce)
        pred = logits.argmax(dim=1)
        return pred, (pred == labels).float().mean(), loss

    def optimizer_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        super().optimizer_step(loss, optimizer)
        if self.clip_weights and self.known_classes > 0:
            with torch.no_grad():
                for weight in self.backbone.head.weights:
                    weight.clamp_(min=0)

    def after_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        if task.known_classes > 0:
            factor = align_weights(self.backbone.head, task.known_classes)
            logger.info("weight aligning: new-class weights of task %d scaled by %.4f", task.index, factor)
        super().after_task(task, buffer, train_loader, test_loaders)
