"""The shared life cycle of generative-replay methods (ABD, DeepInversion): no exemplars, a generator.

before_task: refuse a buffer (memory 0); build the generator once, from the image shape of the first task.
after_task: freeze the trained model as ``teacher``; unless this was the last task, train the generator
    against it (``generator_steps`` Adam steps, the four losses of ``Dreamer.loss_terms``).
``synthetic_for(batch)``: as many synthetic images as the batch has real ones; the subclass runs the teacher
    once over real and synthetic images together and labels the synthetic ones by its argmax over the
    old classes.
``write_artifacts``: after each task, ``dreams/task-<t>.png`` (a grid per class) and ``dreams/task-<t>.json``
    (loss curve, generator time, the teacher's class balance and confidence on synthetic images).
Subclasses write ``observe``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.distributed import current, shard_bounds
from libcontinual.errors import ConfigError
from libcontinual.files import atomic_write_text
from libcontinual.generative.dreamer import Dreamer, GeneratorReport, GeneratorSettings
from libcontinual.generative.pictures import class_grid, to_unit_range, write_png
from libcontinual.methods.base import Batch, Method, frozen_copy, refuse_buffer

logger = logging.getLogger(__name__)

PICTURES_PER_CLASS = 8
BALANCE_SAMPLES = 1024


class GenerativeReplay(Method):
    """Base of the data-free methods that replay a generator's images (see the module docstring)."""

    exemplar_free = True

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        num_class: int,
        generator_steps: int = 10_000,
        generator_batch_size: int = 128,
        generator_lr: float = 1e-3,
        bn_weight: float = 50.0,
        smoothness_weight: float = 1e-3,
        content_temperature: float = 1000.0,
        z_dim: int = 1000,
    ) -> None:
        super().__init__(backbone, feat_dim, num_class)
        if generator_steps < 0 or generator_batch_size < 2:
            raise ConfigError(
                "method.kwargs: generator_steps must be >= 0 and generator_batch_size >= 2 (BatchNorm), got "
                f"{generator_steps} and {generator_batch_size}"
            )
        self.settings = GeneratorSettings(
            steps=generator_steps,
            batch_size=generator_batch_size,
            lr=generator_lr,
            bn_weight=bn_weight,
            smoothness_weight=smoothness_weight,
            content_temperature=content_temperature,
            z_dim=z_dim,
        )
        # Drawn from the run's seeded global RNG, so the seed of the config fixes every synthetic image.
        self.generator_seed = int(torch.randint(0, 2**31 - 1, (1,)))
        self.dreamer: Dreamer | None = None
        self.teacher: nn.Module | None = None
        self.report: GeneratorReport | None = None
        self.report_task: int | None = None
        self.normalization: tuple[Sequence[float], Sequence[float]] | None = None

    # ------------------------------------------------------------------ state
    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """A checkpoint with a generator recreates it (its shape is in the checkpoint) before loading."""
        extra = state_dict.get("dreamer._extra_state")
        if self.dreamer is None and extra is not None:
            self.build_dreamer(extra["image_shape"])
        return super().load_state_dict(state_dict, strict, assign)

    def build_dreamer(self, image_shape: Sequence[int]) -> None:
        self.dreamer = Dreamer(tuple(image_shape), self.generator_seed, self.settings).to(self.device)

    # ------------------------------------------------------------------ hooks
    def before_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        refuse_buffer(buffer, type(self).__name__)
        if self.dreamer is None:
            self.build_dreamer(train_loader.images.shape[1:])
        super().before_task(task, buffer, train_loader, test_loaders)

    def after_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        """Freeze the model as the next task's teacher and train the generator against it."""
        self.teacher = frozen_copy(self.backbone)
        transform = train_loader.transform
        mean, std = getattr(transform, "mean", None), getattr(transform, "std", None)
        self.normalization = (mean, std) if mean is not None and std is not None else None
        self.report, self.report_task = None, task.index
        if task.index + 1 < task.num_tasks and self.settings.steps > 0:
            logger.info("task %d: training the generator for %d steps", task.index, self.settings.steps)
            self.report = self.dreamer.fit(self.teacher, task.total_classes)
            last = self.report.history[-1]
            logger.info(
                "task %d: generator trained for %d steps in %.1f s (%.1f steps/s); last loss %.4f "
                "(content %.4f, diversity %.4f, bn %.4f, smooth %.5f)",
                task.index,
                self.report.steps,
                self.report.seconds,
                self.report.steps_per_second or 0.0,
                last["loss"],
                last["loss_content"],
                last["loss_diversity"],
                last["loss_bn"],
                last["loss_smooth"],
            )

    def synthetic_for(self, batch: Batch) -> torch.Tensor:
        """The synthetic part of a training batch: as many images as it has real ones. Under
        torch.distributed every rank draws the global batch's z (the ranks share their random state) and
        generates its shard's images only, so together they replay what one process would."""
        if "global_size" not in batch:
            return self.dreamer.images(batch["label"].shape[0])
        first, stop = shard_bounds(batch["global_size"], current())
        rows = slice(first, stop) if stop > first else slice(0, 1)  # an empty shard's weighed-0 row
        return self.dreamer.images(batch["global_size"], rows=rows)

    # ------------------------------------------------------------------ pictures
    def write_artifacts(self, folder: Path, task_index: int) -> None:
        """``dreams/task-<t>.png`` and ``.json`` in the run directory after a task that trained the generator.

        The pictures draw z from their own RNG (seeded by the task index), so writing them changes nothing
        in training.
        """
        if self.report is None or self.report_task != task_index:
            return
        num_classes = self.report.num_classes
        rng = torch.Generator(device=self.dreamer.device)
        rng.manual_seed(task_index)
        images, labels, logits = [], [], []
        for _ in range(BALANCE_SAMPLES // 256):
            x, y, z = self.dreamer.sample(self.teacher, 256, num_classes, rng)
            images.append(x)
            labels.append(y)
            logits.append(z)
        x, y, z = torch.cat(images), torch.cat(labels), torch.cat(logits)
        mean, std = self.normalization if self.normalization is not None else (None, None)
        grid = class_grid(to_unit_range(x, mean, std), y, num_classes, PICTURES_PER_CLASS)
        out = Path(folder) / "dreams"
        scale = max(1, 64 // max(x.shape[-2:]))
        write_png(out / f"task-{task_index}.png", grid, scale)
        record = {
            "task": task_index,
            "generator": self.report.to_dict(),
            "synthetic_class_counts": torch.bincount(y, minlength=num_classes).tolist(),
            "teacher_mean_confidence": float(torch.softmax(z, dim=1).amax(dim=1).mean()),
            "samples": int(y.shape[0]),
        }
        atomic_write_text(out / f"task-{task_index}.json", json.dumps(record, indent=2) + "\n")
