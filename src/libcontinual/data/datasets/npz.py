"""Any dataset saved with ``np.savez``: ``x_train, y_train, x_test, y_test`` (+ optional ``class_names``).

Images may be (N, H, W) or (N, H, W, C) with C = 1 or 3. uint8 is used as is; other integer
arrays with values in [0, 255] are cast; float arrays are read as [0, 1] when their maximum is at
most 1, else as [0, 255], and rounded to uint8 (a log line says which). Labels are integers;
Without ``class_names`` the training labels must be exactly 0..K-1 and the test labels among them: a
stray label would otherwise add a class silently and shift the class order.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

from libcontinual.data.datasets.common import check_image_size, require_data_root
from libcontinual.data.datasets.imaging import is_hidden, resize_images
from libcontinual.data.types import ClassificationData
from libcontinual.errors import ConfigError, DataError
from libcontinual.registry import register_dataset

logger = logging.getLogger(__name__)

ARRAYS = ("x_train", "y_train", "x_test", "y_test", "class_names")
REQUIRED = ARRAYS[:4]


def _npz_file(root: Path) -> Path:
    if root.is_file():
        return root
    if not root.is_dir():
        raise DataError(f"npz dataset {root} not found: set data_root to a .npz file or a folder holding one")
    candidates = sorted(path for path in root.glob("*.npz") if not is_hidden(path.name))
    if len(candidates) != 1:
        listed = ", ".join(path.name for path in candidates) or "none"
        raise DataError(
            f"npz dataset folder {root} must hold exactly one .npz file, found {listed}; "
            f"set data_root to the file itself."
        )
    return candidates[0]


def _key_map(keys: dict[str, str] | None) -> dict[str, str]:
    mapping = {name: name for name in ARRAYS}
    unknown = sorted(set(keys or {}) - set(ARRAYS))
    if unknown:
        raise ConfigError(f"npz: keys may rename {', '.join(ARRAYS)}; unknown {', '.join(unknown)}")
    mapping.update(keys or {})
    return mapping


def _as_uint8(images: np.ndarray, where: str) -> np.ndarray:
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[3] not in (1, 3):
        hint = (
            " (channels first? transpose to (N, H, W, C))"
            if images.ndim == 4 and images.shape[1] in (1, 3)
            else ""
        )
        raise DataError(
            f"{where}: images must have shape (N, H, W) or (N, H, W, 1 or 3), got {images.shape}{hint}"
        )
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind not in "iuf" or images.size == 0:
        raise DataError(f"{where}: images must be uint8, integer or float, got {images.dtype}")
    low, high = images.min(), images.max()
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
        raise DataError(
            f"{where}: pixel values must lie in [0, 255] (or [0, 1] as floats), found {low}..{high}"
        )
    if images.dtype.kind == "f" and high <= 1.0:
        logger.info("%s: float images in [0, 1]; scaling by 255 and rounding to uint8.", where)
        return np.rint(images * 255.0).astype(np.uint8)
    logger.info("%s: %s images in [0, 255]; rounding to uint8.", where, images.dtype)
    return np.rint(images).astype(np.uint8)


def _as_labels(labels: np.ndarray, count: int, where: str, image_key: str) -> np.ndarray:
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise DataError(f"{where}: labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if len(labels) != count:
        raise DataError(f"{where}: {len(labels)} labels for {count} images in {image_key!r}")
    if labels.size and labels.min() < 0:
        raise DataError(f"{where}: negative label {labels.min()} at index {int(labels.argmin())}")
    return labels.astype(np.int64)


def _label_count(
    splits: dict[str, tuple[np.ndarray, np.ndarray]], mapping: dict[str, str], path: Path
) -> int:
    """K for a file without class_names: train labels are 0..K-1 with none missing, test labels < K."""
    present = np.unique(splits["train"][1])
    gaps = np.nonzero(present != np.arange(len(present)))[0]
    hint = f"; or save {mapping['class_names']!r} to declare the classes"
    if len(gaps):
        missing = int(gaps[0])
        raise DataError(
            f"{path} key {mapping['y_train']!r}: labels must be 0..K-1 without class_names, but class "
            f"{missing} has no training image while label {int(present[missing])} exists. Renumber the "
            f"labels{hint}."
        )
    test = splits["test"][1]
    if test.size and test.max() >= len(present):
        raise DataError(
            f"{path} key {mapping['y_test']!r}: label {int(test.max())} at index {int(test.argmax())} is not "
            f"a training class (0..{len(present) - 1}). Fix the label{hint}."
        )
    return len(present)


@register_dataset("npz")
def npz(
    data_root: str | None, image_size: int | None = None, *, keys: dict[str, str] | None = None
) -> ClassificationData:
    """A dataset stored in one .npz file (``data_root`` is the file, or a folder holding exactly one).

    ``keys`` renames arrays, e.g. ``{"x_train": "images"}``, for files saved with other names.
    """
    check_image_size(image_size, "npz")
    mapping = _key_map(keys)
    path = _npz_file(require_data_root(data_root, "npz"))
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [mapping[name] for name in REQUIRED if mapping[name] not in archive.files]
            if missing:
                raise DataError(
                    f"{path} lacks {', '.join(repr(key) for key in missing)}; it holds "
                    f"{', '.join(archive.files) or 'nothing'} (pass keys={{...}} to map other names)"
                )
            arrays = {name: archive[mapping[name]] for name in ARRAYS if mapping[name] in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        hint = " (save class_names as a str array, not objects)" if "allow_pickle" in str(error) else ""
        raise DataError(f"cannot read {path}: {type(error).__name__}: {error}{hint}") from error
    splits = {}
    for split in ("train", "test"):
        x_key, y_key = mapping[f"x_{split}"], mapping[f"y_{split}"]
        images = _as_uint8(arrays[f"x_{split}"], f"{path} key {x_key!r}")
        labels = _as_labels(arrays[f"y_{split}"], len(images), f"{path} key {y_key!r}", x_key)
        splits[split] = (resize_images(images, image_size), labels)
    if "class_names" in arrays:
        class_names = [str(name) for name in np.asarray(arrays["class_names"]).reshape(-1)]
        for split, (_, labels) in splits.items():
            if labels.size and labels.max() >= len(class_names):
                raise DataError(
                    f"{path} key {mapping[f'y_{split}']!r}: label {labels.max()} at index "
                    f"{int(labels.argmax())} is out of range: {mapping['class_names']!r} names "
                    f"{len(class_names)} classes"
                )
    else:
        class_names = [str(index) for index in range(_label_count(splits, mapping, path))]
    if splits["train"][0].shape[1:] != splits["test"][0].shape[1:]:
        raise DataError(
            f"{path}: train images are {splits['train'][0].shape[1:]} but test images are "
            f"{splits['test'][0].shape[1:]}; both splits need one (H, W, C) (image_size resizes H and W)"
        )
    data = ClassificationData(
        name="npz",
        train_images=splits["train"][0],
        train_labels=splits["train"][1],
        test_images=splits["test"][0],
        test_labels=splits["test"][1],
        class_names=class_names,
        source=str(path),
    )
    data.validate()
    return data
