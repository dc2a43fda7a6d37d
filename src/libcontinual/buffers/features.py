"""Features of stored uint8 images, without augmentation and in eval mode (herding, class means, NME)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

FEATURE_BATCH_SIZE = 512


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    images: torch.Tensor,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = FEATURE_BATCH_SIZE,
) -> torch.Tensor:
    """``backbone.forward_features`` of uint8 ``images`` (N, C, H, W) in batches: (N, num_features) float.

    ``normalize`` maps uint8 to the network's input (a ``Normalize``, never an augmentation). BatchNorm uses
    its running statistics (eval mode); the backbone's training mode is restored afterwards.
    """
    was_training = backbone.training
    backbone.eval()
    try:
        parts = [
            backbone.forward_features(normalize(images[start : start + batch_size]))
            for start in range(0, images.shape[0], batch_size)
        ]
    finally:
        backbone.train(was_training)
    if not parts:
        return torch.zeros(0, backbone.num_features, device=images.device)
    return torch.cat(parts)
