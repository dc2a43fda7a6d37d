"""Read finished run directories — single runs, multi-seed runs, loose seed runs — into one structure.

Everything is kept per seed (a single run is one seed) and aggregated here with numpy's mean and
population std (ddof = 0), as ``engine/seeds.py`` does, so tables and figures of single and
multi-seed runs come from the same code.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from libcontinual.errors import LibContinualError

logger = logging.getLogger(__name__)

# Config keys that differ between the seeds of one experiment (or only say where it was written).
SEED_KEYS = ("seed", "seeds", "repeat", "save_path", "resume")


class ReportError(LibContinualError):
    """A run directory cannot be reported or compared (missing, unfinished, or not comparable)."""


@dataclass(frozen=True)
class Stat:
    """A number over seeds: ``values`` per seed, their mean and std (0 for a single value)."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat | None:
        """None when any seed lacks the value (e.g. forgetting of a one-task run)."""
        present = [float(v) for v in values if v is not None]
        return cls(tuple(present)) if present and len(present) == len(values) else None

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; a damaged line is a ReportError naming the file and line."""
    records = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip("\0 \t"):
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ReportError(
                f"{path} line {number} is not a JSON record ({exc.msg}); the file is damaged."
            ) from None
        if isinstance(record, dict):
            records.append(record)
    return records


@dataclass(frozen=True)
class SeedRun:
    """One trained model: its run directory, results.json and the epoch records of metrics.jsonl."""

    path: Path
    results: dict[str, Any]
    epochs: tuple[dict[str, Any], ...]

    @classmethod
    def load(cls, path: Path) -> SeedRun:
        results = read_results(path)
        if results.get("aggregate"):
            raise ReportError(f"{path} is the aggregate of a multi-seed run, not one seed's run.")
        metrics = path / "metrics.jsonl"
        epochs: tuple[dict[str, Any], ...] = ()
        if metrics.is_file():
            epochs = tuple(r for r in read_metrics(metrics) if r.get("event") == "epoch")
        return cls(path, results, epochs)

    @property
    def seed(self) -> int:
        return int(self.results["config"]["seed"])

    @property
    def test_sizes(self) -> list[int]:
        return list(self.results["test_sizes"])

    def matrix(self, classifier: str) -> list[list[float]]:
        return self.results["accuracy_matrix"][classifier]

    def images_per_second(self) -> float | None:
        """Mean training throughput over the epochs that recorded one."""
        speeds = [r["images_per_second"] for r in self.epochs if r.get("images_per_second")]
        return float(np.mean(speeds)) if speeds else None


@dataclass
class Run:
    """A run as a researcher names it in a table: one method's experiment over one or more seeds."""

    path: Path
    seeds: list[SeedRun]
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or self.config.get("name") or self.method

    @property
    def config(self) -> dict[str, Any]:
        return self.seeds[0].results["config"]

    @property
    def method(self) -> str:
        return str(self.config["method"]["name"])

    @property
    def multi_seed(self) -> bool:
        return len(self.seeds) > 1

    @property
    def seed_values(self) -> list[int]:
        return [s.seed for s in self.seeds]

    @property
    def classifiers(self) -> list[str]:
        """Evaluation names in results order (e.g. cnn, nme, cnn_task_il)."""
        return list(self.seeds[0].results["accuracy_matrix"])

    @property
    def class_incremental_classifiers(self) -> list[str]:
        return [name for name in self.classifiers if not name.endswith("_task_il")]

    @property
    def num_tasks(self) -> int:
        return len(self.seeds[0].matrix(self.classifiers[0]))

    @property
    def protocol(self) -> dict[str, Any]:
        """results.json's protocol, with the class order of every seed under ``class_orders``."""
        first = self.seeds[0].results["protocol"]
        shared = {k: v for k, v in first.items() if k not in ("class_order", "tasks")}
        return {**shared, "class_orders": [s.results["protocol"]["class_order"] for s in self.seeds]}

    def task_classes(self) -> list[list[str]] | None:
        """Class names of each task, when every seed learned the same ones."""
        per_seed = [[t["class_names"] for t in s.results["protocol"]["tasks"]] for s in self.seeds]
        return per_seed[0] if all(p == per_seed[0] for p in per_seed) else None

    def classes_seen(self) -> list[int] | None:
        """Distinct classes learned up to each task; None when that does not grow (domain-incremental)."""
        seen: set[int] = set()
        counts = []
        for task in self.seeds[0].results["protocol"]["tasks"]:
            seen.update(task["classes"])
            counts.append(len(seen))
        return counts if len(set(counts)) == len(counts) else None

    def describe_protocol(self) -> str:
        """One line for titles, e.g. ``cifar10 B2 Inc2, 5 tasks, resnet32``."""
        p = self.protocol
        split = f"B{p['init_cls_num']} Inc{p['inc_cls_num']}"
        text = f"{p['dataset']} {split}, {p['task_num']} tasks, {p['backbone']}"
        if p.get("scenario", "class_incremental") != "class_incremental":
            text += f", {p['scenario']}"
        return text

    def describe_seeds(self) -> str:
        if not self.multi_seed:
            return f"seed {self.seeds[0].seed}"
        return f"{len(self.seeds)} seeds ({', '.join(map(str, self.seed_values))})"

    def title(self) -> str:
        return f"{self.label} — {self.describe_protocol()}, {self.describe_seeds()}"

    # ------------------------------------------------------------------ numbers over seeds
    def per_seed(self, value: Callable[[SeedRun], float | None]) -> Stat | None:
        return Stat.of([value(s) for s in self.seeds])

    def metric(self, classifier: str, key: str) -> Stat | None:
        """A summary metric of results.json (``last_accuracy``, ``forgetting`` ...) over seeds."""
        return self.per_seed(lambda s: s.results["summary"][classifier].get(key))

    def curve(self, classifier: str) -> np.ndarray:
        """Accuracy after each task, (seeds, tasks)."""
        return np.array([s.results["summary"][classifier]["accuracy_curve"] for s in self.seeds])

    def matrices(self, classifier: str) -> np.ndarray:
        """Accuracy matrices (seeds, tasks, tasks); NaN where a task was not evaluated."""
        tasks = self.num_tasks
        out = np.full((len(self.seeds), tasks, tasks), np.nan)
        for k, seed in enumerate(self.seeds):
            for i, row in enumerate(seed.matrix(classifier)):
                out[k, i, : len(row)] = row
        return out

    def old_new(self, classifier: str) -> tuple[np.ndarray, np.ndarray]:
        """Accuracy on old tasks (before the current one, sample-weighted) and on the current task.

        Both (seeds, tasks); old is NaN after the first task, which has no old tasks.
        """
        old = np.full((len(self.seeds), self.num_tasks), np.nan)
        new = np.full((len(self.seeds), self.num_tasks), np.nan)
        for k, seed in enumerate(self.seeds):
            sizes = np.asarray(seed.test_sizes, dtype=np.float64)
            for i, row in enumerate(seed.matrix(classifier)):
                new[k, i] = row[i]
                if i > 0:
                    old[k, i] = float(np.dot(row[:i], sizes[:i]) / sizes[:i].sum())
        return old, new

    def wall_time(self) -> Stat | None:
        return self.per_seed(lambda s: s.results.get("wall_time_s"))

    def task_wall_time(self) -> np.ndarray | None:
        times = [s.results.get("task_wall_time_s") for s in self.seeds]
        return None if any(t is None for t in times) else np.array(times, dtype=np.float64)

    def images_per_second(self) -> Stat | None:
        return self.per_seed(SeedRun.images_per_second)

    def peak_memory_mb(self, key: str) -> float | None:
        """The largest ``peak_rss_mb`` / ``peak_gpu_mb`` over seeds."""
        values = [s.results.get(key) for s in self.seeds]
        present = [v for v in values if v is not None]
        return max(present) if present else None


