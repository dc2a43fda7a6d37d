"""Small helpers shared by distillation, regularisation and exemplar methods (iCaRL, E2E, BiC, WA, LwF, EWC).

``kd_loss``: knowledge distillation between softened distributions; ``frozen_copy``: a teacher (defined
in ``methods.base``, whose ``load_state_dict`` recreates teachers); ``extract_features``: features of stored
uint8 images without augmentation (defined in ``buffers.features``). Both are re-exported here.
``task_cross_entropy``/``check_ce_classes``: the CE over new or seen classes that LwF and EWC share.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from libcontinual.buffers.features import extract_features
from libcontinual.errors import ConfigError
from libcontinual.methods.base import frozen_copy

__all__ = ["check_ce_classes", "extract_features", "frozen_copy", "kd_loss", "task_cross_entropy"]


def kd_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Batch-mean KL(teacher || student) of the ``temperature``-softened distributions, no T^2 factor.

    Same gradients as PyCIL's soft-target cross-entropy (they differ by the teacher's entropy, a
    constant), and exactly 0 when the student equals its teacher.
    """
    log_student = F.log_softmax(logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    return (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1).mean()


CE_CLASSES = ("new", "seen")


def task_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, known_classes: int, ce_classes: str
) -> torch.Tensor:
    """CE over the new-class logits (``new``: labels shifted by ``known_classes``) or all seen (``seen``)."""
    if ce_classes == "new":
        return F.cross_entropy(logits[:, known_classes:], labels - known_classes)
    return F.cross_entropy(logits, labels)


def check_ce_classes(ce_classes: str, buffer: Any) -> None:
    """``new`` cannot score exemplars of old classes: a buffer needs ``seen``."""
    if ce_classes not in CE_CLASSES:
        raise ValueError(f"ce_classes must be one of {CE_CLASSES}, got {ce_classes!r}")
    if buffer is not None and ce_classes == "new":
        raise ConfigError(
            "method.kwargs.ce_classes is 'new' (CE over the new-class logits only) but a buffer is set: its "
            "exemplars belong to old classes. Set method.kwargs.ce_classes: seen."
        )
