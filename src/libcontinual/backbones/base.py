"""The backbone contract (timm style) and ``build_backbone``.

A backbone maps images to pooled features (``forward_features``) and features to logits
(``forward_head``) through a growable ``head``; methods grow the head with ``head.expand`` or swap its
type with ``replace_head``. There is no string-switched ``forward(mode=...)``.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any

from torch import Tensor, nn

from libcontinual.backbones.heads import HEAD_INITS, IncrementalLinear
from libcontinual.errors import ConfigError
from libcontinual.registry import BACKBONES, nearest


class Backbone(nn.Module, ABC):
    """Features of size ``num_features`` plus a head (an ``IncrementalLinear`` with 0 outputs at first)."""

    num_features: int
    head: nn.Module

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features
        self.head = IncrementalLinear(num_features)

    @abstractmethod
    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled, flattened features, (B, num_features)."""

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def replace_head(self, head: nn.Module) -> None:
        """Install another head (e.g. a ``CosineLinear`` for LUCIR); it must take ``num_features`` inputs."""
        in_features = getattr(head, "in_features", self.num_features)
        if in_features != self.num_features:
            raise ValueError(f"head takes {in_features} features, the backbone gives {self.num_features}")
        self.head = head


def init_conv_bn_(module: nn.Module) -> None:
    """Kaiming-normal conv weights (fan_out, ReLU) and identity BatchNorm, as torchvision's ResNets."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# backbone.kwargs keys that build_backbone takes itself, for every backbone, besides its constructor's.
COMMON_BACKBONE_KWARGS = ("head_init",)


def build_backbone(
    name: str, in_channels: int = 3, head_init: str = "kaiming_uniform", **kwargs: Any
) -> Backbone:
    """Build the backbone registered as ``name``; unknown names or arguments raise ConfigError.

    ``head_init`` (a ``backbone.kwargs`` key of every backbone) draws the linear head's new class weights:
    ``kaiming_uniform`` (PyCIL) or ``torch_default`` (``nn.Linear``); see ``backbones.heads``.
    """
    if head_init not in HEAD_INITS:
        raise ConfigError(
            f"Config key 'backbone.kwargs.head_init' is {head_init!r}; valid values: {', '.join(HEAD_INITS)}."
        )
    constructor = BACKBONES.get(name)
    valid = [p for p in inspect.signature(constructor).parameters if p != "in_channels"]
    valid += COMMON_BACKBONE_KWARGS
    for key in kwargs:
        if key not in valid:
            hint = nearest(key, valid)
            suggestion = f" Did you mean {hint!r}?" if hint else ""
            raise ConfigError(
                f"Backbone {name!r} has no argument {key!r}.{suggestion} Valid arguments: {', '.join(valid)}."
            )
    backbone = constructor(in_channels=in_channels, **kwargs)
    if isinstance(backbone.head, IncrementalLinear):
        backbone.head.init = head_init
    return backbone
