"""Naive rehearsal (Replay): finetune on the new task's data plus exemplars of the old classes.

The baseline of the exemplar methods ("Naive Rehearsal" with a 2000-image coreset in Smith et al., ICCV 2021;
PyCIL ``models/replay.py``) and their base class: iCaRL, E2E, BiC and WA override only what differs.
before_task: freeze a copy of the model as teacher when the subclass distils (``distills``), grow the head,
    ``buffer.merge(train_loader)`` (a linear buffer appends its exemplars to the task's data).
observe: ``self.replay(batch)`` (an online buffer appends a replay batch), then CE over every seen class.
after_task: ``buffer.update(self, train_loader)`` (exemplars chosen among the task's own samples), drop the
    teacher (the next task copies the model again).
Resume inside a task: the teacher is part of the state dict (``Method.load_state_dict`` recreates it).
Measured (R5, seed 1993): last accuracy 32.81, average incremental 39.95 (finetune 16.31 / 33.79);
`python benchmarks/r5.py replay`, table in benchmarks/BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from libcontinual.buffers.base import ExemplarBuffer
from libcontinual.data.augment import Normalize
from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.methods.base import Batch, Method
from libcontinual.methods.common import frozen_copy
from libcontinual.registry import register_method


@register_method("replay")
class Replay(Method):
    requires_buffer = True
    distills = False  # subclasses that distil from the previous model set True

    def __init__(self, backbone: nn.Module, feat_dim: int, num_class: int) -> None:
        super().__init__(backbone, feat_dim, num_class)
        self.buffer: ExemplarBuffer | None = None
        self.teacher: nn.Module | None = None

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


def plain_transform(loader: DeviceLoader) -> Normalize:
    """The loader's normalisation without augmentation (features of exemplars, validation logits)."""
    return Normalize(loader.transform.mean, loader.transform.std)  # type: ignore[attr-defined]
