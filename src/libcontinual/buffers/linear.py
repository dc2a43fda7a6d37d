"""LinearBuffer: exemplars are merged into the next task's training data (LibContinual's semantics).

A method calls ``buffer.merge(train_loader)`` in ``before_task`` (the loader then holds the task's data
plus every exemplar, shuffled together by the trainer) and ``buffer.update(method, train_loader)`` in
``after_task`` (exemplars chosen among the task's own samples). Default strategy: herding (iCaRL).
"""

from __future__ import annotations

from libcontinual.buffers.base import ExemplarBuffer
from libcontinual.data.loader import DeviceLoader
from libcontinual.registry import register_buffer


@register_buffer("linear")
class LinearBuffer(ExemplarBuffer):
    """Exemplars appended to each new task's data.

    ``buffer_size``: total exemplars (iCaRL: 2000), or ``memory_per_class`` (LUCIR: 20); set one.
    ``strategy``: random, equal_random, reservoir or herding. ``normalize_features``: herding on
    L2-normalised features (iCaRL) or raw ones (BiC).
    """

    def __init__(
        self,
        buffer_size: int | None = None,
        memory_per_class: int | None = None,
        strategy: str = "herding",
        normalize_features: bool = True,
    ) -> None:
        super().__init__(buffer_size, memory_per_class, strategy, normalize_features)

    def merge(self, loader: DeviceLoader) -> None:
        """Count the task's samples, then append every exemplar at the end of the loader."""
        super().merge(loader)
        if len(self):
            assert self.images is not None and self.labels is not None
            loader.extend(self.images, self.labels)
