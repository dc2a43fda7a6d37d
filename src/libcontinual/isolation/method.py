"""The base of parameter-isolation methods (PackNet, Piggyback, CPG): ownership, per-task parts, staging.

Every conv/linear weight of the backbone (its ``head`` excepted) has an owner map (``masks.py``). Task
t has its own head, its own ``TaskParts`` (BatchNorm and biases) and the layer shapes it was learned
at; its forward pass runs the backbone through ``torch.func.functional_call`` with weights masked to
what task t may use, sliced to its shapes. Nothing a later task does reaches that computation: the
weights it uses are never updated again (gradients masked in ``optimizer_step``, weight decay only on
the task's own weights), its parts are never trained again, and growing the network adds entries
outside its slice. So earlier tasks' logits stay bit-identical.

A subclass defines ``stages`` (the task's schedule, scaled to the configured epochs), ``end_stage``
(what happens when a stage ends: prune, grow, pick), ``allowed(task, layer)`` (the weights task t
uses at test time) and, for real-valued masks, ``training_weights``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.errors import ConfigError
from libcontinual.isolation.masks import FREE, mask_gradient_, owner_id, task_parameter_count
from libcontinual.isolation.parts import ShapeMatching, Stage, StagePlan, TaskParts
from libcontinual.methods.base import Batch, Method

logger = logging.getLogger(__name__)


class OwnerMaps(ShapeMatching):
    """uint8 owner maps ``layer0 .. layerN``, one per masked weight (0 = free)."""

    def __init__(self, shapes: Sequence[torch.Size]) -> None:
        super().__init__()
        for index, shape in enumerate(shapes):
            self.register_buffer(f"layer{index}", torch.zeros(shape, dtype=torch.uint8))

    def __getitem__(self, index: int) -> Tensor:
        return getattr(self, f"layer{index}")

    def __len__(self) -> int:
        return len(self._buffers)

    @torch.no_grad()
    def widen_to(self, shapes: Sequence[torch.Size]) -> None:
        for index, shape in enumerate(shapes):
            old = self[index]
            if old.shape != shape:
                new = old.new_zeros(shape)
                new[tuple(slice(0, n) for n in old.shape)] = old
                self._buffers[f"layer{index}"] = new


class _Features(nn.Module):
    """``forward`` = the backbone's ``forward_features``, so ``functional_call`` can reach it."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone.forward_features(x)


