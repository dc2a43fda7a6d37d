"""Weight ownership, binary masks and pruning: the arithmetic PackNet, Piggyback and CPG share.

Owner maps are uint8 tensors shaped like a layer's weight: 0 = free, ``t + 1`` = owned by task t
(0-based), so 255 tasks fit in one byte per weight. A task's pick mask (Piggyback, CPG) is kept as
packed bits, one bit per weight, once the task is learned.
"""

from __future__ import annotations

import torch
from torch import Tensor

FREE = 0
MAX_TASKS = 255


def owner_id(task: int) -> int:
    """The owner value of 0-based task ``task`` (0 means free)."""
    if not 0 <= task < MAX_TASKS:
        raise ValueError(f"task index {task} out of range: owner maps hold at most {MAX_TASKS} tasks")
    return task + 1


def pack_bits(mask: Tensor) -> Tensor:
    """A bool tensor as uint8 bytes, 8 weights per byte (little-endian bit order); shape not kept."""
    flat = mask.detach().reshape(-1).to(torch.uint8).cpu()
    padding = (-flat.numel()) % 8
    if padding:
        flat = torch.cat([flat, flat.new_zeros(padding)])
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)
    return (flat.reshape(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, shape: tuple[int, ...] | torch.Size) -> Tensor:
    """The bool tensor of ``shape`` that ``pack_bits`` turned into ``packed``."""
    count = 1
    for size in shape:
        count *= size
    if packed.numel() * 8 < count:
        raise ValueError(f"{packed.numel()} packed bytes cannot hold a mask of shape {tuple(shape)}")
    bits = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=packed.device)
    unpacked = (packed.reshape(-1, 1) & bits) != 0
    return unpacked.reshape(-1)[:count].reshape(shape)


class Binarize(torch.autograd.Function):
    """Forward: 1 where the real-valued mask exceeds ``threshold``, else 0. Backward: straight-through
    (the gradient of the binary mask is passed to the real-valued one unchanged), as Piggyback."""

    @staticmethod
    def forward(ctx: object, scores: Tensor, threshold: float) -> Tensor:  # type: ignore[override]
        return (scores > threshold).to(scores.dtype)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


def binarize(scores: Tensor, threshold: float) -> Tensor:
    return Binarize.apply(scores, threshold)


def zhu_gupta_sparsity(
    step: int, begin_step: int, end_step: int, initial_sparsity: float, final_sparsity: float
) -> float:
    """Zhu & Gupta (2017) gradual pruning: s = s_f + (s_i - s_f)(1 - p)^3 with p the fraction of
    [begin_step, end_step] elapsed, clamped to [0, 1] (CPG's ``_adjust_sparsity``)."""
    check_sparsity(initial_sparsity, "initial sparsity")
    check_sparsity(final_sparsity, "final sparsity")
    if end_step <= begin_step:
        return final_sparsity
    progress = min(1.0, max(0.0, (step - begin_step) / (end_step - begin_step)))
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** 3


def check_sparsity(value: float, what: str = "sparsity") -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{what} must lie in [0, 1), got {value}: a task needs at least one weight")


def prune_layer_(weight: Tensor, owners: Tensor, task: int, sparsity: float) -> int:
    """Magnitude pruning of one layer for ``task``, in place on ``owners`` (and ``weight``).

    The task's capacity is the weights it owns plus the free ones; afterwards it keeps the
    ``n - round(sparsity * n)`` largest-magnitude weights it owned (ties keep the lower index) and
    the rest become free with value 0. So the free fraction of its capacity is round(s n) / n
    whenever it owned enough weights (CPG's cutoff over own and free weights). Returns the number kept.
    """
    check_sparsity(sparsity)
    owner = owner_id(task)
    own = owners == owner
    capacity = int((own | (owners == FREE)).sum())
    keep = capacity - round(sparsity * capacity)
    own_index = own.reshape(-1).nonzero().squeeze(1)
    if own_index.numel() > keep:
        magnitudes = weight.detach().reshape(-1)[own_index].abs()
        order = torch.sort(magnitudes, descending=True, stable=True).indices
        dropped = own_index[order[keep:]]
        owners.view(-1)[dropped] = FREE
        with torch.no_grad():
            weight.view(-1)[dropped] = 0.0
    return min(keep, own_index.numel())


def mask_gradient_(weight: Tensor, owners: Tensor, task: int, weight_decay: float) -> None:
    """Keep only the gradient of the weights ``task`` owns, adding weight decay to those alone.

    Plain SGD weight decay would move every weight, frozen ones included (CPG applies it by hand).
    """
    if weight.grad is None:
        return
    own = owners == owner_id(task)
    grad = weight.grad
    if weight_decay:
        grad.add_(weight.detach(), alpha=weight_decay)
    grad.masked_fill_(~own, 0.0)


def task_parameter_count(owners: Tensor, task: int) -> int:
    return int((owners == owner_id(task)).sum())
