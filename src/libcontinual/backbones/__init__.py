"""Backbones (timm-style contract) and growable heads; importing this package registers every backbone."""

from libcontinual.backbones import mlp, resnet18, resnet_cifar, vgg  # noqa: F401  (registers the backbones)
from libcontinual.backbones.base import Backbone, build_backbone
from libcontinual.backbones.heads import CosineLinear, IncrementalHead, IncrementalLinear

__all__ = [
    "Backbone",
    "CosineLinear",
    "IncrementalHead",
    "IncrementalLinear",
    "build_backbone",
]