class IsolationMethod(Method):
    """Multi-head, per-task BatchNorm, owner maps and a staged schedule per task."""

    task_aware_inference = True

    def __init__(self, backbone: nn.Module, feat_dim: int, num_class: int, weight_decay: float = 0.0) -> None:
        super().__init__(backbone, feat_dim, num_class)
        if weight_decay < 0:
            raise ValueError(f"weight_decay must not be negative, got {weight_decay}")
        self.weight_decay = weight_decay
        self.layer_names = [
            name
            for name, module in backbone.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear)) and not name.startswith("head")
        ]
        if not self.layer_names:
            raise ValueError(f"{type(backbone).__name__} has no conv or linear layer to isolate")
        masked = {f"{name}.weight" for name in self.layer_names}
        self._part_parameters = [
            n for n, _ in backbone.named_parameters() if n not in masked and not n.startswith("head.")
        ]
        self._part_buffers = [n for n, _ in backbone.named_buffers() if not n.startswith("head.")]
        self.owners = OwnerMaps([w.shape for w in self.weights()])
        self.parts = nn.ModuleList()
        self.heads = nn.ModuleList()
        self.task_shapes: list[list[tuple[int, ...]]] = []
        self.plan: StagePlan | None = None
        self.step = 0
        self.batches_per_epoch = 1
        self.growth_events: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ structure
    def weights(self) -> list[nn.Parameter]:
        modules = dict(self.backbone.named_modules())
        return [modules[name].weight for name in self.layer_names]

    def reference_parts(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        parameters = dict(self.backbone.named_parameters())
        buffers = dict(self.backbone.named_buffers())
        return {n: parameters[n] for n in self._part_parameters}, {n: buffers[n] for n in self._part_buffers}

    def add_task_parts(self, task: TaskInfo) -> None:
        """A head and BatchNorm set for ``task`` at the current width; BN starts from the previous task's."""
        parameters, buffers = self.reference_parts()
        parts = TaskParts(parameters, buffers)
        if len(self.parts):
            parts.copy_block_from(self.parts[-1])
        self.parts.append(parts.to(self.device))
        head = nn.Linear(self.backbone.num_features, len(task.classes)).to(self.device)
        nn.init.normal_(head.weight, 0.0, 0.01)
        nn.init.zeros_(head.bias)
        self.heads.append(head)
        self.task_shapes.append([tuple(w.shape) for w in self.weights()])

    # ------------------------------------------------------------------ forward passes
    def allowed(self, task: int, layer: int) -> Tensor:
        """Bool mask, at task ``task``'s shape, of the weights that task uses at test time."""
        raise NotImplementedError

    def inference_weights(self, task: int) -> list[Tensor]:
        weights = []
        for layer, weight in enumerate(self.weights()):
            sliced = weight[tuple(slice(0, n) for n in self.task_shapes[task][layer])]
            weights.append(
                torch.where(self.allowed(task, layer), sliced, torch.zeros((), device=sliced.device))
            )
        return weights

    def training_weights(self) -> list[Tensor]:
        return self.inference_weights(self.task.index)

    def task_logits(self, images: Tensor, task: int, weights: list[Tensor]) -> Tensor:
        tensors = {f"{name}.weight": w for name, w in zip(self.layer_names, weights, strict=True)}
        tensors.update(self.parts[task].tensors())
        tensors = {f"backbone.{name}": t for name, t in tensors.items()}
        features = torch.func.functional_call(_Features(self.backbone), tensors, (images,), strict=False)
        return self.heads[task](features)

    def observe(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        self.advance_stages()
        images, labels = batch["image"], batch["label"]
        first = self.task.classes[0]
        logits = self.task_logits(images, self.task.index, self.training_weights())
        loss = F.cross_entropy(logits, labels - first)
        self.log_losses(loss_ce=loss)
        pred = logits.argmax(dim=1) + first
        return pred, (pred == labels).float().mean(), loss

    @torch.no_grad()
    def scores(self, images: Tensor, task_id: int | None = None, classifier: str = "cnn") -> Tensor:
        """Task ``task_id``'s logits at its classes (-inf elsewhere); with None, every learned task's
        network is run and their logits side by side give a class-incremental guess."""
        learned = len(self.heads)
        if task_id is not None and not 0 <= task_id < learned:
            raise ValueError(
                f"task id {task_id} out of range: {type(self).__name__} has learned {learned} task(s) "
                f"(ids 0..{learned - 1}); a task-incremental model cannot score a task it has not learned"
            )
        scores = images.new_full((images.shape[0], self.total_classes), float("-inf"))
        for task in range(learned) if task_id is None else (task_id,):
            classes = list(self.seen_tasks[task].classes)
            scores[:, classes] = self.task_logits(images, task, self.inference_weights(task)).to(scores.dtype)
        return scores

    # ------------------------------------------------------------------ hooks
    def before_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        if list(task.classes) != list(range(task.classes[0], task.classes[0] + len(task.classes))):
            raise ValueError(
                f"{type(self).__name__} needs contiguous class ranges per task, got {task.classes}"
            )
        self.seen_tasks.append(task)
        owner_id(task.index)  # range check (255 tasks at most)
        self.add_task_parts(task)
        self.step = 0
        self.plan = None
        self.batches_per_epoch = len(train_loader)

    def get_parameters(self, config: Any) -> list[nn.Parameter] | list[dict[str, Any]]:
        if config.lr_scheduler is not None or config.init_lr_scheduler is not None:
            raise ConfigError(
                f"Method {type(self).__name__} sets the learning rate of each of its stages itself; "
                "set lr_scheduler and init_lr_scheduler to null."
            )
        for key in ("optimizer", "init_optimizer"):
            component = getattr(config, key)
            if component is not None and component.kwargs.get("weight_decay", 0):
                raise ConfigError(
                    f"Config key '{key}.kwargs.weight_decay': {type(self).__name__} applies weight decay "
                    "only to the weights the task owns (method.kwargs.weight_decay); the optimizer's "
                    "would move frozen weights. Set it to 0."
                )
        if self.plan is None:  # a new task: lay its stages over the configured epochs
            epochs = config.first_task_epochs if self.task.index == 0 else config.epoch
            self.plan = StagePlan(self.stages(self.task), epochs * self.batches_per_epoch)
            self.begin_stage(self.plan.current)
        return self.trainable_parameters()

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The current task's: every masked weight (gradients are masked), its parts and its head."""
        return [*self.weights(), *self.parts[-1].parameters(), *self.heads[-1].parameters()]

    def optimizer_step(self, loss: Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward; keep only the gradients of the task's own weights (weight decay on those alone);
        step; free weights stay at 0 (CPG's ``make_pruned_zero``)."""
        assert self.plan is not None
        factor = self.plan.lr_factor(self.step)
        for group in optimizer.param_groups:
            group["lr"] = group.setdefault("configured_lr", group["lr"]) * factor
        optimizer.zero_grad(set_to_none=True)
        self.zero_extra_grads()
        loss.backward()
        for layer, weight in enumerate(self.weights()):
            mask_gradient_(weight, self.owners[layer], self.task.index, self.weight_decay)
        self.mask_extra_grads()
        optimizer.step()
        self.step_extra()
        with torch.no_grad():
            for layer, weight in enumerate(self.weights()):
                weight.masked_fill_(self.owners[layer] == FREE, 0.0)
        self.step += 1
        self.after_step()

    def zero_extra_grads(self) -> None: ...

    def mask_extra_grads(self) -> None: ...

    def step_extra(self) -> None: ...

    def after_step(self) -> None: ...

    def advance_stages(self) -> None:
        """Run the end-of-stage actions of every stage that ends at the current step."""
        assert self.plan is not None
        while self.plan.stage_ends_at(self.step):
            stage = self.plan.current
            self.end_stage(stage)
            self.plan.index += 1
            if self.plan.index < len(self.plan.stages):
                self.begin_stage(self.plan.current)

    def after_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        self.advance_stages()
        self.finish_task(task)
        logger.info("%s after task %d: %s", type(self).__name__, task.index, self.task_report()["tasks"][-1])

    def stages(self, task: TaskInfo) -> list[Stage]:
        raise NotImplementedError

    def begin_stage(self, stage: Stage) -> None: ...

    def end_stage(self, stage: Stage) -> None: ...

    def finish_task(self, task: TaskInfo) -> None: ...

    # ------------------------------------------------------------------ growth
    def grow(self, width: float) -> None:
        """Widen the backbone (it needs ``grow_to``) and the owner maps; new weights are free.

        Every learned task keeps its shapes, parts and head, so its outputs do not change;
        ``widen_current_task`` moves the task being learned onto the new width.
        """
        grow_to = getattr(self.backbone, "grow_to", None)
        if grow_to is None:
            raise ConfigError(f"backbone {type(self.backbone).__name__} cannot grow; use vgg16_bn")
        before = sum(w.numel() for w in self.weights())
        grow_to(width)
        self.owners.widen_to([w.shape for w in self.weights()])
        after = sum(w.numel() for w in self.weights())
        task = self.task.index if self.seen_tasks else -1
        self.growth_events.append(
            {"task": task, "width": width, "weights_before": before, "weights_after": after}
        )
        logger.info(
            "network grown to width %.4f during task %d (%d -> %d weights)", width, task, before, after
        )

    def widen_current_task(self) -> None:
        """The task being learned uses the whole current width: wider parts and a fresh, wider head."""
        parameters, buffers = self.reference_parts()
        self.parts[-1].widen_like({**parameters, **buffers})
        head = self.heads[-1]
        head.weight.data = head.weight.data.new_empty(len(self.task.classes), self.backbone.num_features)
        nn.init.normal_(head.weight, 0.0, 0.01)
        nn.init.zeros_(head.bias)
        self.task_shapes[-1] = [tuple(w.shape) for w in self.weights()]

    # ------------------------------------------------------------------ reporting and state
    def mask_bytes(self, task: int) -> int:
        """Bytes of the packed pick masks task ``task`` keeps (0 without such masks)."""
        return 0

    def task_report(self) -> dict[str, Any]:
        """Parameters and mask bytes per task, and growth: what the T5 protocol records."""
        owner_bytes = sum(self.owners[i].numel() for i in range(len(self.owners)))
        tasks = []
        for task in range(len(self.heads)):
            own = sum(task_parameter_count(self.owners[i], task) for i in range(len(self.owners)))
            specific = sum(p.numel() for p in self.parts[task].parameters()) + sum(
                p.numel() for p in self.heads[task].parameters()
            )
            tasks.append(
                {
                    "task": task,
                    "owned_weights": own,
                    "task_specific_parameters": specific,
                    "mask_bytes": self.mask_bytes(task),
                }
            )
        free = sum(int((self.owners[i] == FREE).sum()) for i in range(len(self.owners)))
        return {
            "tasks": tasks,
            "total_weights": owner_bytes,
            "free_weights": free,
            "owner_map_bytes": owner_bytes,
            "mask_bytes": sum(t["mask_bytes"] for t in tasks),
            "width": getattr(self.backbone, "width", None),
            "growth_events": list(self.growth_events),
        }

    def get_extra_state(self) -> Any:
        state = super().get_extra_state()
        state.update(
            task_shapes=self.task_shapes,
            head_shapes=[tuple(h.weight.shape) for h in self.heads],
            plan=self.plan.state() if self.plan is not None else None,
            step=self.step,
            growth_events=self.growth_events,
            batches_per_epoch=self.batches_per_epoch,
        )
        return state

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        self.task_shapes = [list(map(tuple, shapes)) for shapes in state["task_shapes"]]
        self.plan = StagePlan.from_state(state["plan"]) if state["plan"] is not None else None
        self.step = state["step"]
        self.growth_events = list(state["growth_events"])
        self.batches_per_epoch = state["batches_per_epoch"]
        parameters, buffers = self.reference_parts()
        while len(self.parts) < len(state["head_shapes"]):
            self.parts.append(TaskParts(parameters, buffers))
        for index, (out_features, in_features) in enumerate(state["head_shapes"]):
            if index >= len(self.heads):
                self.heads.append(nn.Linear(in_features, out_features))
            elif self.heads[index].weight.shape != (out_features, in_features):
                self.heads[index].weight.data = self.heads[index].weight.data.new_empty(
                    out_features, in_features
                )
        for part in self.parts:
            part.to(self.device)
        self.heads.to(self.device)
