"""Growable classification heads: linear and cosine (LUCIR).

A head stores its weights as one chunk per expansion (``weights[i]`` has shape (n_i, in_features)), so
growing it never reallocates old parameters: optimizer references stay valid, old chunks can be frozen
or given their own learning rate, and WA/BiC/LUCIR address the newest chunk as ``weights[-1]``.

New class weights are drawn by ``init`` (``HEAD_INITS``): ``kaiming_uniform`` (the default, PyCIL's
``SimpleLinear``: kaiming-uniform with gain 1, i.e. U(-sqrt(3 / fan_in), sqrt(3 / fan_in)), bias 0) or
``torch_default`` (``nn.Linear``'s: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias). Either is drawn
afresh for the new classes of every task.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HEAD_INITS = ("kaiming_uniform", "torch_default")


class IncrementalHead(nn.Module):
    """Shared chunk bookkeeping: ``expand``, ``out_features``, ``chunk_sizes``, ``weight`` and resume.

    A state dict saved after several expansions loads into a freshly built head with 0 outputs: loading
    recreates the chunks from the shapes in the state dict (keeping the existing chunks that already match,
    so a head loaded with its own state keeps its parameter objects).
    """

    def __init__(self, in_features: int, bias: bool, init: str = "kaiming_uniform") -> None:
        super().__init__()
        if in_features <= 0:
            raise ValueError(f"in_features must be positive, got {in_features}")
        if init not in HEAD_INITS:
            raise ValueError(f"head init must be one of {HEAD_INITS}, got {init!r}")
        self.in_features = in_features
        self.init = init
        self.weights = nn.ParameterList()
        self.biases: nn.ParameterList | None = nn.ParameterList() if bias else None
        # Follows .to(device/dtype) so that new chunks are created where the head lives.
        self.register_buffer("_anchor", torch.empty(0), persistent=False)

    @property
    def out_features(self) -> int:
        return sum(self.chunk_sizes)

    @property
    def chunk_sizes(self) -> list[int]:
        return [w.shape[0] for w in self.weights]

    @property
    def weight(self) -> Tensor:
        """All class weights, (out_features, in_features); a concatenated copy for reading."""
        if not self.weights:
            return self._anchor.new_empty(0, self.in_features)
        return torch.cat(list(self.weights), dim=0)

    def expand(self, total_classes: int) -> None:
        """Append one chunk for classes ``out_features .. total_classes - 1`` (no-op if already there)."""
        n_new = total_classes - self.out_features
        if n_new < 0:
            raise ValueError(f"cannot shrink a head from {self.out_features} to {total_classes} outputs")
        if n_new == 0:
            return
        weight = self._anchor.new_empty(n_new, self.in_features)
        bias = self._anchor.new_zeros(n_new)
        if self.init == "kaiming_uniform":
            nn.init.kaiming_uniform_(weight, nonlinearity="linear")
        else:
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            bound = 1.0 / math.sqrt(self.in_features)
            bias.uniform_(-bound, bound)
        self.weights.append(nn.Parameter(weight))
        if self.biases is not None:
            self.biases.append(nn.Parameter(bias))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        saved_sizes = []
        while (key := f"{prefix}weights.{len(saved_sizes)}") in state_dict:
            saved_sizes.append(int(state_dict[key].shape[0]))
        self._match_chunks(saved_sizes)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _match_chunks(self, sizes: list[int]) -> None:
        """Make the chunk layout equal ``sizes``; the children's own loading then copies the values."""
        keep = 0
        while keep < min(len(sizes), len(self.weights)) and self.weights[keep].shape[0] == sizes[keep]:
            keep += 1
        if keep == len(sizes) == len(self.weights):
            return
        self.weights = nn.ParameterList(
            [*list(self.weights)[:keep], *(self._zeros(n, self.in_features) for n in sizes[keep:])]
        )
        if self.biases is not None:
            self.biases = nn.ParameterList(
                [*list(self.biases)[:keep], *(self._zeros(n) for n in sizes[keep:])]
            )

    def _zeros(self, *shape: int) -> nn.Parameter:
        return nn.Parameter(self._anchor.new_zeros(shape))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, chunk_sizes={self.chunk_sizes}"


class IncrementalLinear(IncrementalHead):
    """``x @ W.T + b`` over all chunks; starts with ``out_features`` outputs (0 by default).

    Each chunk's logits are computed by their own matmul, so growing the head leaves the old logits
    bit-for-bit unchanged.
    """

    def __init__(
        self, in_features: int, out_features: int = 0, bias: bool = True, init: str = "kaiming_uniform"
    ) -> None:
        super().__init__(in_features, bias, init)
        self.expand(out_features)

    @property
    def bias(self) -> Tensor | None:
        """All class biases, (out_features,); a concatenated copy for reading."""
        if self.biases is None:
            return None
        if not self.biases:
            return self._anchor.new_empty(0)
        return torch.cat(list(self.biases))

    def forward(self, x: Tensor) -> Tensor:
        if not self.weights:
            return x.new_zeros(*x.shape[:-1], 0)
        biases = list(self.biases) if self.biases is not None else [None] * len(self.weights)
        return torch.cat([F.linear(x, w, b) for w, b in zip(self.weights, biases, strict=True)], dim=-1)


class CosineLinear(IncrementalHead):
    """LUCIR's classifier: logits = σ·cos(x, w_c), so every |logit| ≤ |σ|.

    ``sigma`` is a learnable scalar when ``learnable_scale`` (LUCIR: init 1), otherwise a fixed buffer;
    either way it is saved in the state dict. No bias.
    """

    def __init__(
        self, in_features: int, out_features: int = 0, learnable_scale: bool = True, init_scale: float = 1.0
    ) -> None:
        super().__init__(in_features, bias=False)
        sigma = torch.tensor(float(init_scale))
        if learnable_scale:
            self.sigma = nn.Parameter(sigma)
        else:
            self.register_buffer("sigma", sigma)
        self.expand(out_features)

    def forward(self, x: Tensor) -> Tensor:
        if not self.weights:
            return x.new_zeros(*x.shape[:-1], 0)
        x = F.normalize(x, dim=-1)
        cosine = torch.cat([F.linear(x, F.normalize(w, dim=-1)) for w in self.weights], dim=-1)
        return self.sigma * cosine
