"""The device loader: a split held as one uint8 tensor on the training device.

A batch is an index gather plus batched augmentation on the device; every random draw comes from
the loader's own seeded generator, whose state is part of a checkpoint.

Under torch.distributed a training loader yields this rank's shard of each global batch: every rank
draws the same epoch order and augments the whole global batch with the same generator (so the images
are those one process would see), then keeps its contiguous shard (``distributed.shard_bounds``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from libcontinual.distributed import SINGLE, Ranks, shard_bounds

Transform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


class DeviceLoader:
    """Iterates ``{"image": float (B, C, H, W), "label": int64 (B,)}`` batches.

    ``images`` is uint8 (N, C, H, W); it is moved to ``device`` once. ``extend`` appends samples
    (a LinearBuffer merges exemplars into the next task's data this way). With ``ranks`` of several
    processes, each batch also carries ``global_size`` (the batch one process would train on) and
    ``shard_size`` (this rank's part of it); a rank whose shard is empty (a last batch smaller than the
    number of processes) gets the batch's first sample with ``shard_size`` 0, so the trainer weighs it 0.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        transform: Transform,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        ranks: Ranks = SINGLE,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{labels.shape[0]} labels for {images.shape[0]} images")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.transform = transform
        self.shuffle = shuffle
        self.generator = generator
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.ranks = ranks

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    def extend(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Append samples (uint8 images, int labels) to this split."""
        self.images = torch.cat([self.images, images.to(self.device)])
        self.labels = torch.cat([self.labels, labels.to(self.device, torch.int64)])

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def epoch_order(self) -> torch.Tensor | None:
        """The sample order of one epoch (a seeded permutation when shuffling), drawn from the generator."""
        if not self.shuffle:
            return None
        order = torch.randperm(self.num_samples, generator=self.generator, device=self.generator_device)
        return order.to(self.device)

    def batches(self, order: torch.Tensor | None, start_batch: int = 0) -> Iterator[dict[str, torch.Tensor]]:
        """Batches ``start_batch, start_batch + 1, ...`` of an epoch with the given order (resumable)."""
        for start in range(start_batch * self.batch_size, len(self) * self.batch_size, self.batch_size):
            if order is None:
                images = self.images[start : start + self.batch_size]
                labels = self.labels[start : start + self.batch_size]
            else:
                index = order[start : start + self.batch_size]
                images = self.images.index_select(0, index)
                labels = self.labels.index_select(0, index)
            images = self.transform(images, self.generator)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if not self.ranks.active:
                yield {"image": images, "label": labels}
                continue
            global_size = int(labels.shape[0])
            first, stop = shard_bounds(global_size, self.ranks)
            shard = slice(first, stop) if stop > first else slice(0, 1)
            yield {
                "image": images[shard],
                "label": labels[shard],
                "global_size": global_size,
                "shard_size": stop - first,
            }

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self.batches(self.epoch_order())

    @property
    def generator_device(self) -> torch.device:
        return self.generator.device if self.generator is not None else torch.device("cpu")
