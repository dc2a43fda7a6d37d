"""Per-dataset defaults in one table: normalisation statistics and training augmentation.

A config overrides any of these with ``normalize: {mean, std}`` and ``augment: {...}``. A dataset
missing from the table is normalised with statistics computed from its training images and gets
no augmentation.
"""

from __future__ import annotations

CIFAR_AUGMENT = {"crop_padding": 4, "horizontal_flip": True, "brightness": 63 / 255, "contrast": 0.0}
NO_AUGMENT = {"crop_padding": 0, "horizontal_flip": False, "brightness": 0.0, "contrast": 0.0}

DATASET_DEFAULTS: dict[str, dict] = {
    "cifar10": {
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2470, 0.2435, 0.2616),
        "augment": CIFAR_AUGMENT,
    },
    "cifar100": {
        "mean": (0.5071, 0.4866, 0.4409),
        "std": (0.2675, 0.2565, 0.2761),
        "augment": CIFAR_AUGMENT,
    },
    "demo": {
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2470, 0.2435, 0.2616),
        "augment": CIFAR_AUGMENT,
    },
    "mnist": {"mean": (0.1307,), "std": (0.3081,), "augment": NO_AUGMENT},
    "fashion_mnist": {"mean": (0.2860,), "std": (0.3530,), "augment": NO_AUGMENT},
}


def dataset_defaults(name: str) -> dict:
    """The defaults for ``name``: a dict with optional ``mean``, ``std`` and ``augment``."""
    return DATASET_DEFAULTS.get(name, {"augment": NO_AUGMENT})
