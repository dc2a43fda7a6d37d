"""Trainer callbacks that tests use to look inside a run."""

from __future__ import annotations

import copy
from typing import Any

from libcontinual.engine.trainer import Callback


class KeepMethods(Callback):
    """Keeps a copy of the trained method and of the buffer after every task."""

    def __init__(self) -> None:
        self.methods: list[Any] = []
        self.buffers: list[Any] = []

    def on_task_end(self, trainer, record) -> None:
        self.methods.append(copy.deepcopy(trainer.method))
        self.buffers.append(copy.deepcopy(trainer.buffer))
