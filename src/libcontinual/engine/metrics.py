"""Continual-learning metrics: pure functions of the accuracy matrix.

``matrix[i][j]`` is the accuracy (in %) on task j's test set after training task i, for j <= i
(rows may be longer when every task is evaluated, as GEM's FWT needs). ``test_sizes[j]`` is the
number of test samples of task j.
"""

from __future__ import annotations

from collections.abc import Sequence

Matrix = Sequence[Sequence[float]]


def accuracy_curve(matrix: Matrix, test_sizes: Sequence[int]) -> list[float]:
    """Accuracy after each task over all seen test samples (PyCIL's top-1): sample-weighted."""
    curve = []
    for i, row in enumerate(matrix):
        seen = range(i + 1)
        total = sum(test_sizes[j] for j in seen)
        curve.append(sum(row[j] * test_sizes[j] for j in seen) / total)
    return curve


def mean_task_accuracy(matrix: Matrix) -> list[float]:
    """Mean over seen tasks of per-task accuracy after each task (LibContinual's ``avg_acc``)."""
    return [sum(row[: i + 1]) / (i + 1) for i, row in enumerate(matrix)]


def average_incremental_accuracy(curve: Sequence[float]) -> float:
    """Mean of the accuracy-after-each-task curve (Rebuffi et al., iCaRL)."""
    return sum(curve) / len(curve)


def forgetting(matrix: Matrix) -> float | None:
    """Chaudhry et al. 2018: mean over old tasks j of max_{l<T} R[l][j] - R[T][j].

    Every old task counts, including the most recent one (LibContinual's code skips it).
    None when only one task has been learned.
    """
    last = len(matrix) - 1
    if last < 1:
        return None
    drops = [max(matrix[l][j] for l in range(j, last)) - matrix[last][j] for j in range(last)]
    return sum(drops) / len(drops)


def backward_transfer(matrix: Matrix) -> float | None:
    """Lopez-Paz & Ranzato 2017: mean over old tasks j of R[T][j] - R[j][j]; None for one task."""
    last = len(matrix) - 1
    if last < 1:
        return None
    return sum(matrix[last][j] - matrix[j][j] for j in range(last)) / last


def forward_transfer(matrix: Matrix, random_init_accuracy: Sequence[float]) -> float | None:
    """Lopez-Paz & Ranzato 2017 (paper's definition): mean over j >= 1 of R[j-1][j] - b_j.

    Needs full rows (every task evaluated after each task) and b_j, the accuracy of the randomly
    initialised model on task j. GEM's code divides by T instead of T-1; we follow the paper.
    """
    tasks = len(matrix)
    if tasks < 2:
        return None
    if any(len(row) < tasks for row in matrix):
        raise ValueError("forward_transfer needs every task evaluated after each task (full rows)")
    return sum(matrix[j - 1][j] - random_init_accuracy[j] for j in range(1, tasks)) / (tasks - 1)


def summarize(
    matrix: Matrix, test_sizes: Sequence[int], random_init_accuracy: Sequence[float] | None = None
) -> dict[str, float | list[float] | None]:
    """All summary metrics of one accuracy matrix, named as they appear in results.json.

    ``fwt`` is present when ``random_init_accuracy`` is given (full accuracy matrix).
    """
    curve = accuracy_curve(matrix, test_sizes)
    per_task = mean_task_accuracy(matrix)
    summary: dict[str, float | list[float] | None] = {
        "accuracy_curve": curve,
        "mean_task_accuracy_curve": per_task,
        "last_accuracy": curve[-1],
        "average_incremental_accuracy": average_incremental_accuracy(curve),
        "last_mean_task_accuracy": per_task[-1],
        "forgetting": forgetting(matrix),
        "bwt": backward_transfer(matrix),
    }
    if random_init_accuracy is not None:
        summary["acc"] = sum(matrix[-1]) / len(matrix[-1])  # GEM's ACC: mean of the final row
        summary["fwt"] = forward_transfer(matrix, random_init_accuracy)
    return summary
