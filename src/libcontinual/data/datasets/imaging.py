"""Pillow decoding and resizing on a thread pool (Pillow releases the GIL while it decodes)."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

CHUNK = 256


def worker_count() -> int:
    """Threads to use: the CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def run_in_chunks(count: int, work: Callable[[int, int], None]) -> None:
    """Run ``work(start, stop)`` over ``range(count)`` in chunks on a thread pool; re-raise any error."""
    bounds = [(start, min(start + CHUNK, count)) for start in range(0, count, CHUNK)]
    if len(bounds) <= 1 or worker_count() == 1:
        for start, stop in bounds:
            work(start, stop)
        return
    with ThreadPoolExecutor(max_workers=worker_count()) as pool:
        for future in [pool.submit(work, start, stop) for start, stop in bounds]:
            future.result()


def decode_image(path: str | os.PathLike, mode: str, image_size: int | None) -> np.ndarray:
    """Pixels of one image file as (H, W, C) uint8: ``Image.open(path).convert(mode)``, resized
    bilinearly to a square ``image_size`` when given and different."""
    with Image.open(path) as image:
        converted = image.convert(mode)
    if image_size is not None and converted.size != (image_size, image_size):
        converted = converted.resize((image_size, image_size), Image.Resampling.BILINEAR)
    array = np.asarray(converted)
    return array[:, :, None] if array.ndim == 2 else array


def resize_images(images: np.ndarray, image_size: int | None) -> np.ndarray:
    """Resize (N, H, W, C) uint8 images to (N, image_size, image_size, C) with Pillow BILINEAR;
    returns ``images`` itself when no resize is needed."""
    if image_size is None or images.shape[1:3] == (image_size, image_size):
        return images
    count, channels = images.shape[0], images.shape[3]
    out = np.empty((count, image_size, image_size, channels), dtype=np.uint8)

    def work(start: int, stop: int) -> None:
        for index in range(start, stop):
            pixels = images[index, :, :, 0] if channels == 1 else images[index]
            resized = Image.fromarray(pixels).resize((image_size, image_size), Image.Resampling.BILINEAR)
            out[index] = np.asarray(resized).reshape(image_size, image_size, channels)

    run_in_chunks(count, work)
    return out


def ensure_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Grey (N, H, W, 1) images repeated to 3 channels when ``channels`` is 3; otherwise unchanged."""
    if channels == 3 and images.shape[3] == 1:
        return np.repeat(images, 3, axis=3)
    return images


def is_hidden(name: str) -> bool:
    """Dot-files and dot-folders (``.DS_Store``, caches) are never data."""
    return name.startswith(".")
