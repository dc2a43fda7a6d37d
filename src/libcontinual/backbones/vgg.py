"""VGG16-BN for 32x32 inputs (CPG's ``custom_vgg_cifar100``), with a width multiplier that can grow.

13 3x3 convolutions (64, 64, M, 128, 128, M, 256 x3, M, 512 x3, M, 512 x3, M; no bias) each followed by
BatchNorm and ReLU, five 2x2 max-pools (32x32 -> 1x1), then two fully connected layers of 4096 with
ReLU (with bias, no dropout, as the CPG code for CIFAR); every width is ``int(v * width)``. Weights
start as in the CPG code: Kaiming-normal (fan_out) convolutions, N(0, 0.01) linear weights, zero
biases, identity BatchNorm. ``grow_to`` widens every layer in place: old weights keep their values in
the top-left block of each tensor (the parameter objects stay the same), new entries are initialised
as above, so a computation that slices the old block (parameter isolation methods do) is unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from libcontinual.backbones.base import Backbone
from libcontinual.errors import ConfigError
from libcontinual.registry import register_backbone

VGG16_CHANNELS: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip
FC_FEATURES = 4096


class VGG16BN(Backbone):
    """``features`` (conv/BN/ReLU/pool) -> flatten -> ``classifier`` (two Linear+ReLU) -> ``head``."""

    def __init__(
        self, in_channels: int = 3, width: float = 1.0, fc_features: int = FC_FEATURES, input_size: int = 32
    ) -> None:
        if width <= 0 or fc_features < 1:
            raise ConfigError(f"vgg16_bn needs width > 0 and fc_features >= 1, got {width}, {fc_features}")
        if input_size < 32 or input_size % 32:
            raise ConfigError(
                f"vgg16_bn: input_size must be a multiple of 32 (5 max-pools), got {input_size}"
            )
        self.input_size = input_size
        self.spatial = (
            input_size // 32
        ) ** 2  # positions left after the 5 pools, flattened with the channels
        self.width = float(width)
        self.base_fc_features = fc_features
        channels = self.channels_at(width)
        super().__init__(self.features_at(width))
        layers: list[nn.Module] = []
        previous = in_channels
        for out in channels:
            if out == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            layers += [nn.Conv2d(previous, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            previous = out
        self.features = nn.Sequential(*layers)
        features = self.num_features
        self.classifier = nn.Sequential(
            nn.Linear(previous * self.spatial, features), nn.ReLU(), nn.Linear(features, features), nn.ReLU()
        )
        for module in self.modules():
            _initialise(module)

    @staticmethod
    def channels_at(width: float) -> list[int | str]:
        return [v if v == "M" else max(1, int(v * width)) for v in VGG16_CHANNELS]  # type: ignore[operator]

    def features_at(self, width: float) -> int:
        return max(1, int(self.base_fc_features * width))

    def forward_features(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            raise ValueError(
                f"vgg16_bn takes {self.input_size}x{self.input_size} images (backbone.kwargs.input_size), "
                f"got {tuple(x.shape[-2:])}"
            )
        return self.classifier(torch.flatten(self.features(x), 1))

    @torch.no_grad()
    def grow_to(self, width: float) -> None:
        """Widen every conv, BatchNorm and linear layer to ``width`` (never narrower)."""
        if width < self.width:
            raise ValueError(f"vgg16_bn cannot shrink from width {self.width} to {width}")
        convs = [m for m in self.features if isinstance(m, nn.Conv2d)]
        norms = [m for m in self.features if isinstance(m, nn.BatchNorm2d)]
        targets = [c for c in self.channels_at(width) if c != "M"]
        previous = convs[0].in_channels
        for conv, norm, out in zip(convs, norms, targets, strict=True):
            _widen(conv.weight, (out, previous, 3, 3), lambda t: nn.init.kaiming_normal_(t, mode="fan_out"))
            conv.in_channels, conv.out_channels = previous, out
            _widen_norm(norm, out)
            previous = out
        features = self.features_at(width)
        first, second = self.classifier[0], self.classifier[2]
        for linear, shape in ((first, (features, previous * self.spatial)), (second, (features, features))):
            _widen(linear.weight, shape, lambda t: nn.init.normal_(t, 0.0, 0.01))
            _widen(linear.bias, shape[:1], nn.init.zeros_)
            linear.out_features, linear.in_features = shape
        for chunk in self.head.weights:
            _widen(chunk, (chunk.shape[0], features), nn.init.zeros_)
        self.head.in_features = features
        self.num_features = features
        self.width = float(width)

    def get_extra_state(self) -> dict:
        return {"width": self.width}

    def set_extra_state(self, state: dict) -> None:
        if state["width"] != self.width:
            self.grow_to(state["width"])

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):  # type: ignore[no-untyped-def]
        """A grown model's checkpoint loads into a freshly built one: widen first, then copy."""
        extra = state_dict.get(f"{prefix}_extra_state")
        if extra is not None and extra["width"] != self.width:
            self.grow_to(extra["width"])
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)


def _initialise(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.01)
        nn.init.zeros_(module.bias)


def _widen(parameter: Tensor, shape: tuple[int, ...], init: object) -> None:
    """Replace ``parameter``'s data by a freshly initialised tensor of ``shape`` holding the old block."""
    old = parameter.data
    if tuple(old.shape) == tuple(shape):
        return
    new = old.new_empty(shape)
    init(new)  # type: ignore[operator]
    new[tuple(slice(0, n) for n in old.shape)] = old
    parameter.data = new
    parameter.grad = None


def _widen_norm(norm: nn.BatchNorm2d, channels: int) -> None:
    if norm.num_features == channels:
        return
    _widen(norm.weight, (channels,), nn.init.ones_)
    _widen(norm.bias, (channels,), nn.init.zeros_)
    for name, fill in (("running_mean", 0.0), ("running_var", 1.0)):
        old = getattr(norm, name)
        new = old.new_full((channels,), fill)
        new[: old.numel()] = old
        setattr(norm, name, new)
    norm.num_features = channels


@register_backbone("vgg16_bn")
def vgg16_bn(
    in_channels: int = 3, width: float = 1.0, fc_features: int = FC_FEATURES, input_size: int = 32
) -> VGG16BN:
    """CIFAR VGG16-BN of the CPG code; ``width`` multiplies every layer (0.25 = a quarter of the channels).

    ``input_size`` (a multiple of 32) sets the flattened features: 512·width·(input_size/32)²."""
    if not math.isfinite(width):
        raise ConfigError(f"vgg16_bn: width must be a finite number, got {width}")
    return VGG16BN(in_channels, width, fc_features, input_size)
