"""Gradient Episodic Memory (Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning",
NeurIPS 2017; facts from facebookresearch/GradientEpisodicMemory model/gem.py).

before_task: open an empty ring memory of ``n_memories`` uint8 slots for the new task.
observe: cross-entropy on the batch (``task_incremental``: logits outside the task's classes masked),
    then write the batch into the task's ring memory, which keeps its most recent ``n_memories`` examples.
optimizer_step: gradient g of the batch and g_k of each past task's whole memory (task-incremental:
    that task's logits only); if any <g, g_k> < 0, solve GEM's dual QP with quadprog
    (P = M Mᵀ + 1e-3 I, q = -M g, v >= memory_strength) and step along g̃ = Mᵀv + g.
after_task: nothing (the memory filled during training).
Measured, G20 (benchmarks/results/g20/G20.md, MLP 784-100-100-10, 256 memories, seed 0): permuted
MNIST ACC 82.1, BWT +4.2, FWT 0.3; rotated MNIST ACC 85.3, BWT +2.1, FWT 66.6 (finetune: 49.2 / -30.0
and 40.1 / -47.3; the paper's Figure 1 reads about 83 and 86, unverified). memory_strength 0: 77.8, 68.0.

Deviations: the ring keeps exactly the most recent examples of the task (GEM's drops the tail of a
batch that crosses the end of the ring and does not restart the ring at a new task); images are stored
as uint8 (the train transform's normalisation undone; with augmentation on, the augmented image).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.distributed import whole_batch
from libcontinual.methods.base import Batch, Method
from libcontinual.registry import register_method

QP_EPSILON = 1e-3  # GEM's ridge on M Mᵀ: keeps the dual QP strictly convex


def require_quadprog() -> Any:
    """The quadprog module (the ``gem`` extra), or an error that says how to install it."""
    try:
        import quadprog
    except ImportError as error:
        raise ImportError("GEM solves its QP with quadprog: pip install 'libcontinual[gem]'") from error
    return quadprog


def gem_dual(
    gradient: torch.Tensor, memory_gradients: torch.Tensor, margin: float, eps: float = QP_EPSILON
) -> np.ndarray:
    """GEM's dual: v = argmin ½ vᵀ(M Mᵀ + eps I)v + (M g)ᵀv subject to v >= margin (quadprog, float64).

    At the optimum M g̃ = λ - eps v with λ >= 0, so every <g̃, g_k> >= -eps v_k.
    """
    quadprog = require_quadprog()
    memories = memory_gradients.detach().double().cpu().numpy()
    grad = gradient.detach().double().cpu().numpy()
    gram = memories @ memories.T
    gram = 0.5 * (gram + gram.T) + eps * np.eye(len(memories))
    count = len(memories)
    return quadprog.solve_qp(gram, -(memories @ grad), np.eye(count), np.full(count, float(margin)))[0]


def gem_project(
    gradient: torch.Tensor, memory_gradients: torch.Tensor, margin: float, eps: float = QP_EPSILON
) -> torch.Tensor:
    """g̃ = Mᵀv + g with v from ``gem_dual``: the update closest to g that no memory gradient opposes."""
    v = torch.from_numpy(gem_dual(gradient, memory_gradients, margin, eps))
    return gradient + v.to(memory_gradients) @ memory_gradients


def flat_gradient(grads: Sequence[torch.Tensor | None], params: Sequence[nn.Parameter]) -> torch.Tensor:
    """One vector of all gradients; a parameter without gradient contributes zeros."""
    pairs = zip(grads, params, strict=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in pairs])


@register_method("gem")
class GEM(Method):
    """GEM; ``task_incremental`` restricts every loss to its task's classes (GEM's CIFAR-100 protocol)."""

    solves_qp = True  # fail at construction, not after the first task, when quadprog is missing

    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        num_class: int,
        n_memories: int = 256,
        memory_strength: float = 0.5,
        task_incremental: bool = False,
    ) -> None:
        super().__init__(backbone, feat_dim, num_class)
        if self.solves_qp:
            require_quadprog()
        if n_memories < 1:
            raise ValueError(f"n_memories must be at least 1, got {n_memories}")
        self.n_memories = n_memories
        self.memory_strength = memory_strength
        self.task_incremental = task_incremental
        # Buffers follow .to(device); they are saved through get_extra_state because their shapes grow.
        self.register_buffer("memory_images", torch.zeros(0, dtype=torch.uint8), persistent=False)
        self.register_buffer("memory_labels", torch.zeros(0, dtype=torch.int64), persistent=False)
        self.memory_counts: list[int] = []  # examples written per task; slots [0, min(count, n)) hold them
        self.register_buffer("pixel_mean", torch.zeros(1, 1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.ones(1, 1, 1, 1), persistent=False)
        self.register_buffer("class_masks", torch.zeros(0), persistent=False)

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> Any:
        return {
            **super().get_extra_state(),
            "memory_images": self.memory_images.cpu(),
            "memory_labels": self.memory_labels.cpu(),
            "memory_counts": list(self.memory_counts),
            "pixel_mean": self.pixel_mean.flatten().tolist(),
            "pixel_std": self.pixel_std.flatten().tolist(),
        }

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        self.memory_images = state["memory_images"].to(self.device)
        self.memory_labels = state["memory_labels"].to(self.device)
        self.memory_counts = list(state["memory_counts"])
        self.set_normalisation(state["pixel_mean"], state["pixel_std"])
        self.build_class_masks()

    # ------------------------------------------------------------------ hooks
    def before_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        super().before_task(task, buffer, train_loader, test_loaders)
        device = self.device
        shape = (1, self.n_memories, *train_loader.images.shape[1:])
        images = torch.zeros(shape, dtype=torch.uint8, device=device)
        labels = torch.zeros(1, self.n_memories, dtype=torch.int64, device=device)
        if self.memory_counts:
            images = torch.cat([self.memory_images.to(device), images])
            labels = torch.cat([self.memory_labels.to(device), labels])
        self.memory_images, self.memory_labels = images, labels
        self.memory_counts.append(0)
        self.set_normalisation(train_loader.transform.mean, train_loader.transform.std)
        self.build_class_masks()

    def set_normalisation(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """The train transform's statistics: stored pixels are recovered from, and fed back as, its output."""
        self.pixel_mean = torch.tensor(mean, device=self.device).reshape(1, -1, 1, 1)
        self.pixel_std = torch.tensor(std, device=self.device).reshape(1, -1, 1, 1)

    def build_class_masks(self) -> None:
        """(seen tasks, seen classes): 0 on each task's own classes, -inf elsewhere."""
        masks = torch.full((len(self.seen_tasks), self.total_classes), float("-inf"), device=self.device)
        for index, seen in enumerate(self.seen_tasks):
            masks[index, list(seen.classes)] = 0.0
        self.class_masks = masks

    def observe(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels = batch["image"], batch["label"]
        logits = self.task_logits(self.backbone(images), self.task.index)
        loss = F.cross_entropy(logits, labels)
        self.log_losses(loss_ce=loss)
        self.remember(whole_batch(batch, "image"), whole_batch(batch, "label"))
        pred = logits.argmax(dim=1)
        return pred, (pred == labels).float().mean(), loss

    def optimizer_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward, then replace the gradient by its constrained version before the step."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if len(self.seen_tasks) > 1:
            params = [p for p in self.parameters() if p.requires_grad]
            gradient = flat_gradient([p.grad for p in params], params)
            constrained = self.constrain(gradient, self.memory_gradients(params))
            if constrained is not None:
                pieces = constrained.split([p.numel() for p in params])
                for param, piece in zip(params, pieces, strict=True):
                    param.grad = piece.view_as(param).clone()
        optimizer.step()

    # ------------------------------------------------------------------ GEM
    def constrain(self, gradient: torch.Tensor, memory_gradients: torch.Tensor) -> torch.Tensor | None:
        """The projected gradient, or None when no past task's gradient opposes ``gradient``."""
        if not bool((memory_gradients @ gradient < 0).any()):
            return None
        return gem_project(gradient, memory_gradients, self.memory_strength)

    def memory_gradients(self, params: Sequence[nn.Parameter]) -> torch.Tensor:
        """(past tasks, parameters): the loss gradient on each past task's whole memory."""
        rows = []
        for task in self.seen_tasks[:-1]:
            images, labels = self.stored(task.index)
            loss = F.cross_entropy(self.task_logits(self.backbone(images), task.index), labels)
            rows.append(flat_gradient(torch.autograd.grad(loss, params, allow_unused=True), params))
        return torch.stack(rows)

    def task_logits(self, logits: torch.Tensor, task_ids: int | torch.Tensor) -> torch.Tensor:
        """Seen-class logits; task-incremental: -inf outside the classes of the row's task.

        ``task_ids`` is one task index for all rows or a tensor with one per row.
        """
        logits = logits[:, : self.total_classes]
        if not self.task_incremental:
            return logits
        masks = self.class_masks[task_ids]
        return logits + (masks if masks.dim() == 2 else masks[None])

    # ------------------------------------------------------------------ memory
    def remember(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Write a batch into the current task's ring (uint8 pixels recovered from the normalised batch)."""
        size, slots_total = labels.shape[0], self.n_memories
        skip = max(size - slots_total, 0)
        count = self.memory_counts[-1]
        slots = (count + skip + torch.arange(size - skip, device=labels.device)) % slots_total
        pixels = images[skip:].detach() * self.pixel_std + self.pixel_mean
        self.memory_images[-1][slots] = pixels.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        self.memory_labels[-1][slots] = labels[skip:]
        self.memory_counts[-1] = count + size

    def stored(self, task_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A task's memory as normalised float images (no augmentation) and labels."""
        filled = min(self.memory_counts[task_index], self.n_memories)
        images, labels = self.memory_images[task_index, :filled], self.memory_labels[task_index, :filled]
        return self.normalise(images), labels

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 memory images -> the float input the network trains on (the train transform, unaugmented)."""
        return (pixels.to(self.pixel_mean.dtype).div_(255.0) - self.pixel_mean) / self.pixel_std
