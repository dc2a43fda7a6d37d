"""Pictures of synthetic images: a grid with one row per class (the teacher's label), as a PNG.

A researcher looks at dreams before trusting them: washed-out or identical tiles, or an empty row (a class
the generator never produces), explain a weak data-free result faster than any number.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from libcontinual.files import atomic_write_bytes


def to_unit_range(
    images: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None
) -> torch.Tensor:
    """Undo the normalisation (``x * std + mean``) when known, else stretch each image to [0, 1]."""
    images = images.detach().float().cpu()
    if mean is not None and std is not None:
        shape = (1, -1, 1, 1)
        images = images * torch.tensor(std).reshape(shape) + torch.tensor(mean).reshape(shape)
    else:
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        high = images.amax(dim=(1, 2, 3), keepdim=True)
        images = (images - low) / (high - low).clamp(min=1e-8)
    return images.clamp(0.0, 1.0)


def class_grid(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, per_class: int = 8, gap: int = 2
) -> np.ndarray:
    """uint8 (H', W', 3) grid: row c holds up to ``per_class`` images labelled c (black where fewer)."""
    channels, height, width = images.shape[1:]
    grid = np.zeros((num_classes * (height + gap) + gap, per_class * (width + gap) + gap, 3), dtype=np.uint8)
    pixels = (images.numpy() * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)
    if channels == 1:
        pixels = np.repeat(pixels, 3, axis=3)
    labels = labels.cpu().numpy()
    for c in range(num_classes):
        for k, index in enumerate(np.flatnonzero(labels == c)[:per_class]):
            top, left = gap + c * (height + gap), gap + k * (width + gap)
            grid[top : top + height, left : left + width] = pixels[index, :, :, :3]
    return grid


def write_png(path: Path, grid: np.ndarray, scale: int = 1) -> Path:
    """Write ``grid`` as a PNG (atomically), enlarged ``scale`` times with nearest-neighbour pixels."""
    image = Image.fromarray(grid)
    if scale > 1:
        image = image.resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return path
