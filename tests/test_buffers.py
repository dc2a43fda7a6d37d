"""Exemplar buffers: the strategies' defining properties, the memory budget, state and online replay."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from libcontinual.buffers import LinearBuffer, OnlineBuffer
from libcontinual.buffers.strategies import class_balanced_split, herding_order
from libcontinual.data.augment import Normalize
from libcontinual.data.loader import DeviceLoader


def flat_features(images: torch.Tensor) -> torch.Tensor:
    """A stand-in feature extractor: the pixels themselves."""
    return images.flatten(1).float()


def task_data(classes: list[int], per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor(classes).repeat_interleave(per_class)
    images = torch.randint(0, 256, (labels.shape[0], 1, 2, 2), dtype=torch.uint8, generator=generator)
    return images, labels


def brute_force_herding(features: np.ndarray, count: int) -> list[int]:
    """The greedy rule written out: at step k try every unpicked row, keep the best mean."""
    target = features.mean(axis=0)
    picked: list[int] = []
    for k in range(1, count + 1):
        best, best_distance = -1, np.inf
        for i in range(len(features)):
            if i in picked:
                continue
            mean = (features[picked].sum(axis=0) + features[i]) / k
            distance = np.linalg.norm(target - mean)
            if distance < best_distance:
                best, best_distance = i, distance
        picked.append(best)
    return picked


def test_herding_picks_what_the_brute_force_greedy_rule_picks():
    features = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    assert herding_order(features, 15).tolist() == brute_force_herding(features.double().numpy(), 15)
    assert herding_order(features, 100).sort().values.tolist() == list(range(40))  # capped, no repeats


@pytest.mark.parametrize("normalize", [True, False])
def test_buffer_stores_herding_exemplars_in_selection_order(normalize):
    images, labels = task_data([0, 1], 20, seed=1)
    buffer = LinearBuffer(buffer_size=14, strategy="herding", normalize_features=normalize)
    buffer.add(images, labels, generator=torch.Generator().manual_seed(0), features=flat_features)
    for cls in (0, 1):
        members = images[labels == cls]
        rows = flat_features(members)
        rows = F.normalize(rows, dim=1) if normalize else rows
        expected = members[brute_force_herding(rows.double().numpy(), 7)]
        assert torch.equal(buffer.images[buffer.labels == cls], expected)


def test_shrinking_keeps_each_classs_earliest_chosen_herding_exemplars():
    buffer = LinearBuffer(buffer_size=12, strategy="herding")
    generator = torch.Generator().manual_seed(0)
    buffer.add(*task_data([0, 1], 20, seed=1), generator=generator, features=flat_features)
    before = {cls: buffer.images[buffer.labels == cls].clone() for cls in (0, 1)}
    assert all(len(exemplars) == 6 for exemplars in before.values())
    buffer.add(*task_data([2, 3], 20, seed=2), generator=generator, features=flat_features)
    for cls in (0, 1):
        assert torch.equal(buffer.images[buffer.labels == cls], before[cls][:3])
    assert torch.bincount(buffer.labels).tolist() == [3, 3, 3, 3]


def test_equal_random_per_class_counts_differ_by_at_most_one():
    buffer = LinearBuffer(buffer_size=50, strategy="equal_random")
    generator = torch.Generator().manual_seed(0)
    for step in range(4):
        images, labels = task_data([3 * step, 3 * step + 1, 3 * step + 2], 30, seed=step)
        buffer.add(images, labels, generator=generator)
        counts = torch.bincount(buffer.labels, minlength=3 * step + 3)
        assert counts.max() - counts.min() <= 1 and counts.min() > 0
        assert len(buffer) == 50
        new = buffer.labels >= 3 * step  # the new exemplars are distinct samples of this task
        kept = {tuple(x.flatten().tolist()) + (int(y),) for x, y in zip(images, labels, strict=True)}
        pairs = zip(buffer.images[new], buffer.labels[new], strict=True)
        stored = [tuple(x.flatten().tolist()) + (int(y),) for x, y in pairs]
        assert set(stored) <= kept and len(set(stored)) == len(stored)


def test_reservoir_inclusion_is_uniform_over_the_stream():
    # 60 items arrive in 3 tasks of 20; a reservoir of 10 keeps each with probability 1/6.
    stream, capacity, runs = 60, 10, 600
    images = torch.arange(stream, dtype=torch.uint8).view(stream, 1, 1, 1)
    labels = torch.arange(stream) % 4
    generator = torch.Generator().manual_seed(1993)
    counts = torch.zeros(stream)
    for _ in range(runs):
        buffer = OnlineBuffer(buffer_size=capacity, strategy="reservoir")
        for start in range(0, stream, 20):
            buffer.add(images[start : start + 20], labels[start : start + 20], generator=generator)
        assert len(buffer) == capacity
        counts[buffer.images.flatten().long()] += 1
    p = capacity / stream
    sd = (runs * p * (1 - p)) ** 0.5
    # Each count is Binomial(600, 1/6): mean 100, sd 9.1. With a fixed seed the test is deterministic; the
    # bounds are those a correct sampler passes with probability > 0.999: max |z| over 60 counts below 4,
    # chi-square (about 59 degrees of freedom) below its 99.9 % quantile 98.3. Keeping, e.g., the first
    # task's items twice as often gives chi-square in the hundreds.
    z = (counts - runs * p) / sd
    assert z.abs().max() < 4.0
    assert (z**2).sum() < 98.3
    by_task = counts.view(3, 20).mean(dim=1)
    assert (by_task - runs * p).abs().max() < 4.0 * sd / 20**0.5


STRATEGY_MODES = [
    (strategy, mode)
    for strategy in ("random", "equal_random", "reservoir", "herding")
    for mode in ("total", "per_class")
    if not (strategy == "reservoir" and mode == "per_class")
]


@pytest.mark.parametrize(("strategy", "mode"), STRATEGY_MODES)
def test_memory_never_exceeds_its_budget(strategy, mode):
    budget = {"buffer_size": 10} if mode == "total" else {"memory_per_class": 3}
    buffer = LinearBuffer(strategy=strategy, **budget)
    generator = torch.Generator().manual_seed(0)
    for step in range(4):
        images, labels = task_data([2 * step, 2 * step + 1], 15, seed=step)
        buffer.add(images, labels, generator=generator, features=flat_features)
        seen = 2 * step + 2
        capacity = 10 if mode == "total" else 3 * seen
        assert buffer.capacity == capacity
        assert len(buffer) <= capacity
        assert buffer.images.dtype == torch.uint8 and buffer.images.shape[1:] == (1, 2, 2)
        if strategy in ("equal_random", "herding"):
            quotas = buffer.class_quotas()
            assert torch.bincount(buffer.labels, minlength=seen).tolist() == [quotas[c] for c in range(seen)]
        else:
            assert len(buffer) == min(capacity, 15 * seen)
    if strategy == "herding" and mode == "total":
        assert len(buffer) == 8  # iCaRL's m = 10 // 8 = 1 per class: the remainder stays unused


def test_budget_and_strategy_errors():
    with pytest.raises(ValueError, match="exactly one"):
        LinearBuffer()
    with pytest.raises(ValueError, match="exactly one"):
        LinearBuffer(buffer_size=10, memory_per_class=2)
    with pytest.raises(ValueError, match="strategy must be one of"):
        LinearBuffer(buffer_size=10, strategy="herd")
    with pytest.raises(ValueError, match="fixed total"):
        OnlineBuffer(memory_per_class=5)
    with pytest.raises(ValueError, match="needs features"):
        LinearBuffer(buffer_size=10).add(*task_data([0], 4, seed=0), generator=torch.Generator())


def test_state_dict_round_trip_resumes_identically():
    generator = torch.Generator().manual_seed(0)
    buffer = OnlineBuffer(buffer_size=12, strategy="reservoir")
    logits = torch.randn(30, 2)
    buffer.add(*task_data([0, 1, 2], 10, seed=0), generator=generator, logits=logits)
    saved = io.BytesIO()
    torch.save(buffer.state_dict(), saved)
    saved.seek(0)
    restored = OnlineBuffer(buffer_size=12, strategy="reservoir")
    restored.load_state_dict(torch.load(saved))
    for key in ("images", "labels", "logits"):
        assert torch.equal(getattr(restored, key), getattr(buffer, key))
    assert restored.stream_count == 30 and restored.seen_classes == [0, 1, 2]
    state = generator.get_state()
    for target in (buffer, restored):  # the same draws after resume give the same memory
        generator.set_state(state)
        target.add(*task_data([3, 4], 10, seed=1), generator=generator, logits=torch.ones(20, 5))
    assert torch.equal(restored.images, buffer.images) and torch.equal(restored.logits, buffer.logits)
    assert restored.logits.shape == (12, 5)  # older, narrower logits are zero-padded
    with pytest.raises(ValueError, match="strategy"):
        LinearBuffer(buffer_size=12, strategy="random").load_state_dict(buffer.state_dict())


def test_online_buffer_mixes_a_replay_batch_into_every_batch():
    generator = torch.Generator().manual_seed(0)
    buffer = OnlineBuffer(buffer_size=8, batch_size=5)
    old_images, old_labels = task_data([0, 1], 10, seed=0)
    buffer.add(old_images, old_labels, generator=generator)
    images, labels = task_data([2, 3], 6, seed=1)
    normalize = Normalize([0.5], [0.25])
    loader = DeviceLoader(images, labels, 4, normalize, shuffle=True, generator=generator)
    buffer.merge(loader)
    assert loader.num_samples == 12  # nothing merged: replay happens per batch
    for batch in loader:
        mixed = buffer.mix(batch)
        assert mixed["label"].shape[0] == batch["label"].shape[0] + 5
        assert torch.equal(mixed["image"][: batch["label"].shape[0]], batch["image"])
        replayed = mixed["image"][batch["label"].shape[0] :]
        stored = normalize(buffer.images)
        assert all((stored == image).flatten(1).all(1).any() for image in replayed)
        assert set(mixed["label"][batch["label"].shape[0] :].tolist()) <= {0, 1}


def test_linear_buffer_merges_exemplars_and_updates_from_the_tasks_own_samples():
    generator = torch.Generator().manual_seed(0)
    buffer = LinearBuffer(buffer_size=100, strategy="random")
    loader = DeviceLoader(*task_data([0, 1], 5, seed=0), 4, Normalize([0.5], [0.25]), generator=generator)
    buffer.merge(loader)
    buffer.update(None, loader)
    second = DeviceLoader(*task_data([2, 3], 5, seed=1), 4, Normalize([0.5], [0.25]), generator=generator)
    buffer.merge(second)
    assert second.num_samples == 10 + 10
    restored = LinearBuffer(buffer_size=100, strategy="random")  # as after a resume inside the task
    restored.load_state_dict(buffer.state_dict())
    restored.update(None, second)  # candidates: the task's 10, not the 10 merged copies again
    assert len(restored) == 20 and restored.task_samples is None
    rows = [tuple(x.flatten().tolist()) for x in restored.images]
    assert len(set(rows)) == len(rows)


def test_class_balanced_split_holds_out_the_same_count_per_class():
    labels = torch.tensor([0] * 7 + [1] * 3 + [2] * 5)
    held, rest = class_balanced_split(labels, 2, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[held]).tolist() == [2, 2, 2]
    assert sorted(held.tolist() + rest.tolist()) == list(range(15))
