"""The method contract (LibContinual's Finetune): a method overrides only what differs.

Hook order per task (the trainer's loop):
``before_task`` -> for each batch ``observe`` then ``optimizer_step`` -> ``after_task`` -> evaluation
with ``inference`` / ``scores``. The base class *is* Finetune: cross-entropy on the current data with a
head that grows to the classes seen so far; it is the lower bound of every benchmark.

Differences from LibContinual: hooks receive a ``TaskInfo`` (index, classes, known/total classes)
instead of a bare task index; ``observe`` may return ``acc`` as a tensor (no host sync per batch);
named loss terms go through ``log_losses``.

"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.errors import ConfigError

Batch = dict[str, torch.Tensor]


class Method(nn.Module):
    """Finetune: the base of every method.

    ``classifiers`` names the evaluations a method reports (``cnn``; exemplar methods add ``nme``).
    ``requires_buffer`` makes a run without a buffer fail before training starts.
    ``task_aware_inference`` tells evaluation that task-incremental scores need ``task_id``
    (per-task masks or heads) instead of masking the class-incremental scores.
    ``exemplar_free`` makes a run with a buffer fail before training starts (data-free methods: memory 0).
    ``frozen_copies`` names attributes that hold a frozen copy of the backbone (a teacher) or None:
    ``train()`` keeps them in eval mode, and on resume they are recreated before the checkpoint's
    weights are loaded into them.
    """

    classifiers: tuple[str, ...] = ("cnn",)
    requires_buffer: bool = False
    task_aware_inference: bool = False
    exemplar_free: bool = False
    frozen_copies: tuple[str, ...] = ("teacher",)

    def __init__(self, backbone: nn.Module, feat_dim: int, num_class: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.feat_dim = feat_dim
        self.num_class = num_class
        self.seen_tasks: list[TaskInfo] = []
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_counts: dict[str, int] = {}

    # ------------------------------------------------------------------ task state
    @property
    def task(self) -> TaskInfo:
        return self.seen_tasks[-1]

    @property
    def known_classes(self) -> int:
        return self.task.known_classes if self.seen_tasks else 0

    @property
    def total_classes(self) -> int:
        return self.task.total_classes if self.seen_tasks else 0

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def get_extra_state(self) -> Any:
        return {"seen_tasks": [vars(info) for info in self.seen_tasks]}

    def set_extra_state(self, state: Any) -> None:
        self.seen_tasks = [TaskInfo(**info) for info in state["seen_tasks"]]

    def train(self, mode: bool = True) -> Method:
        """The trainer calls ``train()`` every epoch; frozen copies stay in eval mode, so a teacher's
        BatchNorm keeps its running statistics instead of using and updating batch statistics."""
        super().train(mode)
        for name in self.frozen_copies:
            if getattr(self, name, None) is not None:
                getattr(self, name).eval()
        return self

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Recreate frozen copies (teachers) that the state holds and drop those it does not, then load as
        usual (a resumed run starts without them; a rank receiving rank 0's state may hold an older one).

        Loading can recreate head chunks (new, trainable parameters), so the copies are frozen again after.
        """
        for name in self.frozen_copies:
            prefix = f"{name}."
            held = any(key.startswith(prefix) for key in state_dict)
            if getattr(self, name, None) is None and held:
                setattr(self, name, frozen_copy(self.backbone))
            elif not held:
                setattr(self, name, None)
        result = super().load_state_dict(state_dict, strict, assign)
        for name in self.frozen_copies:
            if getattr(self, name, None) is not None:
                getattr(self, name).requires_grad_(False)
        return result

    # ------------------------------------------------------------------ hooks
    def before_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        """Record the task and grow the head to every class seen so far."""
        self.seen_tasks.append(task)
        self.backbone.head.expand(task.total_classes)

    def resume_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        """Called instead of ``before_task`` when a run resumes inside a task: the state dict already holds
        what ``before_task`` built; re-attach what lives outside it (e.g. a reference to the buffer)."""

    def observe(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One training batch: cross-entropy over the seen classes. Returns (pred, acc, loss)."""
        images, labels = batch["image"], batch["label"]
        logits = self.backbone(images)[:, : self.total_classes]
        loss = F.cross_entropy(logits, labels)
        self.log_losses(loss_ce=loss)
        pred = logits.argmax(dim=1)
        return pred, (pred == labels).float().mean(), loss

    def optimizer_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward and step; GEM (projection) and PackNet/CPG (gradient masks) override this."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def after_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        """Nothing for finetune; exemplar and regularisation methods update their state here."""

    def get_parameters(self, config: Any) -> Iterable[nn.Parameter] | list[dict[str, Any]]:
        """Parameters (or parameter groups) the optimizer of this task trains."""
        return [p for p in self.parameters() if p.requires_grad]

    def write_artifacts(self, folder: Path, task_index: int) -> None:
        """Files a method writes into the run directory after each task (ABD: its synthetic images)."""

    def distributed_refusal(self) -> str | None:
        """Why this method, as configured, cannot train under torch.distributed (None: it can)."""
        return None

    def task_report(self) -> dict[str, Any]:
        """What a method records after each task (metrics.jsonl) and in results.json ``method_report``,
        e.g. parameters and mask bytes per task for parameter isolation; empty for most methods."""
        return {}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def scores(
        self, images: torch.Tensor, task_id: int | None = None, classifier: str = "cnn"
    ) -> torch.Tensor:
        """Class scores (B, total_classes) for evaluation; higher is more likely."""
        return self.backbone(images)[:, : self.total_classes]

    @torch.no_grad()
    def scores_per_classifier(
        self, images: torch.Tensor, task_id: int | None = None
    ) -> dict[str, torch.Tensor]:
        """``scores`` of every classifier in ``classifiers`` (evaluation calls this once per test batch);
        a method with several classifiers overrides it to share one backbone pass among them."""
        return {name: self.scores(images, task_id, name) for name in self.classifiers}

    @torch.no_grad()
    def inference(
        self, batch: Batch, task_id: int | None = None, classifier: str = "cnn"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict labels; with ``task_id`` only among that task's classes (task-incremental)."""
        scores = self.scores(batch["image"], task_id, classifier)
        pred = predict(scores, self.seen_tasks[task_id].classes if task_id is not None else None)
        return pred, (pred == batch["label"]).float().mean()

    # ------------------------------------------------------------------ logging
    def log_losses(self, **terms: torch.Tensor) -> None:
        """Accumulate named loss terms (loss_ce, loss_kd, ...) on the device; read once per epoch."""
        for name, value in terms.items():
            value = value.detach()
            self._loss_sums[name] = self._loss_sums[name] + value if name in self._loss_sums else value
            self._loss_counts[name] = self._loss_counts.get(name, 0) + 1

    def pop_losses(self) -> dict[str, float]:
        """Mean of each logged term since the last call (one host sync)."""
        means = {name: float(total) / self._loss_counts[name] for name, total in self._loss_sums.items()}
        self._loss_sums.clear()
        self._loss_counts.clear()
        return means


def refuse_buffer(buffer: Any, method: str) -> None:
    """An ``exemplar_free`` method keeps no exemplar: a configured buffer is an error, never ignored."""
    if buffer is not None:
        raise ConfigError(
            f"Method {method!r} is data-free (memory 0, protocol R5-DF): it keeps no exemplar of a past "
            "task. Remove 'buffer' from the config."
        )


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy in eval mode with every parameter frozen (``requires_grad`` False).

    Store it under a name listed in ``Method.frozen_copies`` (``teacher`` by default): ``Method.train``
    then keeps it in eval mode and a resumed run recreates it.
    """
    teacher = copy.deepcopy(module).eval()
    teacher.requires_grad_(False)
    return teacher


def predict(scores: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
    """Argmax over all scores, or only over ``classes`` (task-incremental)."""
    if classes is None:
        return scores.argmax(dim=1)
    index = torch.as_tensor(list(classes), device=scores.device)
    return index[scores.index_select(1, index).argmax(dim=1)]


Finetune = Method
