"""Optional run loggers chosen by the config's ``logger`` list (metrics.jsonl is always written).

- ``tensorboard``: event files in ``<run_dir>/tensorboard/`` — per epoch ``train/*`` scalars (loss,
  named loss terms, accuracy, lr, images/s, seconds) at step = epoch counted over all tasks; per task
  ``accuracy_after_task/<classifier>`` and ``task_accuracy/<classifier>/task_<j>`` at step = task, and
  the accuracy matrix as an image ``accuracy_matrix/<classifier>``.
- ``csv``: ``<run_dir>/metrics.csv``, one row per epoch record of metrics.jsonl.

Both continue correctly after ``libcontinual resume``: the CSV is rebuilt from the (truncated)
metrics.jsonl, and TensorBoard purges the events the resumed run will write again.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from libcontinual.config import ExperimentConfig
from libcontinual.engine.trainer import Callback, Trainer
from libcontinual.files import atomic_write_text

logger = logging.getLogger(__name__)

CSV_FIRST_COLUMNS = ("task", "epoch", "loss", "train_accuracy", "lr", "seconds", "images_per_second")


def global_epoch(config: ExperimentConfig, task: int, epoch: int) -> int:
    """Epochs trained before ``epoch`` of ``task``, over all tasks (the first task may have its own count)."""
    return epoch if task == 0 else config.first_task_epochs + (task - 1) * config.epoch + epoch


def weighted_accuracy(row: list[float], test_sizes: list[int]) -> float:
    """Accuracy over every sample of the evaluated tasks."""
    sizes = np.asarray(test_sizes[: len(row)], dtype=np.float64)
    return float(np.dot(row, sizes) / sizes.sum())


class TensorBoardLogger(Callback):
    """Writes scalars per epoch and per task and the accuracy matrix image to ``<run_dir>/tensorboard``."""

    def __init__(self, run_dir: Path) -> None:
        # needs the optional tensorboard package; the config refuses ``logger: [tensorboard]`` without it
        from torch.utils.tensorboard import SummaryWriter

        self.folder = Path(run_dir) / "tensorboard"
        self._writer_class = SummaryWriter
        self._writer: Any = None
        self._images = True

    def writer(self, step: int) -> Any:
        """Opened at the first event; ``purge_step`` drops what an interrupted run wrote from ``step`` on."""
        if self._writer is None:
            self._writer = self._writer_class(str(self.folder), purge_step=step)
        return self._writer

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        step = global_epoch(trainer.config, record["task"], record["epoch"])
        writer = self.writer(step)
        writer.add_scalar("train/loss", record["loss"], step)
        writer.add_scalar("train/accuracy", record["train_accuracy"], step)
        writer.add_scalar("train/lr", record["lr"], step)
        writer.add_scalar("train/epoch_seconds", record["seconds"], step)
        if record.get("images_per_second") is not None:
            writer.add_scalar("train/images_per_second", record["images_per_second"], step)
        for key, value in record.items():
            if key.startswith("loss_"):
                writer.add_scalar(f"train/{key}", value, step)
        writer.flush()

    def on_evaluation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        step = global_epoch(trainer.config, record["task"], record["epoch"])
        writer = self.writer(step)
        for name, row in record["accuracy"].items():
            writer.add_scalar(f"eval/{name}", weighted_accuracy(row, trainer.test_sizes()), step)

    def on_task_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        task = record["task"]
        writer = self.writer(task)
        for name, value in record["accuracy_after_task"].items():
            writer.add_scalar(f"accuracy_after_task/{name}", value, task)
        for name, row in record["accuracy"].items():
            for j, value in enumerate(row[: task + 1]):
                writer.add_scalar(f"task_accuracy/{name}/task_{j}", value, task)
        writer.add_scalar("task/seconds", record["seconds"], task)
        for name, matrix in trainer.accuracy_matrices.items():
            if not name.endswith("_task_il"):
                self.add_matrix_image(trainer, name, matrix, task)
        writer.flush()
        if task + 1 == len(trainer.scenario.tasks):
            writer.close()
            self._writer = None

    def add_matrix_image(self, trainer: Trainer, name: str, matrix: list[list[float]], task: int) -> None:
        if not self._images:
            return
        try:
            from libcontinual.report.plots import figure_png, heatmap_figure
        except ImportError:
            logger.warning("matplotlib is not installed: TensorBoard gets no accuracy-matrix images")
            self._images = False
            return
        size = len(trainer.scenario.tasks)
        square = np.full((size, size), np.nan)
        for i, row in enumerate(matrix):
            square[i, : len(row)] = row
        label = trainer.config.name or trainer.config.method.name
        title = f"{label}: accuracy matrix ({name}), %, after task {task}"
        image = figure_png(heatmap_figure(square, None, title))
        self._writer.add_image(f"accuracy_matrix/{name}", image, task, dataformats="HWC")


class CsvLogger(Callback):
    """``metrics.csv``: one row per epoch, the same numbers as metrics.jsonl's epoch records.

    Columns: task, epoch, loss, train_accuracy, lr, seconds, images_per_second, then the named loss
    terms in the order they first appear (empty where an epoch did not log a term). The file is
    rewritten atomically after each epoch, so new loss terms (e.g. distillation from task 1) get columns.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        jsonl = Path(run_dir) / "metrics.jsonl"
        self.rows: list[dict[str, Any]] = []
        if jsonl.is_file():
            records = (json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines() if line)
            self.rows = [r for r in records if r.get("event") == "epoch"]

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.rows.append(record)
        atomic_write_text(self.path, csv_text(self.rows))


def csv_text(rows: list[dict[str, Any]]) -> str:
    """CSV of epoch records with full-precision numbers (``repr``), so values read back exactly."""
    extra = dict.fromkeys(k for row in rows for k in row if k not in CSV_FIRST_COLUMNS and k != "event")
    columns = [*CSV_FIRST_COLUMNS, *extra]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else repr(row[k]) for k in columns})
    return buffer.getvalue()


LOGGERS: dict[str, type[Callback]] = {"tensorboard": TensorBoardLogger, "csv": CsvLogger}


def logger_callbacks(config: ExperimentConfig, run_dir: Path) -> list[Callback]:
    """The callbacks for ``config.logger`` (names validated by the config), writing into ``run_dir``."""
    return [LOGGERS[name](run_dir) for name in config.logger]
