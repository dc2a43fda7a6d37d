"""Per-task pieces of a parameter-isolation model and a staged schedule inside one task.

``TaskParts`` holds one task's copy of every backbone tensor that is not a masked weight (BatchNorm
affine parameters and running statistics, linear biases), at that task's width. ``StagePlan`` turns a
method's stages (lengths in the paper's epochs) into step boundaries inside the task's step budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


def match_shapes_(module: nn.Module, state_dict: dict[str, Any], prefix: str) -> None:
    """Give ``module``'s own parameters and buffers the shapes the state dict holds (a grown model
    loads into a freshly built one); the values are copied by the usual loading afterwards."""
    for name, parameter in module._parameters.items():
        saved = state_dict.get(prefix + name)
        if parameter is not None and saved is not None and saved.shape != parameter.shape:
            parameter.data = parameter.data.new_empty(saved.shape)
    for name, buffer in module._buffers.items():
        saved = state_dict.get(prefix + name)
        if buffer is not None and saved is not None and saved.shape != buffer.shape:
            module._buffers[name] = buffer.new_empty(saved.shape)


class ShapeMatching(nn.Module):
    """A module whose tensors take the saved shapes when a state dict is loaded."""

    def _load_from_state_dict(self, state_dict, prefix, *args: Any) -> None:  # type: ignore[no-untyped-def]
        match_shapes_(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args)


class TaskParts(ShapeMatching):
    """One task's unmasked backbone tensors, named like the backbone's (``.`` replaced by ``__``)."""

    def __init__(self, parameters: dict[str, Tensor], buffers: dict[str, Tensor]) -> None:
        super().__init__()
        self.parameter_names = list(parameters)
        self.buffer_names = list(buffers)
        for name, value in parameters.items():
            self.register_parameter(_key(name), nn.Parameter(value.detach().clone()))
        for name, value in buffers.items():
            self.register_buffer(_key(name), value.detach().clone())

    def tensors(self) -> dict[str, Tensor]:
        """Backbone name -> tensor, for ``torch.func.functional_call``."""
        named = {name: getattr(self, _key(name)) for name in self.parameter_names}
        named.update({name: getattr(self, _key(name)) for name in self.buffer_names})
        return named

    @torch.no_grad()
    def copy_block_from(self, other: TaskParts) -> None:
        """Start from another task's values (in the block both widths share)."""
        theirs = other.tensors()
        for name, mine in self.tensors().items():
            block = tuple(slice(0, min(a, b)) for a, b in zip(mine.shape, theirs[name].shape, strict=True))
            mine[block] = theirs[name][block]

    @torch.no_grad()
    def widen_like(self, reference: dict[str, Tensor]) -> None:
        """Grow every tensor to the reference's shape, padding with the reference's new entries."""
        for name in (*self.parameter_names, *self.buffer_names):
            mine, target = getattr(self, _key(name)), reference[name]
            if mine.shape == target.shape:
                continue
            new = target.detach().clone()
            new[tuple(slice(0, n) for n in mine.shape)] = mine
            if name in self.parameter_names:
                getattr(self, _key(name)).data = new
            else:
                self._buffers[_key(name)] = new


def _key(name: str) -> str:
    return name.replace(".", "__")


@dataclass
class Stage:
    """One stage of a task: ``name`` (the method's), ``epochs`` in the paper's schedule, ``lr`` the
    factor on the configured learning rate (CPG: 1 while finetuning at 1e-2, 0.1 while pruning at 1e-3),
    multi-step decay at fractions of the stage, and anything the method needs (``info``)."""

    name: str
    epochs: float
    lr: float = 1.0
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    info: dict[str, Any] = field(default_factory=dict)


class StagePlan:
    """Stages laid out over the task's ``budget`` steps in proportion to their paper epochs.

    A short CPU run then follows the paper's schedule scaled down, as the R5 milestone rule; a stage may
    get 0 steps (its end-of-stage action still runs, e.g. a one-shot prune). ``insert`` adds a stage
    after the current one and rescales the rest into the steps that are left (CPG's growth).
    """

    def __init__(self, stages: list[Stage], budget: int, start: int = 0) -> None:
        self.stages = list(stages)
        self.budget = budget
        self.bounds: list[int] = []
        self.index = 0
        self._layout(0, start)

    def _layout(self, first: int, start: int) -> None:
        rest = self.stages[first:]
        total = sum(s.epochs for s in rest)
        steps, cumulative, bounds = self.budget - start, 0.0, []
        for stage in rest:
            cumulative += stage.epochs
            bounds.append(start + (round(cumulative / total * steps) if total > 0 else steps))
        self.bounds = self.bounds[:first] + bounds

    @property
    def current(self) -> Stage:
        return self.stages[min(self.index, len(self.stages) - 1)]

    def begin(self, index: int) -> int:
        return self.bounds[index - 1] if index > 0 else 0

    def stage_ends_at(self, step: int) -> bool:
        return self.index < len(self.stages) and step >= self.bounds[self.index]

    def progress(self, step: int) -> float:
        begin, end = self.begin(self.index), self.bounds[min(self.index, len(self.bounds) - 1)]
        return 1.0 if end <= begin else (step - begin) / (end - begin)

    def lr_factor(self, step: int) -> float:
        stage = self.current
        passed = sum(1 for m in stage.milestones if self.progress(step) >= m)
        return stage.lr * stage.gamma**passed

    def insert(self, stage: Stage, step: int) -> None:
        self.stages.insert(self.index + 1, stage)
        self._layout(self.index + 1, step)

    def state(self) -> dict[str, Any]:
        return {
            "stages": [asdict(s) for s in self.stages],
            "budget": self.budget,
            "bounds": self.bounds,
            "index": self.index,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> StagePlan:
        plan = cls([Stage(**s) for s in state["stages"]], state["budget"])
        plan.bounds, plan.index = list(state["bounds"]), state["index"]
        return plan
