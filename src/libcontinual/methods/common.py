"""Small helpers shared by distillation and exemplar methods (iCaRL, E2E, BiC, WA; reusable by LwF, LUCIR).

``kd_loss``: knowledge distillation between softened distributions; ``frozen_copy``: a teacher (defined
in ``methods.base``, whose ``load_state_dict`` recreates teachers); ``extract_features``: features of stored
uint8 images without augmentation (defined in ``buffers.features``). Both are re-exported here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from libcontinual.buffers.features import extract_features
from libcontinual.methods.base import frozen_copy

__all__ = ["extract_features", "frozen_copy", "kd_loss"]


def kd_loss(logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Batch-mean KL(teacher || student) of the ``temperature``-softened distributions, no T^2 factor.

    Same gradients as PyCIL's soft-target cross-entropy (they differ by the teacher's entropy, a
    constant), and exactly 0 when the student equals its teacher.
    """
    log_student = F.log_softmax(logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    return (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1).mean()
