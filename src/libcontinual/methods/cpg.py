"""CPG — Compacting, Picking and Growing (Hung et al., NeurIPS 2019; code ivclab/CPG).

Schedule of CPG_cifar100_scratch_mul_1.5.sh: VGG16-BN, batch 32, SGD Nesterov, weight decay 4e-5 on the
task's own weights; per task: finetune 100 epochs (lr 1e-2, x0.1 at 50/80; masks Adam 5e-4, x0.2 at
50, 0 from 70), then gradual pruning stages of 20 epochs at lr 1e-3 to sparsity 0.1, 0.2, ... 0.9,
0.95 (Zhu-Gupta cubic ramp over the first 4 epochs, masks updated every 10 steps), then (tasks > 0) a
30-epoch retrain of masks (re-initialised, Adam 1e-4) and kept weights, kept only if it helps.

- ``before_task``: a head and BatchNorm set; hold out ``val_fraction`` of the task's training data.
- finetune: every free weight becomes the task's; earlier tasks' weights enter through a piggyback
  mask (picking, straight-through); their values never change (``optimizer_step`` masks gradients).
- end of finetune: below the task's goal on validation data and under the cap, grow (channels x
  sqrt of the parameter step, CPG's +0.5) and finetune again from the task's start.
- compacting: gradual pruning of the task's own weights; keep the largest sparsity whose validation
  accuracy meets the goal (or, at the cap below the goal, CPG's room-for-the-remaining-tasks rule).
- ``inference(task_id=t)``: task t's weights plus its picked earlier weights, its BatchNorm and head.

Goals: ``goals`` (one validation accuracy in % per task, e.g. an individually trained model's, or one
number for all); null = the task's own dense accuracy after finetuning (compact without loss; no growth).
Published (CIFAR-100 20 superclass tasks, task-IL average accuracy): 80.9. Measured: T5, seeds 1993–1995,
no goals (no growth): task-IL last 87.08 ± 0.05, avg. 82.83 ± 0.84, forgetting 0.0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.errors import ConfigError
from libcontinual.isolation.masks import FREE, check_sparsity, owner_id, prune_layer_, zhu_gupta_sparsity
from libcontinual.isolation.method import IsolationMethod
from libcontinual.isolation.parts import Stage
from libcontinual.isolation.picking import PickMasks
from libcontinual.registry import register_method

SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


@register_method("cpg")
class CPG(IsolationMethod):
    def __init__(
        self, backbone: nn.Module, feat_dim: int, num_class: int,
        finetune_epochs: float = 100, milestones: Sequence[float] = (0.5, 0.8),
        mask_lr: float = 5e-4, sparsities: Sequence[float] = SPARSITIES, prune_epochs: float = 20,
        prune_lr_factor: float = 0.1, ramp_epochs: float = 4, prune_every: int = 10,
        retrain_epochs: float = 30,
        retrain_mask_lr: float = 1e-4, goals: list[float] | float | None = None, val_fraction: float = 0.1,
        growth_step: float = 0.5, max_parameter_multiplier: float = 1.5, mask_init: float = 1e-2,
        threshold: float = 5e-3, weight_decay: float = 4e-5,
    ) -> None:  # fmt: skip
        super().__init__(backbone, feat_dim, num_class, weight_decay)
        for value in sparsities:
            check_sparsity(value, "method.kwargs.sparsities")
        if list(sparsities) != sorted(sparsities):
            raise ValueError(f"method.kwargs.sparsities must increase, got {list(sparsities)}")
        if max_parameter_multiplier < 1.0 or growth_step < 0:
            raise ValueError("max_parameter_multiplier must be >= 1 and growth_step >= 0")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        self.finetune_epochs, self.milestones, self.mask_lr = finetune_epochs, list(milestones), mask_lr
        self.sparsities, self.prune_epochs, self.prune_lr = list(sparsities), prune_epochs, prune_lr_factor
        self.ramp_fraction = min(1.0, ramp_epochs / prune_epochs) if prune_epochs else 1.0
        self.prune_every, self.retrain_epochs, self.retrain_mask_lr = (
            prune_every,
            retrain_epochs,
            retrain_mask_lr,
        )
        self.goals, self.val_fraction = goals, val_fraction
        self.growth_step, self.max_multiplier = growth_step, max_parameter_multiplier
        self.base_width = getattr(backbone, "width", 1.0)
        self.multiplier = 1.0
        self.picks = PickMasks(mask_init, threshold)
        self.task_state: dict[str, Any] = {}
        self._mask_optimizer: torch.optim.Adam | None = None
        self._pending_mask_state: dict[str, Any] | None = None
        self._reset_optimizer = False

    # ------------------------------------------------------------------ the schedule
    def stages(self, task: TaskInfo) -> list[Stage]:
        plan = [Stage("finetune", self.finetune_epochs, 1.0, self.milestones)]
        previous = 0.0
        for sparsity in self.sparsities:
            plan.append(
                Stage("prune", self.prune_epochs, self.prune_lr, info={"from": previous, "to": sparsity})
            )
            previous = sparsity
        if task.index > 0 and self.retrain_epochs > 0:
            plan.append(Stage("retrain", self.retrain_epochs, self.prune_lr))
        return plan

    def before_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        self._hold_out_validation(train_loader, test_loaders[-1])
        super().before_task(task, buffer, train_loader, test_loaders)
        self.task_state = {"records": {}, "chosen": None, "goal": self.goal_of(task.index)}

    def goal_of(self, task: int) -> float | None:
        if self.goals is None or isinstance(self.goals, (int, float)):
            return None if self.goals is None else float(self.goals)
        if task >= len(self.goals):
            raise ConfigError(
                f"Config key 'method.kwargs.goals' lists {len(self.goals)} goals; task {task} needs one."
            )
        return float(self.goals[task])

    def begin_stage(self, stage: Stage) -> None:
        task = self.task.index
        if stage.name == "finetune":
            for layer in range(len(self.owners)):
                self.owners[layer][self.owners[layer] == FREE] = owner_id(task)
            self.task_state["start"] = self.snapshot()
            if task > 0:
                self.picks.start(self.task_shapes[task], self.device)
        elif stage.name == "retrain":
            self.task_state["chosen"] = self.snapshot()
            self.picks.start(self.task_shapes[task], self.device)
        self._mask_optimizer, self._pending_mask_state = None, None

    def end_stage(self, stage: Stage) -> None:
        state, goal = self.task_state, self.task_state["goal"]
        if stage.name == "prune":
            self.prune_to(stage.info["to"])
        accuracy = self.validate()
        self.task_state["accuracy"] = accuracy
        if stage.name == "finetune":
            state["records"] = {"0.0": accuracy}
            state["dense"] = self.snapshot()
            if goal is None:
                state["goal"] = accuracy
            elif accuracy < goal and self.can_grow():
                self.restart_wider()
                self.plan.insert(Stage(**{**vars(stage), "info": {"regrown": True}}), self.step)
        elif stage.name == "prune":
            state["records"][str(stage.info["to"])] = accuracy
            below_goal_at_cap = state["records"]["0.0"] < state["goal"]
            if accuracy >= state["goal"] or (below_goal_at_cap and stage.info["to"] < self.room()):
                state["chosen"] = self.snapshot()
            if self._last_prune_stage():
                chosen = state["chosen"] or state["dense"]
                self.restore(chosen)
                state["chosen_accuracy"] = chosen["accuracy"]
        elif stage.name == "retrain" and accuracy <= state["chosen_accuracy"]:
            self.restore(state["chosen"])

    def _last_prune_stage(self) -> bool:
        rest = self.plan.stages[self.plan.index + 1 :]
        return not any(s.name == "prune" for s in rest)

    def chosen_sparsity(self) -> float:
        chosen = self.task_state["chosen"]
        return 0.0 if chosen is None else chosen["sparsity"]

    def room(self) -> float:
        """CPG at the cap below the goal: leave 1/(remaining tasks + 1) of the capacity for later tasks."""
        remaining = self.task.num_tasks - self.task.index - 1
        return 1.0 - round(1.0 / (remaining + 1), 1)

    def after_step(self) -> None:
        stage = self.plan.current
        if stage.name != "prune":
            return
        begin, end = self.plan.begin(self.plan.index), self.plan.bounds[self.plan.index]
        ramp_end = begin + round(self.ramp_fraction * (end - begin))
        if self.step <= ramp_end and ((self.step - begin) % self.prune_every == 0 or self.step == ramp_end):
            self.prune_to(
                zhu_gupta_sparsity(self.step, begin, ramp_end, stage.info["from"], stage.info["to"])
            )

    def prune_to(self, sparsity: float) -> None:
        for layer, weight in enumerate(self.weights()):
            prune_layer_(weight, self.owners[layer], self.task.index, sparsity)
        self.task_state["sparsity"] = sparsity

    # ------------------------------------------------------------------ growth
    def distributed_refusal(self) -> str | None:
        if self.goals is None or not self.can_grow():
            return None
        return (
            "CPG with goals grows the network inside a task, and that growth does not yet work under "
            "torchrun (DistributedDataParallel keeps the old shapes). Run it in one process, or leave "
            "method.kwargs.goals null (no growth)."
        )

    def can_grow(self) -> bool:
        return self.growth_step > 0 and self.multiplier + self.growth_step <= self.max_multiplier + 1e-9

    def restart_wider(self) -> None:
        """CPG's state 2: widen and finetune the task again from where it started."""
        if not self.can_grow():
            raise ConfigError(
                f"CPG cannot grow: the growth cap max_parameter_multiplier={self.max_multiplier} is reached "
                f"(the network has {self.multiplier} times its initial parameters)"
            )
        self.restore(self.task_state["start"])
        self.multiplier += self.growth_step
        self.grow(self.base_width * math.sqrt(self.multiplier))
        self.widen_current_task()
        for layer in range(len(self.owners)):
            self.owners[layer][self.owners[layer] == FREE] = owner_id(self.task.index)
        self.task_state["start"] = self.snapshot()
        if self.task.index > 0:
            self.picks.start(self.task_shapes[self.task.index], self.device)
        self._mask_optimizer, self._pending_mask_state, self._reset_optimizer = None, None, True

    # ------------------------------------------------------------------ weights and masks
    def old(self, task: int, layer: int, shape: Sequence[int]) -> Tensor:
        owners = self.owners[layer][tuple(slice(0, n) for n in shape)]
        return (owners != FREE) & (owners < owner_id(task))

    def training_weights(self) -> list[Tensor]:
        task, weights = self.task.index, []
        for layer, weight in enumerate(self.weights()):
            own = (self.owners[layer] == owner_id(task)).to(weight.dtype)
            if task == 0 or not len(self.picks.scores):
                weights.append(weight * own)
            else:
                old = self.old(task, layer, weight.shape).to(weight.dtype)
                weights.append(weight * (own + old * self.picks.binary(layer)))
        return weights

    def allowed(self, task: int, layer: int) -> Tensor:
        shape = self.task_shapes[task][layer]
        own = self.owners[layer][tuple(slice(0, n) for n in shape)] == owner_id(task)
        if task == 0:
            return own
        if task in self.picks.packed:
            picked = self.picks.mask(task, layer, self.device)
        else:  # the task being learned
            picked = self.picks.scores[layer].detach() > self.picks.threshold
        return own | (self.old(task, layer, shape) & picked)

    def zero_extra_grads(self) -> None:
        for score in self.picks.scores:
            score.grad = None

    def mask_extra_grads(self) -> None:
        for layer, score in enumerate(self.picks.scores):
            if score.grad is not None:
                score.grad.masked_fill_(~self.old(self.task.index, layer, score.shape), 0.0)

    def step_extra(self) -> None:
        if not len(self.picks.scores):
            return
        stage = self.plan.current
        lr = 0.0
        if stage.name == "finetune":
            progress = self.plan.progress(self.step)
            lr = self.mask_lr * (0.2 if progress >= 0.5 else 1.0) * (0.0 if progress >= 0.7 else 1.0)
        elif stage.name == "retrain":
            lr = self.retrain_mask_lr
        if self._mask_optimizer is None:
            self._mask_optimizer = torch.optim.Adam(list(self.picks.scores), lr=lr)
            if self._pending_mask_state is not None:
                self._mask_optimizer.load_state_dict(self._pending_mask_state)
                self._pending_mask_state = None
        for group in self._mask_optimizer.param_groups:
            group["lr"] = lr
        if lr > 0:
            self._mask_optimizer.step()

    def optimizer_step(self, loss: Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self._reset_optimizer:  # the task restarted on a wider network: fresh momentum, as CPG's rerun
            optimizer.state.clear()
            self._reset_optimizer = False
        super().optimizer_step(loss, optimizer)

    def finish_task(self, task: TaskInfo) -> None:
        if task.index > 0:
            self.picks.finish(task.index)
        self.task_state = {"records": self.task_state.get("records", {}), "sparsity": self.chosen_sparsity()}

    def mask_bytes(self, task: int) -> int:
        return self.picks.bytes_of(task)

    # ------------------------------------------------------------------ validation and snapshots
    def _hold_out_validation(self, train_loader: DeviceLoader, test_loader: DeviceLoader) -> None:
        """A class-balanced ``val_fraction`` of the task's training data (drawn from the seeded RNG)."""
        labels = train_loader.labels
        val = []
        for cls in labels.unique().tolist():
            members = (labels == cls).nonzero().squeeze(1).cpu()
            count = max(1, round(self.val_fraction * members.numel()))
            val.append(members[torch.randperm(members.numel())[:count]])
        val_index = torch.cat(val).sort().values
        keep = torch.ones(labels.shape[0], dtype=torch.bool)
        keep[val_index] = False
        self.val_data = (
            train_loader.images[val_index.to(labels.device)].cpu(),
            labels[val_index.to(labels.device)].cpu(),
        )
        train_loader.images = train_loader.images[keep.to(labels.device)]
        train_loader.labels = labels[keep.to(labels.device)]
        self._val_transform = test_loader.transform

    @torch.no_grad()
    def validate(self) -> float:
        images, labels = self.val_data
        loader = DeviceLoader(images, labels, 256, self._val_transform, device=self.device)
        was_training = self.training
        self.eval()
        correct = 0
        for batch in loader:
            pred, _ = self.inference(batch, self.task.index)
            correct += int((pred == batch["label"]).sum())
        self.train(was_training)
        return 100.0 * correct / max(1, loader.num_samples)

    def snapshot(self) -> dict[str, Any]:
        task = self.task.index
        return {
            "owners": [self.owners[i].detach().cpu().clone() for i in range(len(self.owners))],
            "weights": [
                torch.where(
                    self.owners[i] == owner_id(task), w.detach(), torch.zeros((), device=w.device)
                ).cpu()
                for i, w in enumerate(self.weights())
            ],
            "parts": {k: v.detach().cpu().clone() for k, v in self.parts[task].state_dict().items()},
            "head": {k: v.detach().cpu().clone() for k, v in self.heads[task].state_dict().items()},
            "scores": [s.detach().cpu().clone() for s in self.picks.scores],
            "sparsity": self.task_state.get("sparsity", 0.0),
            "accuracy": self.task_state.get("accuracy"),
        }

    @torch.no_grad()
    def restore(self, snapshot: dict[str, Any]) -> None:
        task = self.task.index
        for i, weight in enumerate(self.weights()):
            owners, values = snapshot["owners"][i].to(self.device), snapshot["weights"][i].to(self.device)
            block = tuple(slice(0, n) for n in owners.shape)
            mine = self.owners[i][block] == owner_id(task)
            weight[block] = torch.where(
                owners == owner_id(task), values, torch.where(mine, 0.0, weight[block])
            )
            self.owners[i][block] = owners
        self.parts[task].load_state_dict(snapshot["parts"])
        self.heads[task].load_state_dict(snapshot["head"])
        for score, saved in zip(self.picks.scores, snapshot["scores"], strict=False):
            score.copy_(saved)
        self.task_state["sparsity"] = snapshot["sparsity"]

    def get_extra_state(self) -> Any:
        state = super().get_extra_state()
        mask_state = (
            self._mask_optimizer.state_dict()
            if self._mask_optimizer is not None
            else self._pending_mask_state
        )
        state.update(
            cpg_task_state=self.task_state, multiplier=self.multiplier, mask_optimizer=mask_state,
            reset_optimizer=self._reset_optimizer, val_data=getattr(self, "val_data", None),
        )  # fmt: skip
        return state

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        self.task_state, self.multiplier = state["cpg_task_state"], state["multiplier"]
        self._mask_optimizer, self._pending_mask_state = None, state["mask_optimizer"]
        self._reset_optimizer, self.val_data = state["reset_optimizer"], state["val_data"]

    def resume_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        self._val_transform = test_loaders[-1].transform
