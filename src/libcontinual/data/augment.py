"""Batched augmentation on the training device: a whole uint8 batch at once, no per-image Python.

Matches LibContinual's CIFAR training transform (RandomCrop(32, padding=4) with zero fill,
RandomHorizontalFlip, ColorJitter(brightness=63/255), ToTensor, Normalize). The random draws are
made first (``sample``) and applied second (``apply``), so tests can feed the same draws to a
per-image reference implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class AugmentDraws:
    """The random choices for one batch."""

    crop_top: torch.Tensor  # (B,) int64 in [0, 2 * padding]
    crop_left: torch.Tensor  # (B,) int64 in [0, 2 * padding]
    flip: torch.Tensor  # (B,) bool
    brightness: torch.Tensor  # (B,) float factors
    contrast: torch.Tensor  # (B,) float factors


class Normalize:
    """uint8 (B, C, H, W) -> float32, scaled to [0, 1] and normalised per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self._cache: dict[tuple[torch.device, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def _stats(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        channels = images.shape[1]
        key = (images.device, channels)
        if key not in self._cache:
            if len(self.mean) not in (1, channels):
                raise ValueError(f"normalisation has {len(self.mean)} channels, images have {channels}")
            mean = torch.tensor(self.mean, device=images.device).expand(channels).reshape(1, -1, 1, 1)
            std = torch.tensor(self.std, device=images.device).expand(channels).reshape(1, -1, 1, 1)
            self._cache[key] = (mean.contiguous(), std.contiguous())
        return self._cache[key]

    def scale(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().div_(255.0)

    def normalize(self, floats: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(floats)
        return floats.sub_(mean).div_(std)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.normalize(self.scale(images))


class BatchAugment(Normalize):
    """Random crop with zero padding, horizontal flip, brightness and contrast jitter, normalisation."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        crop_padding: int = 4,
        horizontal_flip: bool = True,
        brightness: float = 63 / 255,
        contrast: float = 0.0,
    ) -> None:
        super().__init__(mean, std)
        self.crop_padding = crop_padding
        self.horizontal_flip = horizontal_flip
        self.brightness = brightness
        self.contrast = contrast

    def sample(self, batch: int, generator: torch.Generator | None, device: torch.device) -> AugmentDraws:
        span = 2 * self.crop_padding + 1
        ones = torch.ones(batch, device=device)
        return AugmentDraws(
            crop_top=torch.randint(span, (batch,), generator=generator, device=device),
            crop_left=torch.randint(span, (batch,), generator=generator, device=device),
            flip=torch.rand(batch, generator=generator, device=device)
            < (0.5 if self.horizontal_flip else 0.0),
            brightness=_factors(self.brightness, batch, generator, device) if self.brightness else ones,
            contrast=_factors(self.contrast, batch, generator, device) if self.contrast else ones,
        )

    def apply(self, images: torch.Tensor, draws: AugmentDraws) -> torch.Tensor:
        """Apply ``draws`` to a uint8 (B, C, H, W) batch; returns normalised float32."""
        if self.crop_padding:
            images = _random_crop(images, draws.crop_top, draws.crop_left, self.crop_padding)
        if self.horizontal_flip:
            images = torch.where(draws.flip.view(-1, 1, 1, 1), images.flip(3), images)
        floats = self.scale(images)
        if self.brightness:
            floats = floats.mul_(draws.brightness.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
        if self.contrast:
            grey = _grey_mean(floats)
            factor = draws.contrast.view(-1, 1, 1, 1)
            floats = floats.mul_(factor).add_(grey * (1 - factor)).clamp_(0.0, 1.0)
        return self.normalize(floats)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.apply(images, self.sample(images.shape[0], generator, images.device))


def _factors(
    strength: float, batch: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """Uniform factors in [max(0, 1 - s), 1 + s] (torchvision's ColorJitter range)."""
    low, high = max(0.0, 1.0 - strength), 1.0 + strength
    return torch.rand(batch, generator=generator, device=device).mul_(high - low).add_(low)


def _random_crop(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop each image back to its size at its own offset: one gather."""
    batch, channels, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    rows = (top.view(-1, 1) + torch.arange(height, device=images.device)).view(batch, 1, height, 1)
    cols = (left.view(-1, 1) + torch.arange(width, device=images.device)).view(batch, 1, 1, width)
    padded_width = width + 2 * padding
    flat_index = (rows * padded_width + cols).expand(batch, channels, height, width)
    return padded.flatten(2).gather(2, flat_index.flatten(2)).view(batch, channels, height, width)


def _grey_mean(floats: torch.Tensor) -> torch.Tensor:
    """Per-image mean of the ITU-R 601 grey image (torchvision's contrast reference)."""
    if floats.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], device=floats.device).view(1, 3, 1, 1)
        grey = (floats * weights).sum(dim=1, keepdim=True)
    else:
        grey = floats
    return grey.mean(dim=(1, 2, 3), keepdim=True)
