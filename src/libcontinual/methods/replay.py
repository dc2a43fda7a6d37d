"""Naive rehearsal (Replay): finetune on the new task's data plus exemplars of the old classes.

The baseline of the exemplar methods ("Naive Rehearsal" with a 2000-image coreset in Smith et al., ICCV 2021;
PyCIL ``models/replay.py``) and their base class: iCaRL, E2E, BiC, WA and LUCIR override only what differs.
Like PyCIL, every exemplar method reports two classifiers: ``cnn`` (the network's logits) and ``nme``
(iCaRL's nearest mean of exemplars).
before_task: freeze a copy of the model as teacher when the subclass distils (``distills``), grow the head,
    ``buffer.merge(train_loader)`` (a linear buffer appends its exemplars to the task's data).
observe: ``self.replay(batch)`` (an online buffer appends a replay batch), then CE over every seen class.
after_task: ``buffer.update(self, train_loader)`` (exemplars chosen among the task's own samples), drop the
    teacher (the next task copies the model again), then the class means of the NME classifier: mean of the
    L2-normalised features of each class's exemplars and of their horizontal flips, L2-normalised.
scores(classifier="nme"): minus the distance of the L2-normalised feature to each class mean.
Resume inside a task: the teacher is part of the state dict (``Method.load_state_dict`` recreates it).
Measured v0.1 (R5, seed 1993): last accuracy 32.81, average incremental 39.95 (finetune 16.31 / 33.79);
`python benchmarks/r5.py replay`, table in benchmarks/BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from libcontinual.buffers.base import ExemplarBuffer
from libcontinual.data.augment import Normalize
from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.methods.base import Batch, Method
from libcontinual.methods.common import extract_features, frozen_copy
from libcontinual.registry import register_method


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


@register_method("replay")
class Replay(Method):
    classifiers = ("cnn", "nme")
    requires_buffer = True
    distills = False  # subclasses that distil from the previous model set True

    def __init__(self, backbone: nn.Module, feat_dim: int, num_class: int) -> None:
        super().__init__(backbone, feat_dim, num_class)
        self.buffer: ExemplarBuffer | None = None
        self.teacher: nn.Module | None = None
        self.class_means = torch.zeros(0, feat_dim)

    def before_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        if not isinstance(buffer, ExemplarBuffer):
            raise ValueError(
                f"{type(self).__name__} needs an exemplar buffer (config key 'buffer'), got {buffer!r}"
            )
        if self.distills and task.known_classes > 0:
            self.teacher = frozen_copy(self.backbone)
        super().before_task(task, buffer, train_loader, test_loaders)
        self.buffer = buffer
        buffer.merge(train_loader)

    def resume_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        self.buffer = buffer
        buffer.resume(train_loader)

    def replay(self, batch: Batch) -> Batch:
        """``batch`` with the buffer's per-batch replay mixed in (online buffers; linear ones add none)."""
        assert self.buffer is not None, "before_task or resume_task hands the buffer over"
        return self.buffer.mix(batch)

    def observe(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return super().observe(self.replay(batch))

    def after_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        buffer.update(self, train_loader)
        self.teacher = None
        self.update_class_means(task, buffer, train_loader)

    def update_class_means(self, task: TaskInfo, buffer: ExemplarBuffer, train_loader: DeviceLoader) -> None:
        """The NME classifier's class means from the exemplars (call after every buffer update)."""
        self.class_means = exemplar_means(
            self.backbone, buffer.images, buffer.labels, task.total_classes, plain_transform(train_loader)
        )

    @torch.no_grad()
    def scores(
        self, images: torch.Tensor, task_id: int | None = None, classifier: str = "cnn"
    ) -> torch.Tensor:
        features = self.backbone.forward_features(images)
        if classifier != "nme":
            return self.logit_scores(features)
        return nme_scores(features, self.class_means.to(features.device), self.total_classes)

    @torch.no_grad()
    def scores_per_classifier(
        self, images: torch.Tensor, task_id: int | None = None
    ) -> dict[str, torch.Tensor]:
        """``cnn`` and ``nme`` from one backbone pass (evaluation would otherwise run it twice)."""
        features = self.backbone.forward_features(images)
        class_means = self.class_means.to(features.device)
        return {
            "cnn": self.logit_scores(features),
            "nme": nme_scores(features, class_means, self.total_classes),
        }

    def logit_scores(self, features: torch.Tensor) -> torch.Tensor:
        """The ``cnn`` classifier's scores from backbone features: the head's logits of the seen classes."""
        return self.backbone.forward_head(features)[:, : self.total_classes]

    def get_extra_state(self) -> Any:
        return {**super().get_extra_state(), "class_means": self.class_means.cpu()}

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        self.class_means = state["class_means"].to(self.device)


def plain_transform(loader: DeviceLoader) -> Normalize:
    """The loader's normalisation without augmentation (features of exemplars, validation logits)."""
    return Normalize(loader.transform.mean, loader.transform.std)  # type: ignore[attr-defined]
