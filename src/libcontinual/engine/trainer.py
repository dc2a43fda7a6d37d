"""The trainer: the loop of DESIGN.md, visible in one place. Optional features are callbacks."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch

from libcontinual.config import ExperimentConfig
from libcontinual.data.augment import BatchAugment, Normalize
from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import Scenario, Task
from libcontinual.engine.builders import build_optimizer, build_scheduler
from libcontinual.engine.evaluation import evaluate
from libcontinual.engine.metrics import summarize
from libcontinual.engine.run_dir import peak_memory_mb
from libcontinual.errors import TrainingError
from libcontinual.methods.base import Method

logger = logging.getLogger(__name__)


class Callback:
    """Hooks the trainer calls; override what you need (progress bars, loggers, checkpoints)."""

    def on_task_start(self, trainer: Trainer, task: Task, epochs: int, batches: int) -> None: ...

    def on_batch_end(self, trainer: Trainer, batch_index: int, loss: torch.Tensor) -> None: ...

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_evaluation(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_task_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...


class Trainer:
    """Runs every task of a scenario through a method and records the accuracy matrices."""

    def __init__(
        self,
        config: ExperimentConfig,
        scenario: Scenario,
        method: Method,
        buffer: Any,
        train_transform: BatchAugment,
        test_transform: Normalize,
        device: torch.device,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.config = config
        self.scenario = scenario
        self.method = method.to(device)
        self.buffer = buffer
        self.train_transform = train_transform
        self.test_transform = test_transform
        self.device = device
        self.callbacks = list(callbacks)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(config.seed)
        self.test_loaders = [self.test_loader(task) for task in scenario.tasks]
        self.accuracy_matrices: dict[str, list[list[float]]] = {}
        self.random_init_accuracy: dict[str, list[float]] | None = None
        self.task_seconds: list[float] = []

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        start = time.perf_counter()
        for task in self.scenario.tasks:
            self.train_task(task)
        return self.results(time.perf_counter() - start)

    def train_task(self, task: Task) -> None:
        task_start = time.perf_counter()
        info = task.info
        train_loader = self.train_loader(task)
        test_loaders = self.test_loaders[: info.index + 1]
        self.method.before_task(info, self.buffer, train_loader, test_loaders)
        if self.config.full_accuracy_matrix and info.index == 0:
            self.random_init_accuracy = self.evaluate(len(self.scenario.tasks))
        optimizer, scheduler = self.optimization(info.index)
        epochs = self.config.first_task_epochs if info.index == 0 else self.config.epoch
        self._emit("on_task_start", task, epochs, len(train_loader))
        for epoch in range(epochs):
            record = self.train_epoch(info.index, epoch, train_loader, optimizer)
            if scheduler is not None:
                scheduler.step()
            self._emit("on_epoch_end", record)
            every = self.config.val_per_epoch
            if every and (epoch + 1) % every == 0 and epoch + 1 < epochs:
                accuracy = self.evaluate(info.index + 1)
                self._emit(
                    "on_evaluation",
                    {"event": "eval", "task": info.index, "epoch": epoch, "accuracy": accuracy},
                )
        self.method.after_task(info, self.buffer, train_loader, test_loaders)
        accuracy = self.evaluate(
            len(self.scenario.tasks) if self.config.full_accuracy_matrix else info.index + 1
        )
        for name, row in accuracy.items():
            self.accuracy_matrices.setdefault(name, []).append(row)
        self.task_seconds.append(time.perf_counter() - task_start)
        self._emit("on_task_end", self.task_record(info.index, accuracy))

    def train_epoch(
        self, task_index: int, epoch: int, loader: DeviceLoader, optimizer: torch.optim.Optimizer
    ) -> dict[str, Any]:
        """One pass over the loader; loss and accuracy are summed on the device and read once."""
        self.method.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        first_bad_batch = torch.full((), -1, dtype=torch.int64, device=self.device)
        seen = 0
        for batch_index, batch in enumerate(loader):
            _, acc, loss = self.method.observe(batch)
            self.method.optimizer_step(loss, optimizer)
            size = batch["label"].shape[0]
            loss = loss.detach()
            bad = ~torch.isfinite(loss) & (first_bad_batch < 0)
            first_bad_batch = torch.where(bad, batch_index, first_bad_batch)
            loss_sum += loss * size
            correct += acc.detach() * size
            seen += size
            self._emit("on_batch_end", batch_index, loss)
        if int(first_bad_batch) >= 0:
            raise TrainingError(
                f"Non-finite loss at task {task_index}, epoch {epoch}, batch {int(first_bad_batch)}: "
                "training stopped. Lower the learning rate or check the data; the last checkpoint is intact."
            )
        seconds = time.perf_counter() - start
        return {
            "event": "epoch",
            "task": task_index,
            "epoch": epoch,
            "loss": float(loss_sum) / max(seen, 1),
            "train_accuracy": 100.0 * float(correct) / max(seen, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": seconds,
            "images_per_second": seen / seconds if seconds > 0 else None,
            **self.method.pop_losses(),
        }

    # ------------------------------------------------------------------ pieces
    def evaluate(self, num_tasks: int) -> dict[str, list[float]]:
        """Accuracy on the first ``num_tasks`` tasks' test sets."""
        infos = [task.info for task in self.scenario.tasks[:num_tasks]]
        return evaluate(self.method, self.test_loaders[:num_tasks], infos)

    def train_loader(self, task: Task) -> DeviceLoader:
        return DeviceLoader(
            task.train_images,
            task.train_labels,
            self.config.batch_size,
            self.train_transform,
            shuffle=True,
            generator=self.generator,
            device=self.device,
        )

    def test_loader(self, task: Task) -> DeviceLoader:
        return DeviceLoader(
            task.test_images,
            task.test_labels,
            self.config.eval_batch_size,
            self.test_transform,
            device=self.device,
        )

    def optimization(self, task_index: int) -> tuple[torch.optim.Optimizer, Any]:
        """A fresh optimizer and scheduler for each task (``init_*`` for the first one)."""
        first = task_index == 0
        use_init_optimizer = first and self.config.init_optimizer is not None
        optimizer_config = self.config.init_optimizer if use_init_optimizer else self.config.optimizer
        optimizer_key = "init_optimizer" if use_init_optimizer else "optimizer"
        use_init_scheduler = first and self.config.init_lr_scheduler is not None
        scheduler_config = self.config.init_lr_scheduler if use_init_scheduler else self.config.lr_scheduler
        scheduler_key = "init_lr_scheduler" if use_init_scheduler else "lr_scheduler"
        params = self.method.get_parameters(self.config)
        optimizer = build_optimizer(optimizer_config, params, optimizer_key)
        return optimizer, build_scheduler(scheduler_config, optimizer, scheduler_key)

    def task_record(self, task_index: int, accuracy: dict[str, list[float]]) -> dict[str, Any]:
        test_sizes = self.test_sizes()
        return {
            "event": "task",
            "task": task_index,
            "accuracy": accuracy,
            "accuracy_after_task": {
                name: summarize(matrix, test_sizes)["accuracy_curve"][-1]
                for name, matrix in self.accuracy_matrices.items()
            },
            "seconds": self.task_seconds[-1],
        }

    def test_sizes(self) -> list[int]:
        return [int(task.test_labels.shape[0]) for task in self.scenario.tasks]

    def results(self, wall_seconds: float) -> dict[str, Any]:
        test_sizes = self.test_sizes()
        random_init = self.random_init_accuracy or {}
        return {
            "accuracy_matrix": self.accuracy_matrices,
            "random_init_accuracy": self.random_init_accuracy,
            "summary": {
                name: summarize(matrix, test_sizes, random_init.get(name))
                for name, matrix in self.accuracy_matrices.items()
            },
            "wall_time_s": wall_seconds,
            "task_wall_time_s": self.task_seconds,
            **peak_memory_mb(),
        }

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)
