"""Evaluation of seen tasks: one forward pass per test batch gives class- and task-incremental accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from libcontinual import progress
from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.distributed import all_reduce_sum
from libcontinual.methods.base import Method, predict


@torch.no_grad()
def evaluate(
    method: Method,
    test_loaders: Sequence[DeviceLoader],
    tasks: Sequence[TaskInfo],
    task_il_only: bool = False,
) -> dict[str, list[float]]:
    """Accuracy (%) on each loader's task, per classifier and mode.

    Keys are ``<classifier>`` (class-incremental: argmax over every class the head has) and
    ``<classifier>_task_il`` (argmax within the task's own classes). ``tasks[j]`` describes loader j.
    ``task_il_only`` (the task_il protocol: the task id is known at test time) evaluates only the latter.
    Under torch.distributed each rank's loaders hold its shard of the test sets; the counts of correct
    predictions and of samples are summed over ranks, so every rank returns the whole test set's accuracy.
    """
    was_training = method.training
    method.eval()
    results: dict[str, list[float]] = {}
    for classifier in method.classifiers:
        class_il, task_il = [], []
        for task_id, loader in enumerate(test_loaders):
            correct_class_il = torch.zeros((), dtype=torch.int64, device=loader.device)
            correct_task_il = torch.zeros((), dtype=torch.int64, device=loader.device)
            task_classes = tasks[task_id].classes
            for batch in progress.iterate(loader, f"evaluating task {task_id} ({classifier})"):
                labels = batch["label"]
                if not task_il_only:
                    scores = _cover(method.scores(batch["image"], None, classifier), task_classes)
                    correct_class_il += (predict(scores) == labels).sum()
                if method.task_aware_inference or task_il_only:
                    scores = _cover(method.scores(batch["image"], task_id, classifier), task_classes)
                correct_task_il += (predict(scores, task_classes) == labels).sum()
            samples = torch.tensor(loader.num_samples, device=loader.device)
            counts = torch.stack([correct_class_il, correct_task_il, samples])
            correct_class_il, correct_task_il, samples = all_reduce_sum(counts).tolist()
            class_il.append(100.0 * correct_class_il / samples)
            task_il.append(100.0 * correct_task_il / samples)
        if not task_il_only:
            results[classifier] = class_il
        results[f"{classifier}_task_il"] = task_il
    method.train(was_training)
    return results


def _cover(scores: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Pad with -inf columns up to the task's classes: a task the head cannot predict yet scores as a
    constant guess (only a full accuracy matrix evaluates such tasks)."""
    missing = max(classes) + 1 - scores.shape[1]
    if missing <= 0:
        return scores
    return torch.nn.functional.pad(scores, (0, missing), value=float("-inf"))
