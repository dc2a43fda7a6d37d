"""A generated dataset for tests and quick experiments: each class is a noisy copy of its own pattern.

Small, learnable in a few steps, and identical for the same seed, so tests run real code paths in
seconds without files.
"""

from __future__ import annotations

import numpy as np

from libcontinual.data.datasets.catalog import default_location
from libcontinual.data.types import ClassificationData
from libcontinual.errors import ConfigError
from libcontinual.registry import register_dataset


@register_dataset("synthetic")
@default_location("(generated, no files)", found=lambda _: True)
def load_synthetic(
    data_root: str | None = None,
    image_size: int | None = None,
    *,
    num_classes: int = 6,
    train_per_class: int = 32,
    test_per_class: int = 16,
    channels: int = 3,
    noise: float = 40.0,
    seed: int = 0,
) -> ClassificationData:
    """``num_classes`` random smooth patterns (``image_size`` square, default 16) plus Gaussian noise."""
    size = image_size or 16
    if num_classes < 1 or train_per_class < 1 or test_per_class < 1 or channels not in (1, 3) or size < 4:
        raise ConfigError(
            "Config key 'dataset.kwargs': synthetic needs num_classes, train_per_class, test_per_class >= 1, "
            "channels 1 or 3 and image_size >= 4."
        )
    rng = np.random.RandomState(seed)
    coarse = rng.uniform(0, 255, size=(num_classes, 4, 4, channels))
    patterns = coarse.repeat(-(-size // 4), axis=1).repeat(-(-size // 4), axis=2)[:, :size, :size]

    def sample(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.repeat(np.arange(num_classes), per_class)
        images = patterns[labels] + rng.normal(0, noise, size=(len(labels), size, size, channels))
        return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)

    train_images, train_labels = sample(train_per_class)
    test_images, test_labels = sample(test_per_class)
    return ClassificationData(
        name="synthetic",
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
        class_names=[f"pattern_{i}" for i in range(num_classes)],
        source=f"generated (seed {seed})",
    )
