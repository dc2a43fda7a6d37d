"""Image folders in LibContinual's layout, ``data_root/{train,test}/<class>/<image>``, decoded once.

Class indices follow the sorted class-folder names. The first load decodes every image with Pillow
on a thread pool; the arrays are cached (.npy files, memory-mapped when loaded) under a key made of
the file list (relative paths, sizes, modification times) and the decoding options, so later loads
take a fraction of a second and any change to the files triggers a fresh decode. An entry is named
``image_folder-<source>-<content>``: <source> hashes the folder's absolute path and the decoding options,
<content> the file list; writing a new entry deletes the older ones with the same <source>, which the
changed files made stale, so the cache does not grow with every edit of the dataset.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from libcontinual import progress
from libcontinual.data.datasets.cache import (
    discard_entry,
    fingerprint,
    load_entry,
    prune_entries,
    save_entry,
    writable_cache_dir,
)
from libcontinual.data.datasets.common import (
    channel_mode,
    check_image_size,
    require_data_root,
    require_folder,
)
from libcontinual.data.datasets.imaging import decode_image, is_hidden, run_in_chunks
from libcontinual.data.types import ClassificationData
from libcontinual.errors import DataError
from libcontinual.registry import register_dataset

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"})
SPLITS = ("train", "test")
CACHE_FOLDER = ".libcontinual_cache"
CACHE_VERSION = "image_folder-2"
LARGE_ARRAYS = ("train_images", "test_images")
SMALL_ARRAYS = ("train_labels", "test_labels", "class_names")
SKIPPED = ("train_skipped", "test_skipped")  # paths left out by skip_bad_images (absent in older caches)
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)
REPORTED_BAD_PATHS = 5


@dataclass
class _Split:
    """The image files of one split, in class order, with their labels and one stat fingerprint
    (names, sizes, modification times) per class folder.

    Paths are plain strings: building 60,000 Path objects would cost more than loading the cache.
    """

    paths: list[str]
    labels: np.ndarray
    stamps: list[str]


def _class_folders(split_dir: Path) -> list[str]:
    if not split_dir.is_dir():
        raise DataError(
            f"image folder split {split_dir} not found: expected {split_dir}/<class>/<image> "
            f"(LibContinual layout data_root/{{train,test}}/<class>/<image>)"
        )
    try:
        return sorted(
            entry.name for entry in os.scandir(split_dir) if entry.is_dir() and not is_hidden(entry.name)
        )
    except OSError as error:
        raise DataError(f"cannot list image folder split {split_dir}: {error}") from error


def _list_split(root: Path, split: str, classes: list[str]) -> _Split:
    paths: list[str] = []
    labels: list[int] = []
    stamps: list[str] = []
    for label, name in enumerate(classes):
        folder = os.path.join(root, split, name)
        images = []
        try:
            for entry in os.scandir(folder):
                if not is_hidden(entry.name) and is_image_name(entry.name) and entry.is_file():
                    stat = entry.stat()
                    images.append((entry.name, stat.st_size, stat.st_mtime_ns))
        except OSError as error:
            raise DataError(f"cannot list class folder {folder}: {error}") from error
        if not images:
            raise DataError(
                f"class folder {folder} has no images (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}); "
                f"add images or remove the folder from both train/ and test/"
            )
        images.sort()
        paths.extend([os.path.join(folder, file) for file, _, _ in images])
        labels.extend([label] * len(images))
        stamps.append(
            "\n".join([f"{split}/{name}", *(f"{file}:{size}:{mtime}" for file, size, mtime in images)])
        )
    return _Split(paths, np.asarray(labels, dtype=np.int64), stamps)


def is_image_name(name: str) -> bool:
    """Whether a file name has one of the accepted image extensions (any case)."""
    return name[name.rfind(".") :].lower() in IMAGE_EXTENSIONS


def _list_classes(root: Path) -> list[str]:
    require_folder(root, "image_folder", "train/<class>/<image> and test/<class>/<image>")
    if not root.is_dir():
        raise DataError(
            f"image folder {root} not found: data_root must hold "
            f"train/<class>/<image> and test/<class>/<image>. Set data_root (in the config, or "
            f"data_root=FOLDER on the command line) to such a folder; images in an archive "
            f"(e.g. cifar10-jpg.tar.gz) are extracted first: mkdir -p data && tar xf ARCHIVE -C data"
        )
    train, test = (_class_folders(root / split) for split in SPLITS)
    if not train:
        raise DataError(f"no class folders in {root / 'train'}: expected {root / 'train'}/<class>/<image>")
    if train != test:
        only_train, only_test = sorted(set(train) - set(test)), sorted(set(test) - set(train))
        raise DataError(
            f"class folders differ between {root / 'train'} and {root / 'test'}: "
            f"only in train: {only_train or 'none'}; only in test: {only_test or 'none'}. "
            f"Both splits need the same class folders."
        )
    return train


def _decode_split(
    paths: list[str], mode: str, image_size: int | None, bar: progress.Bar
) -> tuple[np.ndarray, dict[int, str]]:
    """All images of ``paths`` as one (N, H, W, C) array, and the reason for each unreadable index.

    Without ``image_size`` every image must share the size of the first readable one.
    """
    problems: dict[int, str] = {}
    first = None
    for index, path in enumerate(paths):
        try:
            first = decode_image(path, mode, image_size)
            break
        except DECODE_ERRORS as error:
            problems[index] = f"{type(error).__name__}: {error}"
    out = np.zeros((len(paths), *(first.shape if first is not None else (0, 0, 1))), dtype=np.uint8)
    if first is None:
        return out, problems
    start_index = len(problems)
    out[start_index] = first

    def work(start: int, stop: int) -> None:
        for index in range(max(start, start_index + 1), stop):
            try:
                pixels = decode_image(paths[index], mode, image_size)
            except DECODE_ERRORS as error:
                problems[index] = f"{type(error).__name__}: {error}"
                continue
            if pixels.shape != first.shape:
                raise DataError(
                    f"image {paths[index]} is {pixels.shape[1]}x{pixels.shape[0]} but "
                    f"{paths[start_index]} is {first.shape[1]}x{first.shape[0]}: images of one dataset "
                    f"must share a size. "
                    f"Set image_size (e.g. image_size: {first.shape[0]}) to resize them all."
                )
            out[index] = pixels
        bar.advance(stop - start)

    run_in_chunks(len(paths), work)
    return out, problems


def _decode(
    root: Path, splits: dict[str, _Split], mode: str, image_size: int | None, skip_bad_images: bool
) -> dict[str, np.ndarray]:
    """Decode both splits; unreadable images are a DataError, or are dropped with ``skip_bad_images``."""
    started = time.perf_counter()
    arrays: dict[str, np.ndarray] = {}
    bad: list[tuple[str, str]] = []
    for split, listing in splits.items():
        with progress.track(f"decoding {len(listing.paths)} {split} images", len(listing.paths)) as bar:
            images, problems = _decode_split(listing.paths, mode, image_size, bar)
        keep = np.ones(len(listing.paths), dtype=bool)
        keep[list(problems)] = False
        arrays[f"{split}_images"] = images if keep.all() else images[keep]
        arrays[f"{split}_labels"] = listing.labels[keep]
        arrays[f"{split}_skipped"] = np.array([listing.paths[index] for index in sorted(problems)], dtype=str)
        bad.extend((listing.paths[index], problems[index]) for index in sorted(problems))
    if bad and not skip_bad_images:
        path, reason = bad[0]
        more = f" ({len(bad) - 1} more images are unreadable too)" if len(bad) > 1 else ""
        raise DataError(
            f"cannot decode image {path}: {reason}{more}. Replace or delete it, or pass "
            f"skip_bad_images=True (dataset.kwargs.skip_bad_images: true) to leave unreadable images out."
        )
    if bad:
        shown = ", ".join(path for path, _ in bad[:REPORTED_BAD_PATHS])
        logger.warning("Skipped %d unreadable images under %s, e.g. %s", len(bad), root, shown)
    for split in SPLITS:
        if arrays[f"{split}_labels"].size == 0:
            raise DataError(f"no readable images in {root / split}")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DataError(
            f"train images under {root} are {arrays['train_images'].shape[1:3]} but test images are "
            f"{arrays['test_images'].shape[1:3]}: set image_size to resize both splits to one size."
        )
    count = sum(listing.labels.size for listing in splits.values()) - len(bad)
    logger.info("Decoded %d images under %s in %.1f s.", count, root, time.perf_counter() - started)
    return arrays


def warn_cached_skips(root: Path, splits: dict[str, _Split], arrays: dict) -> None:
    """A cached dataset made with ``skip_bad_images`` says so on every run: it holds fewer images than
    the folders list."""
    listed = sum(listing.labels.size for listing in splits.values())
    held = sum(arrays[f"{split}_labels"].size for split in SPLITS)
    if held < listed:
        examples = [str(path) for split in SPLITS for path in arrays.get(f"{split}_skipped", [])]
        shown = f", e.g. {', '.join(examples[:REPORTED_BAD_PATHS])}" if examples else ""
        logger.warning(
            "Skipped %d unreadable images under %s (skip_bad_images; found when the cache was made)%s",
            listed - held,
            root,
            shown,
        )


def _cached(stem: Path, classes: list[str], splits: dict[str, _Split], skip_bad_images: bool) -> dict | None:
    """The cache entry ``stem`` if it exists and fits the listing; a misfit is discarded as corrupt."""
    arrays = load_entry(stem, LARGE_ARRAYS, SMALL_ARRAYS)
    if arrays is None:
        return None
    fits = list(arrays["class_names"]) == classes
    for split, listing in splits.items():
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        expected = labels.size if skip_bad_images else listing.labels.size
        fits = (
            fits and images.dtype == np.uint8 and images.ndim == 4 and len(images) == labels.size == expected
        )
    if fits:
        return arrays
    discard_entry(stem, LARGE_ARRAYS, "its arrays do not match the listed images")
    return None


@register_dataset("image_folder")
def image_folder(
    data_root: str | None,
    image_size: int | None = None,
    *,
    channels: int = 3,
    cache_dir: str | None = None,
    skip_bad_images: bool = False,
) -> ClassificationData:
    """Images from ``data_root/{train,test}/<class>/<image>``; classes are the sorted folder names.

    Pixels equal ``np.asarray(Image.open(p).convert("RGB"))`` (``"L"`` when ``channels`` is 1),
    resized bilinearly to a square ``image_size`` when given. Decoded arrays are cached in
    ``cache_dir`` (default ``<data_root>/.libcontinual_cache``, or ``~/.cache/libcontinual`` when
    that is not writable). ``skip_bad_images`` leaves unreadable files out instead of failing.
    """
    check_image_size(image_size, "image_folder")
    mode = channel_mode(channels, "image_folder")
    root = require_data_root(data_root, "image_folder")
    classes = _list_classes(root)
    splits = {split: _list_split(root, split, classes) for split in SPLITS}
    options = [f"image_size={image_size}", f"mode={mode}", f"skip_bad_images={skip_bad_images}"]
    source = fingerprint([str(root.resolve()), *options])
    stamps = [stamp for listing in splits.values() for stamp in listing.stamps]
    content = fingerprint([CACHE_VERSION, *stamps])
    preferred = Path(cache_dir).expanduser() if cache_dir is not None else root / CACHE_FOLDER
    folder = writable_cache_dir(preferred, explicit=cache_dir is not None)
    prefix = f"image_folder-{source}-"
    stem = folder / f"{prefix}{content}" if folder is not None else None
    arrays = _cached(stem, classes, splits, skip_bad_images) if stem is not None else None
    if arrays is not None:
        logger.info("Loaded %s from the cache in %s.", root, folder)
        warn_cached_skips(root, splits, arrays)
    else:
        arrays = _decode(root, splits, mode, image_size, skip_bad_images)
        small = {key: arrays[key] for key in (*SMALL_ARRAYS, *SKIPPED) if key in arrays}
        small["class_names"] = np.array(classes, dtype=str)
        with progress.track(f"caching the decoded images in {folder}"):
            saved = stem is not None and save_entry(stem, {key: arrays[key] for key in LARGE_ARRAYS}, small)
        if saved:
            logger.info("Cached the decoded images in %s.", folder)
            for index in prune_entries(folder, prefix, stem, LARGE_ARRAYS):
                logger.info("Removed the stale cache entry %s (its images changed).", index.name)
    data = ClassificationData(
        name="image_folder",
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"].astype(np.int64, copy=False),
        test_images=arrays["test_images"],
        test_labels=arrays["test_labels"].astype(np.int64, copy=False),
        class_names=classes,
        source=str(root),
    )
    data.validate()
    return data
