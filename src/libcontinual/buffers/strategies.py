"""Exemplar update strategies as pure tensor functions (the buffers call them; tests check them directly).

``random``: a uniform subset of old exemplars and new samples (LibContinual's random update).
``equal_random``: class-balanced random; per-class counts differ by at most one.
``reservoir``: uniform over the whole stream of samples seen so far (Vitter's algorithm R).
``herding``: iCaRL's greedy choice, per class, of the samples whose running mean is closest to the class mean.
Every random draw comes from a caller's ``torch.Generator`` so that runs are reproducible.
"""

from __future__ import annotations

import torch

STRATEGIES = ("random", "equal_random", "reservoir", "herding")
CLASS_WISE = ("equal_random", "herding")


def herding_order(features: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of ``min(count, n)`` rows of ``features`` (n, d) in the order herding picks them.

    Step k picks, among the rows not yet picked, the one that brings the mean of the k picked rows closest
    (Euclidean) to the mean of all rows; ties go to the lowest index. Computed in float64; no host sync.
    """
    rows = features.double()
    count = min(count, rows.shape[0])
    target = rows.mean(dim=0)
    running = torch.zeros_like(target)
    taken = torch.zeros(rows.shape[0], dtype=torch.bool, device=rows.device)
    order = []
    for k in range(1, count + 1):
        distance = ((target - (running + rows) / k) ** 2).sum(dim=1)
        index = distance.masked_fill(taken, float("inf")).argmin()
        taken[index] = True
        running += rows[index]
        order.append(index)
    if not order:
        return torch.zeros(0, dtype=torch.int64, device=rows.device)
    return torch.stack(order)


def class_quotas(classes: list[int], capacity: int, balanced_remainder: bool) -> dict[int, int]:
    """Exemplars allowed per class when ``capacity`` is shared by ``classes``.

    ``capacity // n`` each (iCaRL's m = K / n); with ``balanced_remainder`` the first ``capacity % n``
    classes get one more, so the whole capacity is used and counts differ by at most one. When ``n`` grows
    no class's quota grows, so shrinking never needs samples that were dropped.
    """
    if not classes:
        return {}
    base, remainder = divmod(capacity, len(classes))
    extra = remainder if balanced_remainder else 0
    return {cls: base + (1 if i < extra else 0) for i, cls in enumerate(sorted(classes))}


def random_subset(size: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``min(count, size)`` distinct indices of ``range(size)``, uniformly at random, in random order."""
    return torch.randperm(size, generator=generator, device=generator.device)[:count]


def reservoir_slots(seen: int, incoming: int, capacity: int, generator: torch.Generator) -> torch.Tensor:
    """Algorithm R for ``incoming`` stream items after ``seen`` items: the slot each item is written to.

    Item i (stream position t = seen + i) goes to slot t while the reservoir fills, else to a uniform slot
    of ``range(t + 1)`` that is kept only if it is below ``capacity``; -1 means the item is dropped. A later
    item overwrites an earlier one in the same slot, as in the sequential algorithm.
    """
    position = torch.arange(seen, seen + incoming, dtype=torch.float64, device=generator.device)
    draws = torch.rand(incoming, dtype=torch.float64, generator=generator, device=generator.device)
    slot = torch.where(position < capacity, position, torch.floor(draws * (position + 1))).long()
    return torch.where(slot < capacity, slot, torch.full_like(slot, -1))


def reservoir_winners(slots: torch.Tensor, capacity: int) -> torch.Tensor:
    """For each slot, the index of the last item written to it (-1 if none): the sequential outcome."""
    winners = torch.full((capacity,), -1, dtype=torch.int64, device=slots.device)
    written = slots >= 0
    items = torch.arange(slots.shape[0], device=slots.device)
    return winners.scatter_reduce_(0, slots[written], items[written], reduce="amax")


def class_balanced_split(
    labels: torch.Tensor, per_class: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (held_out, rest): ``per_class`` random samples of each class held out (all if it has fewer)."""
    held = []
    for cls in labels.unique().tolist():
        members = torch.nonzero(labels == cls).squeeze(1)
        pick = random_subset(members.shape[0], per_class, generator).to(members.device)
        held.append(members[pick])
    held_index = torch.cat(held) if held else labels.new_zeros(0)
    keep = torch.ones_like(labels, dtype=torch.bool)
    keep[held_index] = False
    return held_index, torch.nonzero(keep).squeeze(1)