def read_results(path: Path) -> dict[str, Any]:
    results_path = Path(path) / "results.json"
    if not Path(path).is_dir():
        raise ReportError(f"Run directory {path} does not exist.")
    if not results_path.is_file():
        raise ReportError(
            f"{path} has no results.json: it is not a finished run directory "
            f"(unfinished runs continue with: libcontinual resume {path})."
        )
    try:
        return json.loads(results_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportError(f"{results_path} cannot be read: {exc}") from None


def load_run(path: str | Path) -> Run:
    """A single run, or a multi-seed run with its ``seed-*`` sub-runs (listed in the aggregate)."""
    path = Path(path)
    results = read_results(path)
    if not results.get("aggregate"):
        return Run(path, [SeedRun.load(path)])
    return Run(path, [SeedRun.load(path / name) for name in results["runs"]])


def experiment_key(config: dict[str, Any]) -> str:
    """Equal for runs that differ only in seed (and where they were saved).

    ``order_seed`` counts as part of the seed when it equals it (as in multi-seed runs).
    """
    key = {k: v for k, v in config.items() if k not in SEED_KEYS}
    if config.get("order_seed") == config.get("seed"):
        key["order_seed"] = "seed"
    return json.dumps(key, sort_keys=True)


def finished_at(seed: SeedRun) -> float:
    path = seed.path / "results.json"
    return path.stat().st_mtime if path.exists() else 0.0


def keep_newer(group: Run, seed: SeedRun) -> None:
    """Two runs of one experiment with one seed (the same config run twice): the newer one counts."""
    index = group.seed_values.index(seed.seed)
    older = group.seeds[index]
    newer, dropped = (seed, older) if finished_at(seed) >= finished_at(older) else (older, seed)
    group.seeds[index] = newer
    if group.path == dropped.path:
        group.path = newer.path
    logger.warning(
        "%s and %s are the same experiment with the same seed %d: comparing the newer, %s "
        "(pass only one of them to choose)",
        older.path,
        seed.path,
        seed.seed,
        newer.path,
    )


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Load runs for a comparison; separate runs of one experiment with different seeds become one.

    Seed sweeps launched as independent jobs thus appear as one row with mean ± std. Labels that
    would repeat get the run directory's name appended.
    """
    runs: list[Run] = []
    groups: dict[str, Run] = {}
    for path in paths:
        run = load_run(path)
        key = experiment_key(run.config)
        group = None if run.multi_seed else groups.get(key)
        if group is None:
            if not run.multi_seed:
                groups[key] = run
            runs.append(run)
            continue
        if run.seed_values[0] in group.seed_values:
            keep_newer(group, run.seeds[0])
            continue
        group.seeds.append(run.seeds[0])
        group.seeds.sort(key=lambda s: s.seed)
        logger.info("%s joins %s as seed %d of the same experiment", run.path, group.path, run.seed_values[0])
    labels = [run.label for run in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.label = f"{run.label} ({run.path.name})"
    return runs
