"""Fully connected backbone: GEM's MNIST MLP 784-100-100 (-10 once the head has 10 outputs)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from libcontinual.backbones.base import Backbone
from libcontinual.errors import ConfigError
from libcontinual.registry import register_backbone


class MLP(Backbone):
    """Flatten, then Linear-ReLU per hidden size; ``num_features = hidden_sizes[-1]``.

    ``input_size`` is the number of values of one image per channel (784 for 28x28), so the first layer
    takes ``in_channels * input_size`` inputs.
    """

    def __init__(
        self, in_channels: int = 1, input_size: int = 784, hidden_sizes: Sequence[int] = (100, 100)
    ) -> None:
        hidden_sizes = [int(h) for h in hidden_sizes]
        if not hidden_sizes or min(hidden_sizes) <= 0:
            raise ConfigError(f"mlp hidden_sizes must be non-empty and positive, got {hidden_sizes}")
        if in_channels <= 0 or input_size <= 0:
            raise ConfigError(
                f"mlp in_channels and input_size must be positive, got {in_channels} and {input_size}"
            )
        super().__init__(num_features=hidden_sizes[-1])
        self.in_features = in_channels * input_size
        layers: list[nn.Module] = []
        width = self.in_features
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        self.body = nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"mlp expects in_channels*input_size = {self.in_features} values per image, not {x.shape[1]}"
            )
        return self.body(x)


@register_backbone("mlp")
def mlp(in_channels: int = 1, input_size: int = 784, hidden_sizes: Sequence[int] = (100, 100)) -> MLP:
    """GEM's MNIST MLP with ``len(hidden_sizes)`` hidden layers (default 784-100-100)."""
    return MLP(in_channels=in_channels, input_size=input_size, hidden_sizes=hidden_sizes)
