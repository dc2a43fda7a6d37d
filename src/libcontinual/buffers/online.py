"""OnlineBuffer: a reservoir from which a replay batch is drawn and mixed into every training batch.

``buffer.merge(train_loader)`` in ``before_task`` remembers the loader's augmentation and generator;
``batch = buffer.mix(batch)`` in ``observe`` appends ``batch_size`` exemplars (default: as many as the
batch has), augmented on the device like the training data; ``buffer.update(method, train_loader)`` in
``after_task`` streams the task's samples through the strategy (default: reservoir, so the memory is a
uniform sample of everything seen).

Deviation from Mammoth/ER, stated: the trainer's batches carry augmented float images, not the uint8
originals, so the reservoir sees a task's samples at the end of the task (in a seeded random order)
instead of batch by batch. The memory after each task has the same distribution; during a task, replay
draws from earlier tasks only.
Resume: the trainer hands the buffer to the method only in ``before_task``, so a run resumed from a
checkpoint inside a task cannot replay until the next task and stops with an error saying so
(checkpoints at task boundaries resume exactly).
"""

from __future__ import annotations

import torch

from libcontinual.buffers.base import ExemplarBuffer
from libcontinual.data.loader import DeviceLoader, Transform
from libcontinual.registry import register_buffer


@register_buffer("online")
class OnlineBuffer(ExemplarBuffer):
    """Replay mixed into every batch; see ``LinearBuffer`` for ``buffer_size`` / ``memory_per_class``."""

    def __init__(
        self,
        buffer_size: int | None = None,
        memory_per_class: int | None = None,
        strategy: str = "reservoir",
        normalize_features: bool = True,
        batch_size: int | None = None,
    ) -> None:
        super().__init__(buffer_size, memory_per_class, strategy, normalize_features)
        if batch_size is not None and batch_size <= 0:
            raise ValueError(f"batch_size (replayed samples per batch) must be positive, got {batch_size}")
        self.batch_size = batch_size
        self._transform: Transform | None = None
        self._generator: torch.Generator | None = None

    def merge(self, loader: DeviceLoader) -> None:
        """Count the task's samples; remember the augmentation/generator that replayed images go through."""
        super().merge(loader)
        self.resume(loader)

    def resume(self, loader: DeviceLoader) -> None:
        """Remember the augmentation and generator that replayed images go through."""
        self._transform = loader.transform
        self._generator = loader.generator

    def mix(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``batch`` followed by a replay batch (image and label) drawn uniformly from the memory."""
        if not len(self):
            return batch
        if self._transform is None or self._generator is None:
            raise RuntimeError("OnlineBuffer.mix needs merge(train_loader) at the start of the task")
        replay = self.sample(self.batch_size or int(batch["label"].shape[0]), self._generator)
        images = self._transform(replay["image"], self._generator)
        return {
            "image": torch.cat([batch["image"], images.to(batch["image"].device)]),
            "label": torch.cat([batch["label"], replay["label"].to(batch["label"].device)]),
        }
