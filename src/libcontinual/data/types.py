"""The in-memory form every dataset loader returns: uint8 images and integer labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ClassificationData:
    """A labelled image dataset held in memory.

    Images are uint8 arrays of shape (N, H, W, C) (C = 1 or 3); labels are int64 in
    ``[0, len(class_names))``. ``extras`` carries dataset-specific arrays such as CIFAR-100's
    ``train_coarse_labels`` / ``test_coarse_labels``.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]
    source: str = ""
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]

    def validate(self) -> None:
        """Check shapes, dtypes and label ranges; raise DataError naming what is wrong."""
        from libcontinual.errors import DataError

        for split in ("train", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            where = f"dataset {self.name!r} ({self.source or 'in memory'}), {split} split"
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
                raise DataError(
                    f"{where}: images must be uint8 of shape (N, H, W, 1 or 3), "
                    f"got {images.dtype} {images.shape}"
                )
            if labels.shape != (images.shape[0],):
                raise DataError(f"{where}: {labels.shape[0]} labels for {images.shape[0]} images")
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise DataError(
                    f"{where}: labels must lie in [0, {self.num_classes - 1}] "
                    f"({self.num_classes} classes), found {labels.min()}..{labels.max()}"
                )
