"""Multi-seed runs: one run directory per seed (``seed-<s>/``) and an aggregate ``results.json``.

Each seed fixes initialisation, batches, augmentation and — unless ``class_order`` is explicit — the
class order (``order_seed = seed``), as papers that report mean ± std over class orders do. The
standard deviation is numpy's default (population, ddof = 0).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from libcontinual import distributed
from libcontinual.config import ExperimentConfig, save_config
from libcontinual.engine.experiment import RunResult, check_save_path, find_unfinished_run, run_experiment
from libcontinual.engine.run_dir import RunDirectory, provenance
from libcontinual.engine.trainer import Callback

logger = logging.getLogger(__name__)

SCALAR_METRICS = (
    "last_accuracy",
    "average_incremental_accuracy",
    "last_mean_task_accuracy",
    "forgetting",
    "bwt",
    "acc",
    "fwt",
)


def seed_config(config: ExperimentConfig, seed: int, parent: Path) -> ExperimentConfig:
    order_seed = seed if config.class_order is None else config.order_seed
    return dataclasses.replace(
        config, seed=seed, order_seed=order_seed, seeds=[], repeat=1, resume=False, save_path=str(parent)
    )


def run_seeds(
    config: ExperimentConfig,
    config_path: Path | None,
    callbacks: Sequence[Callback] = (),
    resume_dir: Path | None = None,
    trust: bool = False,
) -> RunResult:
    """Run (or finish) every seed, then write the aggregate results.json in the parent directory.
    Under torchrun every rank runs each seed; rank 0 decides what each seed needs and writes."""
    is_main = distributed.current().is_main
    if resume_dir is None and config.resume:
        resume_dir = find_unfinished_run(config)
    parent = None
    if is_main and resume_dir is None:
        check_save_path(config.save_path)
        parent = RunDirectory.create(config.save_path, config.name or config.method.name).path
        save_config(config, parent / "config.yaml")
    elif is_main:
        parent = Path(resume_dir)
    parent = Path(distributed.broadcast_object(None if parent is None else str(parent)))
    per_seed = []
    for seed in config.seed_list:
        child = seed_config(config, seed, parent)
        path = parent / f"seed-{seed}"
        state = "finished" if (path / "results.json").exists() else "started" if path.exists() else "new"
        state = distributed.broadcast_object(state)
        if state == "finished":
            logger.info("seed %d already finished in %s", seed, path)
            per_seed.append(RunResult(path, json.loads((path / "results.json").read_text())))
        elif state == "started":
            per_seed.append(run_experiment(child, config_path, callbacks, resume_dir=path, trust=trust))
        else:
            per_seed.append(run_experiment(child, config_path, callbacks, run_path=path))
    if not is_main:
        return RunResult(run_dir=parent, results={})
    results = aggregate([r.results for r in per_seed], [r.run_dir.name for r in per_seed])
    RunDirectory(parent).write_results(results)
    logger.info("aggregate of %d seeds written to %s", len(per_seed), parent / "results.json")
    return RunResult(run_dir=parent, results=results)


def mean_std(values: Sequence[float | None]) -> dict[str, Any] | None:
    if any(v is None for v in values):
        return None
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "values": [float(v) for v in array]}


def aggregate(per_seed: list[dict[str, Any]], run_names: list[str]) -> dict[str, Any]:
    """Mean ± std over seeds of every summary metric and of the accuracy-after-each-task curve."""
    first = per_seed[0]
    summary: dict[str, dict[str, Any]] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    for name in first["summary"]:
        metrics = [run["summary"][name] for run in per_seed]
        summary[name] = {
            key: mean_std([m.get(key) for m in metrics]) for key in SCALAR_METRICS if key in metrics[0]
        }
        curve = np.asarray([m["accuracy_curve"] for m in metrics], dtype=np.float64)
        curves[name] = {"mean": curve.mean(axis=0).tolist(), "std": curve.std(axis=0).tolist()}
    protocol = {k: v for k, v in first["protocol"].items() if k not in ("class_order", "tasks")}
    return {
        "aggregate": True,
        "seeds": [run["config"]["seed"] for run in per_seed],
        "runs": run_names,
        "config": {**first["config"], "seed": None, "order_seed": None},
        "protocol": {**protocol, "class_orders": [run["protocol"]["class_order"] for run in per_seed]},
        "summary": summary,
        "accuracy_curve": curves,
        "wall_time_s": mean_std([run["wall_time_s"] for run in per_seed]),
        "peak_rss_mb": max(run["peak_rss_mb"] for run in per_seed),
        "provenance": provenance(),
    }
