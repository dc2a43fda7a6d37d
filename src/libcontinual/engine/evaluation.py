"""Evaluation of seen tasks: one forward pass per test batch gives class- and task-incremental accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from libcontinual import progress
from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.distributed import all_reduce_sum
from libcontinual.methods.base import Method, predict


@torch.inference_mode()
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
    Every classifier's scores of a batch come from one ``method.scores_per_classifier`` call. Under
    torch.distributed each rank's loaders hold its shard of the test sets and the counts of correct
    predictions and of samples are summed over ranks: every rank returns the whole test set's accuracy.
    """
    was_training = method.training
    method.eval()
    classifiers = method.classifiers
    class_il: dict[str, list[float]] = {name: [] for name in classifiers}
    task_il: dict[str, list[float]] = {name: [] for name in classifiers}
    for task_id, loader in enumerate(test_loaders):
        zero = torch.zeros((), dtype=torch.int64, device=loader.device)
        correct_class_il = {name: zero.clone() for name in classifiers}
        correct_task_il = {name: zero.clone() for name in classifiers}
        task_classes = tasks[task_id].classes
        for batch in progress.iterate(loader, f"evaluating task {task_id}"):
            images, labels = batch["image"], batch["label"]
            scores = {} if task_il_only else method.scores_per_classifier(images, None)
            if method.task_aware_inference or task_il_only:
                task_scores = method.scores_per_classifier(images, task_id)
            else:
                task_scores = scores
            for name in classifiers:
                if not task_il_only:
                    correct_class_il[name] += (predict(_cover(scores[name], task_classes)) == labels).sum()
                covered = _cover(task_scores[name], task_classes)
                correct_task_il[name] += (predict(covered, task_classes) == labels).sum()
        # Under torch.distributed each rank holds its shard of the test set: sum the counts over ranks.
        samples = torch.tensor(loader.num_samples, device=loader.device)
        counts = torch.stack([*correct_class_il.values(), *correct_task_il.values(), samples])
        *correct, samples = all_reduce_sum(counts).tolist()
        for index, name in enumerate(classifiers):
            class_il[name].append(100.0 * correct[index] / samples)
            task_il[name].append(100.0 * correct[len(classifiers) + index] / samples)
    method.train(was_training)
    results: dict[str, list[float]] = {}
    for name in classifiers:
        if not task_il_only:
            results[name] = class_il[name]
        results[f"{name}_task_il"] = task_il[name]
    return results


def _cover(scores: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """Pad with -inf columns up to the task's classes: a task the head cannot predict yet scores as a
    constant guess (only a full accuracy matrix evaluates such tasks)."""
    missing = max(classes) + 1 - scores.shape[1]
    if missing <= 0:
        return scores
    return torch.nn.functional.pad(scores, (0, missing), value=float("-inf"))
