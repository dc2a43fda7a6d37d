"""iCaRL — Incremental Classifier and Representation Learning
(Rebuffi, Kolesnikov, Sperl, Lampert, CVPR 2017).

Loss (``loss``): ``kd`` (default) = CE over the seen classes + KD(T=2) on the old-class logits against the
frozen previous model, as PyCIL (``models/icarl.py``), whose CIFAR-100 B0 Inc10 numbers and lr-0.1 schedule
we compare with; ``bce`` = the paper's sigmoid binary cross-entropy where the old-class targets are the
previous model's sigmoid outputs (the original lr-2.0 schedule belongs with it).
before_task: freeze the previous model as teacher, grow the head, merge the exemplars (Replay).
observe: the loss above on new data + exemplars.
after_task: herding selection of m = K / n_seen exemplars per class (the buffer; old sets keep their first
    m), then class means for the nearest-mean-of-exemplars classifier: mean of the L2-normalised features of
    each class's exemplars and of their horizontal flips, L2-normalised.
scores: ``cnn`` = the network's logits; ``nme`` = minus the distance of the L2-normalised feature to each
    class mean.
Backbone: ResNet-32 without the last ReLU (config ``backbone.kwargs.last_relu: false``).
Measured (R5, seed 1993): NME last accuracy 47.16, average incremental 49.89; CNN 39.54 / 43.13 (finetune
16.31 / 33.79); `python benchmarks/r5.py icarl`, table in benchmarks/BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.methods.base import Batch
from libcontinual.methods.common import extract_features, kd_loss
from libcontinual.methods.replay import Replay, plain_transform
from libcontinual.registry import register_method

LOSSES = ("kd", "bce")


def exemplar_means(
    backbone: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int, normalize: Any
) -> torch.Tensor:
    """(num_classes, d) iCaRL class means from exemplars and their flips; a class without exemplars is 0."""
    features = F.normalize(extract_features(backbone, images, normalize), dim=1)
    flipped = F.normalize(extract_features(backbone, images.flip(3), normalize), dim=1)
    sums = features.new_zeros(num_classes, features.shape[1]).index_add_(0, labels, features + flipped)
    counts = torch.bincount(labels, minlength=num_classes).clamp(min=1).unsqueeze(1)
    return F.normalize(sums / (2 * counts), dim=1)


def nme_scores(features: torch.Tensor, class_means: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Minus the distance of each L2-normalised feature to each class mean; -inf where there is no mean."""
    scores = -torch.cdist(F.normalize(features, dim=1), class_means[:num_classes])
    missing = class_means[:num_classes].norm(dim=1) == 0
    scores = scores.masked_fill(missing, float("-inf"))
    return F.pad(scores, (0, num_classes - scores.shape[1]), value=float("-inf"))


class NMEReplay(Replay):
    """Replay plus a nearest-mean-of-exemplars classifier (iCaRL, LUCIR): reports ``cnn`` and ``nme``.

    after_task: class means of the exemplars' normalised features (flip-augmented) after the buffer update.
    scores(classifier="nme"): minus the distance of normalised features to each class mean.
    """

    classifiers = ("cnn", "nme")

    def __init__(self, backbone: nn.Module, feat_dim: int, num_class: int) -> None:
        super().__init__(backbone, feat_dim, num_class)
        self.class_means = torch.zeros(0, feat_dim)

    def after_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        super().after_task(task, buffer, train_loader, test_loaders)
        self.class_means = exemplar_means(
            self.backbone, buffer.images, buffer.labels, task.total_classes, plain_transform(train_loader)
        )

    @torch.no_grad()
    def scores(
        self, images: torch.Tensor, task_id: int | None = None, classifier: str = "cnn"
    ) -> torch.Tensor:
        if classifier != "nme":
            return super().scores(images, task_id, classifier)
        features = self.backbone.forward_features(images)
        return nme_scores(features, self.class_means.to(features.device), self.total_classes)

    def get_extra_state(self) -> Any:
        return {**super().get_extra_state(), "class_means": self.class_means.cpu()}

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        self.class_means = state["class_means"].to(self.device)


@register_method("icarl")
class ICaRL(NMEReplay):
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
