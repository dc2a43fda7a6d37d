"""The trainer: the loop of DESIGN.md, visible in one place. Optional features are callbacks."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from libcontinual import distributed
from libcontinual.config import ExperimentConfig
from libcontinual.data.augment import BatchAugment, Normalize
from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import Scenario, Task
from libcontinual.engine.builders import build_optimizer, build_scheduler
from libcontinual.engine.checkpoint import CheckpointStore, rng_state, set_rng_state
from libcontinual.engine.evaluation import evaluate
from libcontinual.engine.metrics import summarize
from libcontinual.engine.run_dir import peak_memory_mb
from libcontinual.errors import ConfigError, TrainingError
from libcontinual.methods.base import Method
from libcontinual.progress import track

logger = logging.getLogger(__name__)


class Callback:
    """Hooks the trainer calls; override what you need (progress bars, loggers, checkpoints)."""

    def on_task_start(self, trainer: Trainer, task: Task, epochs: int, batches: int) -> None: ...

    def on_batch_end(self, trainer: Trainer, batch_index: int, loss: torch.Tensor) -> None: ...

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_evaluation(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_task_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...


class RunInterrupted(Exception):
    """The run stopped on request (SIGINT/SIGTERM) after writing a checkpoint."""


@dataclass
class TaskRun:
    """What exists while a task trains: its loader (with merged exemplars), optimizer and scheduler."""

    loader: DeviceLoader
    optimizer: torch.optim.Optimizer
    scheduler: Any
    start: float


@dataclass
class EpochProgress:
    """Where an epoch stands: its sample order, the next batch and the running sums (resumable)."""

    epoch: int
    order: torch.Tensor | None
    next_batch: int
    loss_sum: torch.Tensor
    correct: torch.Tensor
    first_bad_batch: torch.Tensor
    seen: int = 0
    seconds: float = 0.0
    bad_loss: torch.Tensor | None = None

    @classmethod
    def start(cls, epoch: int, device: torch.device) -> EpochProgress:
        zero = torch.zeros((), device=device)
        return cls(
            epoch,
            None,
            0,
            zero.clone(),
            zero.clone(),
            torch.full((), -1, dtype=torch.int64, device=device),
            bad_loss=zero.clone(),
        )

    def state(self) -> dict[str, Any]:
        return {
            key: value.cpu() if isinstance(value, torch.Tensor) else value
            for key, value in vars(self).items()
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> EpochProgress:
        return cls(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in state.items()})


def restart_sums(progress: EpochProgress) -> EpochProgress:
    """``progress`` with its loss, accuracy and sample sums at zero (its position kept)."""
    zero = torch.zeros_like(progress.loss_sum)
    return dataclasses.replace(progress, loss_sum=zero, correct=zero.clone(), seen=0)


def loss_sums(method: Method) -> dict[str, Any]:
    """The named-loss sums a method has logged in the current epoch (``Method.log_losses``), so that a
    checkpoint inside an epoch keeps them and the resumed epoch's loss_ce, loss_kd, ... stay right."""
    return {
        "sums": {name: value.detach().cpu() for name, value in method._loss_sums.items()},
        "counts": dict(method._loss_counts),
    }


def restore_loss_sums(method: Method, state: dict[str, Any], device: torch.device) -> None:
    method._loss_sums = {name: value.to(device) for name, value in state["sums"].items()}
    method._loss_counts = dict(state["counts"])


@dataclass(frozen=True)
class FastPath:
    """Speed switches resolved for the device; a config value of null takes the device's default.

    channels_last: on by default with CUDA (on CPU only when asked, until benchmarks/cpu_fast_path.py's
    step timing and its demo accuracy check are recorded on a quiet machine); bf16 autocast: on by
    default with CUDA when supported; compile: only when the config asks.
    """

    channels_last: bool
    bf16: bool
    device_type: str
    compile: bool = False

    @classmethod
    def resolve(cls, config: ExperimentConfig, device: torch.device) -> FastPath:
        cuda = device.type == "cuda"
        bf16_default = cuda and torch.cuda.is_bf16_supported()
        return cls(
            channels_last=cuda if config.channels_last is None else config.channels_last,
            bf16=bf16_default if config.bf16 is None else config.bf16,
            device_type=device.type,
            compile=config.compile,
        )

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.bf16)

    def describe(self) -> dict[str, Any]:
        """The switches a run used and its thread count, for its records: runs made before and after a
        default changed stay distinguishable."""
        return {**dataclasses.asdict(self), "num_threads": torch.get_num_threads()}


