"""Real-valued pick masks (Piggyback, CPG's picking step) and their packed one-bit copies.

While task t trains, ``scores`` holds one real-valued mask per masked layer (init ``init``); the
forward pass uses ``binarize(scores, threshold)`` with a straight-through gradient. When the task
ends the binary masks are packed, one bit per weight, and the real values are dropped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from libcontinual.isolation.masks import binarize, pack_bits, unpack_bits


class PickMasks(nn.Module):
    def __init__(self, init: float = 1e-2, threshold: float = 5e-3) -> None:
        super().__init__()
        if not init > threshold:
            raise ValueError(
                f"mask init {init} must exceed the threshold {threshold}, or no weight is picked at first"
            )
        self.init, self.threshold = init, threshold
        self.scores = nn.ParameterList()
        self.packed: dict[int, list[Tensor]] = {}
        self.shapes: dict[int, list[tuple[int, ...]]] = {}
        self._cache: dict[int, list[Tensor]] = {}

    def start(self, shapes: list[tuple[int, ...]], device: torch.device) -> None:
        """Fresh real-valued masks (all picked) for the task that begins."""
        self.scores = nn.ParameterList(
            [nn.Parameter(torch.full(shape, self.init, device=device)) for shape in shapes]
        )

    def binary(self, layer: int) -> Tensor:
        """The current task's 0/1 mask of ``layer`` (straight-through gradient to the scores)."""
        return binarize(self.scores[layer], self.threshold)

    def finish(self, task: int) -> None:
        """Pack the current task's binary masks and drop the real-valued ones."""
        self.packed[task] = [pack_bits(s.detach() > self.threshold) for s in self.scores]
        self.shapes[task] = [tuple(s.shape) for s in self.scores]
        self.scores = nn.ParameterList()
        self._cache.pop(task, None)

    def mask(self, task: int, layer: int, device: torch.device) -> Tensor:
        """Task ``task``'s stored binary mask of ``layer`` as bool (unpacked once, then cached)."""
        if task not in self._cache or self._cache[task][0].device != device:
            self._cache[task] = [
                unpack_bits(p.to(device), shape)
                for p, shape in zip(self.packed[task], self.shapes[task], strict=True)
            ]
        return self._cache[task][layer]

    def bytes_of(self, task: int) -> int:
        return sum(p.numel() for p in self.packed.get(task, []))

    def get_extra_state(self) -> Any:
        return {
            "packed": self.packed,
            "shapes": self.shapes,
            "score_shapes": [tuple(s.shape) for s in self.scores],
        }

    def set_extra_state(self, state: Any) -> None:
        self.packed = {int(k): list(v) for k, v in state["packed"].items()}
        self.shapes = {int(k): [tuple(s) for s in v] for k, v in state["shapes"].items()}
        self._cache.clear()

    def _load_from_state_dict(self, state_dict, prefix, *args: Any) -> None:  # type: ignore[no-untyped-def]
        """Recreate the current task's real-valued masks (a checkpoint inside a task) before loading."""
        extra = state_dict.get(f"{prefix}_extra_state")
        if extra is not None and len(extra["score_shapes"]) != len(self.scores):
            self.start([tuple(s) for s in extra["score_shapes"]], torch.device("cpu"))
        super()._load_from_state_dict(state_dict, prefix, *args)
