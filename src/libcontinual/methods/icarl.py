"""iCaRL — Incremental Classifier and Representation Learning
(Rebuffi, Kolesnikov, Sperl, Lampert, CVPR 2017).

Loss (``loss``): ``kd`` (default) = CE over the seen classes + KD(T=2) on the old-class logits against the
frozen previous model, as PyCIL (``models/icarl.py``), whose CIFAR-100 B0 Inc10 numbers and lr-0.1 schedule
we compare with; ``bce`` = the paper's sigmoid binary cross-entropy where the old-class targets are the
previous model's sigmoid outputs (the original lr-2.0 schedule belongs with it).
before_task: freeze the previous model as teacher, grow the head, merge the exemplars (Replay).
observe: the loss above on new data + exemplars.
after_task: herding selection of m = K / n_seen exemplars per class (the buffer; old sets keep their first
    m), then the class means of the nearest-mean-of-exemplars classifier (Replay's).
scores: ``cnn`` = the network's logits; ``nme`` = minus the distance of the L2-normalised feature to each
    class mean.
Backbone: ResNet-32 without the last ReLU (config ``backbone.kwargs.last_relu: false``).
Measured v0.1 (R5, seed 1993): NME last accuracy 47.16, average incremental 49.89; CNN 39.54 / 43.13 (finetune
16.31 / 33.79); `python benchmarks/r5.py icarl`, table in benchmarks/BENCHMARKS.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from libcontinual.methods.base import Batch
from libcontinual.methods.common import kd_loss
from libcontinual.methods.replay import Replay
from libcontinual.registry import register_method

LOSSES = ("kd", "bce")


@register_method("icarl")
class ICaRL(Replay):
    distills = True

    def __init__(
        self, backbone: nn.Module, feat_dim: int, num_class: int, temperature: float = 2.0, loss: str = "kd"
    ) -> None:
        super().__init__(backbone, feat_dim, num_class)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.temperature = temperature
        self.loss = loss

    def observe(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = self.replay(batch)
        images, labels = batch["image"], batch["label"]
        logits = self.backbone(images)[:, : self.total_classes]
        known = self.known_classes
        teacher_logits = None
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.teacher(images)[:, :known]
        if self.loss == "bce":
            targets = F.one_hot(labels, self.total_classes).float()
            if teacher_logits is not None:
                targets[:, :known] = torch.sigmoid(teacher_logits)
            loss = F.binary_cross_entropy_with_logits(logits, targets)
            self.log_losses(loss_bce=loss)
        else:
            loss = loss_ce = F.cross_entropy(logits, labels)
            if teacher_logits is not None:
                loss_kd = kd_loss(logits[:, :known], teacher_logits, self.temperature)
                loss = loss_ce + loss_kd
                self.log_losses(loss_kd=loss_kd)
            self.log_losses(loss_ce=loss_ce)
        pred = logits.argmax(dim=1)
        return pred, (pred == labels).float().mean(), loss
