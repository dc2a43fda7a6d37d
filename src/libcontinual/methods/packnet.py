"""PackNet (Mallya & Lazebnik, CVPR 2018): pack tasks into one network by iterative pruning.

Settings of CPG's PackNet baseline (ivclab/CPG experiment1/PackNet_cifar100.sh): VGG16-BN, SGD
Nesterov, train 100 epochs at lr 1e-2 (x0.1 at 50 and 80), one-shot magnitude pruning of 60 % of the
task's capacity per layer, retrain 30 epochs at lr 1e-3, weight decay 4e-5 on the task's own weights.

- ``before_task``: a head and BatchNorm set for the task; every free weight becomes the task's.
- ``observe``: cross-entropy of the task's head on weights owned by tasks <= t.
- ``optimizer_step``: gradients of weights owned by earlier tasks are zeroed; free weights stay 0.
- stage ``train`` ends: prune the task's weights per layer to ``prune_ratio`` (they become free).
- stage ``retrain``: train the kept weights; ``after_task`` fixes them for good.
- ``inference(task_id=t)``: weights owned by tasks 1..t, task t's BatchNorm and head.

Published (CPG paper, CIFAR-100 20 superclass tasks, task-IL average accuracy): 67.5.
Measured: T5, seeds 1993–1995: task-IL last 90.14 ± 0.11, avg. 87.96 ± 0.12, forgetting 0.0.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from libcontinual.data.scenario import TaskInfo
from libcontinual.isolation.masks import FREE, check_sparsity, owner_id, prune_layer_
from libcontinual.isolation.method import IsolationMethod
from libcontinual.isolation.parts import Stage
from libcontinual.registry import register_method


@register_method("packnet")
class PackNet(IsolationMethod):
    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        num_class: int,
        prune_ratio: float = 0.6,
        train_epochs: float = 100,
        retrain_epochs: float = 30,
        retrain_lr_factor: float = 0.1,
        milestones: tuple[float, ...] = (0.5, 0.8),
        weight_decay: float = 4e-5,
    ) -> None:
        super().__init__(backbone, feat_dim, num_class, weight_decay)
        check_sparsity(prune_ratio, "method.kwargs.prune_ratio")
        if train_epochs <= 0 or retrain_epochs < 0:
            raise ValueError("train_epochs must be positive and retrain_epochs not negative")
        self.prune_ratio = prune_ratio
        self.train_epochs, self.retrain_epochs = train_epochs, retrain_epochs
        self.retrain_lr_factor, self.milestones = retrain_lr_factor, list(milestones)

    def stages(self, task: TaskInfo) -> list[Stage]:
        return [
            Stage("train", self.train_epochs, 1.0, self.milestones),
            Stage("retrain", self.retrain_epochs, self.retrain_lr_factor),
        ]

    def before_task(self, task: TaskInfo, *args: Any) -> None:
        super().before_task(task, *args)
        for layer in range(len(self.owners)):
            self.owners[layer][self.owners[layer] == FREE] = owner_id(task.index)

    def end_stage(self, stage: Stage) -> None:
        if stage.name == "train":
            for layer, weight in enumerate(self.weights()):
                prune_layer_(weight, self.owners[layer], self.task.index, self.prune_ratio)

    def allowed(self, task: int, layer: int) -> Tensor:
        owners = self.owners[layer][tuple(slice(0, n) for n in self.task_shapes[task][layer])]
        return (owners != FREE) & (owners <= owner_id(task))
