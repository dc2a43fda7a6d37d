"""The demo, the first run a user sees, shows the story: each new task is learned, finetune forgets the old.

Slow (the whole demo, about a minute on 2 CPU cores): ``python -m pytest -m slow tests/test_demo.py``.
"""

from __future__ import annotations

import pytest

import libcontinual

CHANCE = 50.0  # two classes per task
MARGIN = 10.0


@pytest.mark.slow
def test_demo_learns_every_task_and_finetune_forgets_the_old_ones(tmp_path):
    result = libcontinual.run("demo", save_path=str(tmp_path / "runs"), num_threads=2)
    matrix = result.accuracy_matrix["cnn"]
    assert len(matrix) == 5
    for task, row in enumerate(matrix):
        # on its own test images, over every class seen so far, right after it is learned
        assert row[task] >= CHANCE + MARGIN, f"task {task} reached only {row[task]:.1f} %: {matrix}"
    assert all(accuracy < 10.0 for accuracy in matrix[-1][:-1]), matrix  # catastrophic forgetting