class TrainingStep(nn.Module):
    """What DistributedDataParallel wraps: its forward is the method's ``observe``, so the backward of
    the loss it returns all-reduces the gradients before ``optimizer_step`` rewrites or applies them."""

    def __init__(self, method: Method) -> None:
        super().__init__()
        self.method = method

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.method.observe(batch)


def trained_parameters(method: Method) -> tuple[tuple[int, torch.Size], ...]:
    """Which parameters a task trains, by identity and shape: each task's new head changes it."""
    return tuple((id(p), p.shape) for p in method.parameters() if p.requires_grad)


class Trainer:
    """Runs every task of a scenario through a method and records the accuracy matrices.

    Under torch.distributed (see docs/distributed.md) every rank runs this same loop on its shard of
    each global batch, with the method's training step wrapped in DistributedDataParallel; between
    tasks rank 0 alone runs ``after_task`` and sends its state to the other ranks.
    """

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
        checkpoints: CheckpointStore | None = None,
        metrics_offset: Callable[[], int] = lambda: 0,
    ) -> None:
        self.config = config
        self.scenario = scenario
        self.ranks = distributed.current()
        self.fast = FastPath.resolve(config, device)
        self.method = method.to(device)
        if self.ranks.active and (refusal := self.method.distributed_refusal()):
            raise ConfigError(refusal)
        if self.ranks.active and config.distributed.sync_batchnorm:
            if device.type != "cuda":
                raise ConfigError(
                    "Config key 'distributed.sync_batchnorm' is true but the device is "
                    f"{device}: torch's SyncBatchNorm runs on CUDA only. Set it to false on CPU."
                )
            nn.SyncBatchNorm.convert_sync_batchnorm(self.method.backbone)
        if self.fast.channels_last:
            self.method.to(memory_format=torch.channels_last)
        if self.fast.compile:
            self.method.backbone.compile()
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
        self.checkpoints = checkpoints
        self.metrics_offset = metrics_offset
        self.stop_signal: str | None = None
        self.elapsed_before = 0.0
        self._fit_start = time.perf_counter()
        self._task: TaskRun | None = None
        self._step: Callable[[dict[str, Any]], Any] = self.method.observe
        self._step_parameters: tuple[tuple[int, torch.Size], ...] = ()

    # ------------------------------------------------------------------ the loop
    def fit(self, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train every task; with ``checkpoint``, continue exactly where that checkpoint left off."""
        start = time.perf_counter()
        first_task, resume = (self.restore(checkpoint), checkpoint["task_state"]) if checkpoint else (0, None)
        for task in self.scenario.tasks[first_task:]:
            self.train_task(task, resume if task.info.index == first_task else None)
        return self.results(self.elapsed_before + time.perf_counter() - start)

    def train_task(self, task: Task, resume: dict[str, Any] | None = None) -> None:
        info = task.info
        train_loader = self.train_loader(task)
        test_loaders = self.test_loaders[: info.index + 1]
        if resume is None:
            task_start = time.perf_counter()
            with track(f"task {info.index}: {self.config.method.name} before_task"):
                self.method.before_task(info, self.buffer, train_loader, test_loaders)
            if self.config.full_accuracy_matrix and info.index == 0:
                self.random_init_accuracy = self.evaluate(len(self.scenario.tasks))
            optimizer, scheduler = self.optimization(info.index)
            progress = EpochProgress.start(0, self.device)
        else:
            task_start = time.perf_counter() - resume["task_seconds"]
            train_loader.images = resume["loader_images"].to(self.device)
            train_loader.labels = resume["loader_labels"].to(self.device)
            self.method.resume_task(info, self.buffer, train_loader, test_loaders)
            optimizer, scheduler = self.optimization(info.index)
            optimizer.load_state_dict(resume["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(resume["scheduler"])
            progress = EpochProgress.from_state(resume["progress"], self.device)
            if "losses" in resume:
                restore_loss_sums(self.method, resume["losses"], self.device)
            if not self.ranks.is_main:  # the checkpoint's partial sums are all ranks' together: rank 0's
                progress = restart_sums(progress)
                self.method.pop_losses()
        self._task = TaskRun(train_loader, optimizer, scheduler, task_start)
        epochs = self.config.first_task_epochs if info.index == 0 else self.config.epoch
        self._emit("on_task_start", task, epochs, len(train_loader))
        for epoch in range(progress.epoch, epochs):
            if progress.epoch != epoch:
                progress = EpochProgress.start(epoch, self.device)
            record = self.train_epoch(info.index, train_loader, optimizer, progress)
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
            if epoch + 1 < epochs:
                progress = EpochProgress.start(epoch + 1, self.device)
                if self.stop_agreed() or (
                    self.config.checkpoint_every and (epoch + 1) % self.config.checkpoint_every == 0
                ):
                    self.save_checkpoint(info.index, progress)
                    self._stop_if_requested()
        self.unwrap_training_step()
        with track(f"task {info.index}: {self.config.method.name} after_task"):
            if self.ranks.is_main:
                train_loader.ranks = distributed.SINGLE  # after_task sees the whole task, as alone
                self.method.after_task(info, self.buffer, train_loader, test_loaders)
            if self.ranks.active:
                self.share_state(info.index + 1)
        accuracy = self.evaluate(
            len(self.scenario.tasks) if self.config.full_accuracy_matrix else info.index + 1
        )
        for name, row in accuracy.items():
            self.accuracy_matrices.setdefault(name, []).append(row)
        self.task_seconds.append(time.perf_counter() - task_start)
        self._task = None
        self._emit("on_task_end", self.task_record(info.index, accuracy))
        if info.index + 1 < len(self.scenario.tasks):
            self.save_checkpoint(info.index + 1, None)
            self._stop_if_requested()

    def train_epoch(
        self, task_index: int, loader: DeviceLoader, optimizer: torch.optim.Optimizer, progress: EpochProgress
    ) -> dict[str, Any]:
        """One pass over the loader (from ``progress.next_batch``); sums stay on the device, read once."""
        self.method.train()
        start = time.perf_counter() - progress.seconds
        if progress.order is None and progress.next_batch == 0:
            progress.order = loader.epoch_order()
        if progress.bad_loss is None:
            progress.bad_loss = torch.zeros((), device=self.device)
        max_loss = float("inf") if self.config.max_loss is None else self.config.max_loss
        self.wrap_training_step()
        for batch_index, batch in enumerate(
            loader.batches(progress.order, progress.next_batch), progress.next_batch
        ):
            with self.fast.autocast():
                _, acc, loss = self._step(batch)
            if self.ranks.active:
                # DDP averages the ranks' gradients; weighing each rank's mean loss by its share of the
                # global batch makes that average the gradient of the global batch's mean loss.
                share = batch["shard_size"] / batch["global_size"]
                self.method.optimizer_step(loss * (share * self.ranks.world_size), optimizer)
                size, loss = batch["shard_size"], loss.detach() * share
            else:
                self.method.optimizer_step(loss, optimizer)
                size, loss = batch["label"].shape[0], loss.detach()
            bad = (~torch.isfinite(loss) | (loss.abs() > max_loss)) & (progress.first_bad_batch < 0)
            progress.first_bad_batch = torch.where(bad, batch_index, progress.first_bad_batch)
            progress.bad_loss = torch.where(bad, loss.float(), progress.bad_loss)
            progress.loss_sum += loss  # batch means, averaged per batch like the named terms (loss_ce ...)
            progress.correct += acc.detach() * size
            progress.seen += size
            progress.next_batch = batch_index + 1
            self._emit("on_batch_end", batch_index, loss)
            if progress.next_batch < len(loader) and self.stop_agreed():
                self.sum_over_ranks(progress)
                self._check_finite(task_index, progress)
                progress.seconds = time.perf_counter() - start
                self.save_checkpoint(task_index, progress)
                self._stop_if_requested()
        self.sum_over_ranks(progress)
        self._check_finite(task_index, progress)
        seconds = time.perf_counter() - start
        seen = max(progress.seen, 1)
        return {
            "event": "epoch",
            "task": task_index,
            "epoch": progress.epoch,
            "loss": float(progress.loss_sum) / max(progress.next_batch, 1),
            "train_accuracy": 100.0 * float(progress.correct) / seen,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": seconds,
            "images_per_second": progress.seen / seconds if seconds > 0 else None,
            **self.method.pop_losses(),
        }

    def _check_finite(self, task_index: int, progress: EpochProgress) -> None:
        """A non-finite loss, or one above ``max_loss`` (the run diverged), stops the run."""
        if self.ranks.active:  # every rank stops, at the first bad batch of any rank
            flags = distributed.all_gather_pairs(progress.first_bad_batch, progress.bad_loss)
            bad_ones = [(batch, value) for batch, value in flags if batch >= 0]
            if bad_ones:
                batch, value = min(bad_ones, key=lambda pair: pair[0])
                progress.first_bad_batch.fill_(batch)
                progress.bad_loss.fill_(value)
        bad = int(progress.first_bad_batch)
        if bad >= 0:
            where = f"at task {task_index}, epoch {progress.epoch}, batch {bad}"
            value = float(progress.bad_loss)
            if math.isfinite(value):
                raise TrainingError(
                    f"Loss {value:.3g} {where} is above max_loss ({self.config.max_loss:g}): the run "
                    "diverged and training stopped. Lower the learning rate (or raise max_loss); the last "
                    "checkpoint is intact."
                )
            raise TrainingError(
                f"Non-finite loss {where}: training stopped. Lower the learning rate or check the data; "
                "the last checkpoint is intact."
            )

    # ------------------------------------------------------------------ checkpoints
    def request_stop(self, reason: str) -> None:
        """Ask the loop to checkpoint and stop after the current batch (signal handlers call this)."""
        self.stop_signal = reason

    def _stop_if_requested(self) -> None:
        if self.stop_signal:
            raise RunInterrupted(self.stop_signal)

    def stop_agreed(self) -> bool:
        """Whether to stop here; under torch.distributed all ranks agree (a signal may reach one rank
        a batch before another), so they checkpoint and stop at the same batch."""
        if self.ranks.active:
            flag = torch.tensor(1 if self.stop_signal else 0, device=self.device)
            if int(distributed.all_reduce_max(flag)) and not self.stop_signal:
                self.stop_signal = "a stop request to another rank"
        return self.stop_signal is not None

    # ------------------------------------------------------------------ several processes
    def wrap_training_step(self) -> None:
        """Under torch.distributed, the training step in DistributedDataParallel, built again when the
        trained parameters changed (each task's new head; growth inside a task is refused up front)."""
        if not self.ranks.active:
            return
        parameters = trained_parameters(self.method)
        if isinstance(self._step, DistributedDataParallel) and parameters == self._step_parameters:
            return
        self._step_parameters = parameters
        self.unwrap_training_step()
        self._step = DistributedDataParallel(
            TrainingStep(self.method),
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=self.config.distributed.find_unused_parameters,
        )

    def unwrap_training_step(self) -> None:
        """Back to the plain ``observe``; the old wrapper's gradient hooks leave the parameters (they
        would otherwise still fire in the next task's backward passes)."""
        if isinstance(self._step, DistributedDataParallel):
            self._step._remove_autograd_hooks()
        self._step = self.method.observe

    def sum_over_ranks(self, progress: EpochProgress) -> None:
        """An epoch's loss, accuracy and sample sums over all ranks (and the named loss terms' mean)."""
        if not self.ranks.active:
            return
        sums = torch.stack(
            [progress.loss_sum, progress.correct, torch.tensor(float(progress.seen), device=self.device)]
        )
        distributed.all_reduce_sum(sums)
        progress.loss_sum, progress.correct = sums[0].clone(), sums[1].clone()
        progress.seen = int(sums[2])
        for name, value in self.method._loss_sums.items():
            self.method._loss_sums[name] = distributed.all_reduce_sum(value.clone()) / self.ranks.world_size

    def share_state(self, next_task: int) -> None:
        """Rank 0's method, buffer, random state and records on every rank: what a checkpoint at the
        start of ``next_task`` holds, sent instead of written (exemplars, class means, Fisher, BiC's bias
        and every teacher are then identical everywhere, whatever the kernels)."""
        payload = self.checkpoint_payload(next_task, None) if self.ranks.is_main else None
        payload = distributed.broadcast_object(payload)
        if not self.ranks.is_main:
            self.restore(payload)

    def save_checkpoint(self, task_index: int, progress: EpochProgress | None) -> None:
        """Everything needed to continue: at a task start (``progress`` None) or inside a task. Under
        torch.distributed rank 0 writes it while the other ranks wait."""
        if self.checkpoints is not None:
            path = self.checkpoints.save(self.checkpoint_payload(task_index, progress))
            logger.info(
                "checkpoint %s (task %d%s)",
                path.name,
                task_index,
                "" if progress is None else f", epoch {progress.epoch}, batch {progress.next_batch}",
            )
        distributed.barrier()

    def checkpoint_payload(self, task_index: int, progress: EpochProgress | None) -> dict[str, Any]:
        task_state = None
        if progress is not None:
            run = self._task
            task_state = {
                "loader_images": run.loader.images.cpu(),
                "loader_labels": run.loader.labels.cpu(),
                "optimizer": run.optimizer.state_dict(),
                "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
                "progress": progress.state(),
                "losses": loss_sums(self.method),
                "task_seconds": time.perf_counter() - run.start,
            }
        return {
            "task": task_index,
            "task_state": task_state,
            "method": self.method.state_dict(),
            "buffer": self.buffer.state_dict() if self.buffer is not None else None,
            "trainer": {
                "accuracy_matrices": self.accuracy_matrices,
                "random_init_accuracy": self.random_init_accuracy,
                "task_seconds": self.task_seconds,
                "elapsed": self.elapsed_before + time.perf_counter() - self._fit_start,
                "generator": self.generator.get_state(),
            },
            "rng": rng_state(),
            "metrics_offset": self.metrics_offset(),
        }

    def restore(self, checkpoint: dict[str, Any]) -> int:
        """Load a checkpoint's state into the method, buffer and trainer; returns the task to run next."""
        self.method.load_state_dict(checkpoint["method"])
        self.method.to(self.device)
        if self.buffer is not None and checkpoint["buffer"] is not None:
            self.buffer.load_state_dict(checkpoint["buffer"])
        state = checkpoint["trainer"]
        self.accuracy_matrices = state["accuracy_matrices"]
        self.random_init_accuracy = state["random_init_accuracy"]
        self.task_seconds = state["task_seconds"]
        self.elapsed_before = state["elapsed"]
        self.generator.set_state(state["generator"])
        set_rng_state(checkpoint["rng"])
        return checkpoint["task"]

    # ------------------------------------------------------------------ pieces
    def evaluate(self, num_tasks: int) -> dict[str, list[float]]:
        """Accuracy on the first ``num_tasks`` tasks' test sets."""
        infos = [task.info for task in self.scenario.tasks[:num_tasks]]
        with self.fast.autocast():
            return evaluate(
                self.method, self.test_loaders[:num_tasks], infos, self.config.protocol == "task_il"
            )

    def train_loader(self, task: Task) -> DeviceLoader:
        return DeviceLoader(
            task.train_images,
            task.train_labels,
            self.config.batch_size,
            self.train_transform,
            shuffle=True,
            generator=self.generator,
            device=self.device,
            channels_last=self.fast.channels_last,
            ranks=self.ranks,
        )

    def test_loader(self, task: Task) -> DeviceLoader:
        """A task's test set; under torch.distributed, this rank's contiguous shard of it."""
        first, stop = distributed.shard_bounds(int(task.test_labels.shape[0]), self.ranks)
        return DeviceLoader(
            task.test_images[first:stop],
            task.test_labels[first:stop],
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
        optimizer = build_optimizer(optimizer_config, params, optimizer_key, fused=self.device.type == "cuda")
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
            **({"method": report} if (report := self.method.task_report()) else {}),
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
            **({"method_report": report} if (report := self.method.task_report()) else {}),
            **peak_memory_mb(),
        }

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)
