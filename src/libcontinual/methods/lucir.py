"""LUCIR — Learning a Unified Classifier Incrementally via Rebalancing (Hou, Pan, Loy, Wang, Lin; CVPR 2019).

Official code: hshustc/CVPR19_Incremental_Learning (class_incremental_cosine_cifar100.py,
utils_incremental/incremental_train_and_eval_MR_LF.py). Backbone: ResNet-32 without the last ReLU
(``backbone.kwargs.last_relu: false``); the head is a ``CosineLinear``: logits = sigma * cos(f, w), sigma
learnable (init 1).
before_task: freeze the previous model as teacher, grow the head, merge the exemplars (Replay); from the
    second task on, imprint each new class's weight with the L2-normalised mean of its L2-normalised features,
    scaled to the old weights' mean norm, and freeze the old classes' weights (requires_grad False: not in the
    optimizer, so neither learning rate nor weight decay reach them; sigma and the new weights keep training).
observe: CE(sigma * cos) over every seen class + lamda * (1 - cos(f, f_old)) on all samples ("less forget",
    lamda = lamda_base * sqrt(n_old / n_new)) + lw_mr * margin ranking on old-class samples: the ground-truth
    cosine must beat each of the top-K new-class cosines by ``margin``.
after_task: exemplars by herding on normalised features (the buffer: 20 per class in the paper), drop the
    teacher, then iCaRL's class means of the exemplars (and their flips) for the NME classifier.
scores: ``cnn`` = sigma * cos; ``nme`` = nearest exemplar mean. (The paper's third, NCM over all training
    data, and its optional class-balanced finetuning are not implemented.)
Measured v0.1 (R5, seed 1993): CNN last 34.69, avg. incremental 40.68; NME 41.07 / 47.75 (replay 32.81, iCaRL
NME 47.16); `python benchmarks/r5.py lucir`, table and notes in benchmarks/BENCHMARKS.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from libcontinual.backbones.heads import CosineLinear
from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.methods.base import Batch
from libcontinual.methods.common import extract_features
from libcontinual.methods.replay import Replay, plain_transform
from libcontinual.registry import register_method


def margin_ranking(
    cosines: torch.Tensor, labels: torch.Tensor, known_classes: int, margin: float, top_k: int
) -> torch.Tensor:
    """Mean of max(0, margin - cos_gt + cos_hard) over old-class samples x their top-K new-class cosines.

    0 when the batch has no old-class sample; no host synchronisation (a mask instead of indexing).
    """
    old = (labels < known_classes).to(cosines.dtype)
    ground_truth = cosines.gather(1, labels.unsqueeze(1))
    hardest = cosines[:, known_classes:].topk(min(top_k, cosines.shape[1] - known_classes), dim=1).values
    hinge = (margin - ground_truth + hardest).clamp(min=0)
    return (hinge * old.unsqueeze(1)).sum() / (old.sum() * hardest.shape[1]).clamp(min=1)


@register_method("lucir")
class LUCIR(Replay):
    distills = True

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        num_class: int,
        lamda_base: float = 5.0,
        margin: float = 0.5,
        top_k: int = 2,
        lw_mr: float = 1.0,
        imprint: bool = True,
    ) -> None:
        super().__init__(backbone, feat_dim, num_class)
        backbone.replace_head(CosineLinear(feat_dim, learnable_scale=True, init_scale=1.0))
        self.lamda_base = lamda_base
        self.margin = margin
        self.top_k = top_k
        self.lw_mr = lw_mr
        self.imprint = imprint

    @property
    def lamda(self) -> float:
        """lamda_base * sqrt(n_old / n_new): the less-forget weight grows with the old/new class ratio."""
        return self.lamda_base * math.sqrt(self.known_classes / self.task.new_classes)

    def before_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        super().before_task(task, buffer, train_loader, test_loaders)
        if task.known_classes > 0 and self.imprint:
            self.imprint_new_weights(train_loader)

    def get_parameters(self, config: Any) -> Iterable[nn.Parameter] | list[dict[str, Any]]:
        """Everything but the old classes' weights, frozen here so that a resumed task freezes them too."""
        for weight in list(self.backbone.head.weights)[:-1]:
            weight.requires_grad_(False)
        return super().get_parameters(config)

    @torch.no_grad()
    def imprint_new_weights(self, train_loader: DeviceLoader) -> None:
        """New-class weights = normalised mean of normalised features, times the old weights' mean norm."""
        head, known = self.backbone.head, self.known_classes
        new = train_loader.labels >= known
        features = extract_features(self.backbone, train_loader.images[new], plain_transform(train_loader))
        labels = train_loader.labels[new] - known
        sums = features.new_zeros(self.task.new_classes, features.shape[1])
        sums.index_add_(0, labels, F.normalize(features, dim=1))
        old_norm = torch.cat(list(head.weights)[:-1]).norm(dim=1).mean()
        head.weights[-1].copy_(F.normalize(sums, dim=1) * old_norm)

    def observe(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch = self.replay(batch)
        images, labels = batch["image"], batch["label"]
        head = self.backbone.head
        features = self.backbone.forward_features(images)
        cosines = F.linear(F.normalize(features, dim=1), F.normalize(head.weight, dim=1))
        logits = head.sigma * cosines
        loss = loss_ce = F.cross_entropy(logits, labels)
        if self.teacher is not None:
            with torch.no_grad():
                old_features = self.teacher.forward_features(images)
            loss_lf = (1 - F.cosine_similarity(features, old_features, dim=1)).mean()
            loss_mr = margin_ranking(cosines, labels, self.known_classes, self.margin, self.top_k)
            loss = loss_ce + self.lamda * loss_lf + self.lw_mr * loss_mr
            self.log_losses(loss_lf=loss_lf, loss_mr=loss_mr)
        self.log_losses(loss_ce=loss_ce)
        pred = logits.argmax(dim=1)
        return pred, (pred == labels).float().mean(), loss
