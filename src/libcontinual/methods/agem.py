"""Averaged GEM (Chaudhry, Ranzato, Rohrbach & Elhoseiny, "Efficient Lifelong Learning with A-GEM",
ICLR 2019).

before_task: as GEM (a ring memory of ``n_memories`` per task); at the first task, seed A-GEM's own
    generator (saved in the state dict) from the run's seeded generator.
observe: as GEM (cross-entropy, write the batch into the task's ring memory).
optimizer_step: one reference gradient g_ref on ``memory_batch_size`` examples drawn without
    replacement from all past tasks' memories (task-incremental: each example's loss over its own
    task's classes); if gᵀg_ref < 0 step along g − (gᵀg_ref / g_refᵀg_ref) g_ref, else along g.
after_task: nothing.
Measured, G20 (benchmarks/results/g20/G20.md, 256 memories per task, reference batch 256, seed 0):
permuted MNIST ACC 64.7, BWT -15.2, FWT 1.8; rotated MNIST ACC 45.7, BWT -41.8, FWT 70.2 (finetune:
49.2 / -30.0 and 40.1 / -47.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.methods.gem import GEM, flat_gradient
from libcontinual.registry import register_method


def agem_project(gradient: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """g − (gᵀg_ref / g_refᵀg_ref) g_ref when gᵀg_ref < 0, else g (no host synchronisation)."""
    dot = gradient @ reference
    return gradient - (dot.clamp(max=0.0) / (reference @ reference)) * reference


@register_method("agem")
class AGEM(GEM):
    """A-GEM: GEM's memory with one averaged constraint; no QP."""

    solves_qp = False

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        num_class: int,
        n_memories: int = 256,
        memory_batch_size: int = 256,
        task_incremental: bool = False,
    ) -> None:
        super().__init__(backbone, feat_dim, num_class, n_memories, 0.0, task_incremental)
        if memory_batch_size < 1:
            raise ValueError(f"memory_batch_size must be at least 1, got {memory_batch_size}")
        self.memory_batch_size = memory_batch_size
        self.generator: torch.Generator | None = None  # draws the reference batches; saved for resume

    def get_extra_state(self) -> Any:
        generator = None if self.generator is None else self.generator.get_state()
        return {**super().get_extra_state(), "generator": generator}

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        self.generator = None
        if state["generator"] is not None:
            self.generator = torch.Generator(self.device)
            self.generator.set_state(state["generator"])

    def before_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        """As GEM; the first task seeds A-GEM's own generator from the run's seeded generator."""
        super().before_task(task, buffer, train_loader, test_loaders)
        if self.generator is None:
            device = train_loader.generator_device
            seed = torch.randint(2**62, (1,), generator=train_loader.generator, device=device)
            self.generator = torch.Generator(self.device)
            self.generator.manual_seed(int(seed))

    def constrain(self, gradient: torch.Tensor, memory_gradients: torch.Tensor) -> torch.Tensor:
        return agem_project(gradient, memory_gradients[0])

    def memory_gradients(self, params: Sequence[nn.Parameter]) -> torch.Tensor:
        """(1, parameters): the gradient on one random batch of all past tasks' memories."""
        filled = [min(count, self.n_memories) for count in self.memory_counts[:-1]]
        pick = torch.randperm(sum(filled), generator=self.generator, device=self.device)
        pick = pick[: self.memory_batch_size]
        sizes = torch.tensor(filled, device=self.device)
        ends = sizes.cumsum(0)
        tasks = torch.searchsorted(ends, pick, right=True)
        slots = pick - (ends - sizes)[tasks]
        logits = self.task_logits(self.backbone(self.normalise(self.memory_images[tasks, slots])), tasks)
        loss = F.cross_entropy(logits, self.memory_labels[tasks, slots])
        return flat_gradient(torch.autograd.grad(loss, params, allow_unused=True), params)[None]
