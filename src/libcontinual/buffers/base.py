"""The exemplar memory shared by the linear and the online buffer: budget, update strategies, state.

How a buffer plugs in without trainer changes (the trainer only hands the buffer to the hooks):
``before_task``: ``buffer.merge(train_loader)``: count the task's own samples; a ``LinearBuffer`` then
    appends its exemplars at the end of the loader (LibContinual semantics); an ``OnlineBuffer`` remembers
    the loader's augmentation and generator for ``mix``.
``observe``: ``batch = buffer.mix(batch)``: unchanged for a linear buffer; an online buffer appends a replay
    batch of exemplars, augmented on the device like the training data.
``after_task``: ``buffer.update(method, train_loader)``: choose exemplars among the task's own samples (the
    loader's first ``task_samples``, never the merged exemplars), herding features from ``method.backbone``
    without augmentation. A method that reorders or drops loader samples passes ``samples`` explicitly.
``add(images, labels, generator=..., features=..., logits=...)`` is the same update with explicit inputs.
``task_samples`` is part of the state, so an update after a resume inside a task sees the same candidates.

Memory is a fixed total (``buffer_size``; class-wise strategies give each of the n seen classes
``buffer_size // n``, so old shares shrink as classes arrive) or fixed per class (``memory_per_class``).
Exemplars are uint8 (N, C, H, W) on the device of the data they came from; class-wise strategies store
each class's exemplars in selection order, so shrinking keeps the earliest-chosen ones.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from libcontinual import progress
from libcontinual.buffers.features import extract_features
from libcontinual.buffers.strategies import (
    CLASS_WISE,
    STRATEGIES,
    class_quotas,
    herding_order,
    random_subset,
    reservoir_slots,
    reservoir_winners,
)
from libcontinual.data.augment import Normalize
from libcontinual.data.loader import DeviceLoader

Features = Callable[[torch.Tensor], torch.Tensor]


class ExemplarBuffer:
    """Stored exemplars (``images``, ``labels``, optional ``logits``) and how they are chosen."""

    def __init__(
        self,
        buffer_size: int | None,
        memory_per_class: int | None,
        strategy: str,
        normalize_features: bool,
    ) -> None:
        if (buffer_size is None) == (memory_per_class is None):
            raise ValueError("set exactly one of buffer_size (total exemplars) and memory_per_class")
        budget = buffer_size if buffer_size is not None else memory_per_class
        if not isinstance(budget, int) or budget <= 0:
            raise ValueError(f"the exemplar budget must be a positive integer, got {budget!r}")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if strategy == "reservoir" and memory_per_class is not None:
            raise ValueError(
                "strategy 'reservoir' samples a fixed total: set buffer_size, not memory_per_class"
            )
        self.buffer_size = buffer_size
        self.memory_per_class = memory_per_class
        self.strategy = strategy
        self.normalize_features = normalize_features
        self.images: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.logits: torch.Tensor | None = None
        self.seen_classes: list[int] = []
        self.stream_count = 0  # samples offered so far (reservoir)
        self.task_samples: int | None = None  # the loader's own samples at ``merge`` (merged ones follow)

    def __len__(self) -> int:
        return 0 if self.labels is None else int(self.labels.shape[0])

    @property
    def capacity(self) -> int:
        """The most exemplars the buffer may hold now (grows with the classes in per-class mode)."""
        if self.memory_per_class is not None:
            return self.memory_per_class * len(self.seen_classes)
        assert self.buffer_size is not None
        return self.buffer_size

    def class_quotas(self) -> dict[int, int]:
        """Exemplars allowed per seen class (class-wise strategies)."""
        if self.memory_per_class is not None:
            return {cls: self.memory_per_class for cls in self.seen_classes}
        balanced = self.strategy == "equal_random"
        return class_quotas(self.seen_classes, self.capacity, balanced_remainder=balanced)

    # ------------------------------------------------------------------ the hooks' side
    def merge(self, loader: DeviceLoader) -> None:
        """Start of a task: count the loader's own samples, the candidates of ``update``."""
        self.task_samples = loader.num_samples

    def resume(self, loader: DeviceLoader) -> None:
        """A run resumed inside a task: the loader already holds the merged data; nothing to redo."""

    def mix(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A training batch with replayed exemplars mixed in (the base adds none)."""
        return batch

    def update(
        self, method: Any, loader: DeviceLoader, samples: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> None:
        """End of a task: choose exemplars among the task's own samples.

        The candidates are ``samples`` (uint8 images, labels) when given, else the loader's first
        ``task_samples`` (counted by ``merge``; the whole loader without a merge). ``method.backbone`` gives
        herding features (eval mode, the loader's normalisation only); randomness comes from
        ``loader.generator``.
        """
        if samples is None:
            count = loader.num_samples if self.task_samples is None else self.task_samples
            samples = (loader.images[:count], loader.labels[:count])
        self.task_samples = None
        images, labels = samples
        if loader.generator is None:
            raise ValueError("the buffer draws from the loader's generator; this loader has none")
        features = None
        if self.strategy == "herding":
            normalize = Normalize(loader.transform.mean, loader.transform.std)  # type: ignore[attr-defined]
            features = functools.partial(extract_features, method.backbone, normalize=normalize)
        self.add(images, labels, generator=loader.generator, features=features)

    # ------------------------------------------------------------------ the update itself
    def add(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        generator: torch.Generator,
        features: Features | None = None,
        logits: torch.Tensor | None = None,
    ) -> None:
        """Offer new samples; afterwards the buffer holds at most ``capacity`` exemplars.

        ``features`` maps uint8 images to feature rows (required by ``herding``); ``logits`` (N, K) are kept
        per exemplar when given (every call must give them or none; narrower old rows are zero-padded).
        """
        if images.dtype != torch.uint8 or images.dim() != 4 or labels.shape != (images.shape[0],):
            raise ValueError(f"add needs uint8 (N, C, H, W) images and N labels, got {tuple(images.shape)}")
        new_classes = set(labels.unique().tolist())
        self.seen_classes = sorted(set(self.seen_classes) | new_classes)
        labels = labels.to(images.device, torch.int64)
        pool_images, pool_labels, pool_logits = self._pool(images, labels, logits)
        if self.strategy in CLASS_WISE:
            keep = self._per_class(pool_images, pool_labels, new_classes, generator, features)
        elif self.strategy == "random":
            keep = random_subset(pool_labels.shape[0], self.capacity, generator).sort().values
        else:
            keep = self._reservoir(labels.shape[0], generator)
        self.stream_count += int(labels.shape[0])
        keep = keep.to(pool_labels.device)
        self.images, self.labels = pool_images[keep], pool_labels[keep]
        self.logits = pool_logits[keep] if pool_logits is not None else None

    def _pool(
        self, images: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Stored exemplars followed by the new samples."""
        if len(self) and (logits is None) != (self.logits is None):
            raise ValueError("give logits with every update of a buffer, or with none")
        if logits is not None:
            logits = logits.to(images.device)
        if not len(self):
            return images, labels, logits
        assert self.images is not None and self.labels is not None
        if logits is not None and self.logits is not None:
            width = max(logits.shape[1], self.logits.shape[1])
            old = F.pad(self.logits, (0, width - self.logits.shape[1]))
            logits = torch.cat([old, F.pad(logits, (0, width - logits.shape[1]))])
        images = torch.cat([self.images, images.to(self.images.device)])
        return images, torch.cat([self.labels, labels.to(self.labels.device)]), logits

    def _per_class(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        new_classes: set[int],
        generator: torch.Generator,
        features: Features | None,
    ) -> torch.Tensor:
        """Each class keeps its first ``quota`` exemplars; a class with new samples is chosen afresh."""
        parts = []
        quotas = self.class_quotas().items()
        if self.strategy == "herding":
            quotas = progress.iterate(quotas, f"herding exemplars of {len(new_classes)} classes")
        for cls, quota in quotas:
            members = torch.nonzero(labels == cls).squeeze(1)
            if cls in new_classes:
                if self.strategy == "herding":
                    if features is None:
                        raise ValueError("strategy 'herding' needs features of the new samples")
                    rows = features(images[members])
                    rows = F.normalize(rows, dim=1) if self.normalize_features else rows
                    order = herding_order(rows, quota)
                else:
                    order = random_subset(members.shape[0], quota, generator)
                members = members[order.to(members.device)]
            parts.append(members[:quota])
        return torch.cat(parts)

    def _reservoir(self, incoming: int, generator: torch.Generator) -> torch.Tensor:
        """Pool indices after Algorithm R over the new samples, streamed in a random order."""
        old_count = len(self)
        stream = random_subset(incoming, incoming, generator)
        slots = reservoir_slots(self.stream_count, incoming, self.capacity, generator)
        winners = reservoir_winners(slots, self.capacity)
        size = min(self.capacity, self.stream_count + incoming)
        keep = torch.arange(size, device=winners.device)
        winners = winners[:size]
        written = winners >= 0
        keep[written] = old_count + stream[winners[written]]
        return keep

    def sample(self, count: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``min(count, len(self))`` distinct exemplars, uniformly: ``image``, ``label`` (and ``logits``)."""
        if not len(self):
            raise ValueError("cannot sample from an empty buffer")
        assert self.images is not None and self.labels is not None
        index = random_subset(len(self), count, generator).to(self.labels.device)
        drawn = {"image": self.images[index], "label": self.labels[index]}
        if self.logits is not None:
            drawn["logits"] = self.logits[index]
        return drawn

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "images": self.images,
            "labels": self.labels,
            "logits": self.logits,
            "seen_classes": list(self.seen_classes),
            "stream_count": self.stream_count,
            "task_samples": self.task_samples,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["strategy"] != self.strategy:
            raise ValueError(
                f"buffer state was saved with strategy {state['strategy']!r}, not {self.strategy!r}"
            )
        self.images, self.labels, self.logits = state["images"], state["labels"], state["logits"]
        self.seen_classes = list(state["seen_classes"])
        self.stream_count = int(state["stream_count"])
        self.task_samples = state["task_samples"]
