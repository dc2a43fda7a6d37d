"""Joint training, the upper bound: every task trains on all data seen so far.

before_task: keep this task's training data (references, no copy), then merge every earlier
task's training data into this task's loader.
Everything else is Finetune.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.methods.base import Method
from libcontinual.registry import register_method


@register_method("joint")
class Joint(Method):
    def __init__(self, backbone: nn.Module, feat_dim: int, num_class: int) -> None:
        super().__init__(backbone, feat_dim, num_class)
        self.past_data: list[tuple[torch.Tensor, torch.Tensor]] = []

    def before_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        super().before_task(task, buffer, train_loader, test_loaders)
        current = (train_loader.images, train_loader.labels)
        for images, labels in self.past_data:
            train_loader.extend(images, labels)
        self.past_data.append(current)

    def get_extra_state(self) -> Any:
        return {**super().get_extra_state(), "past_data": [(x.cpu(), y.cpu()) for x, y in self.past_data]}

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        self.past_data = [(x.to(self.device), y.to(self.device)) for x, y in state["past_data"]]
