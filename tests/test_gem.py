"""GEM and A-GEM: the projection's defining properties, the ring memory, resume state and whole runs."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F

import libcontinual
from libcontinual.backbones import build_backbone
from libcontinual.data.augment import Normalize
from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.methods.agem import AGEM, agem_project
from libcontinual.methods.base import Method
from libcontinual.methods.gem import GEM, QP_EPSILON, gem_dual, gem_project

NUM_CLASSES = 4
DOMAIN_TASKS = [TaskInfo(t, 3, tuple(range(NUM_CLASSES)), 0, NUM_CLASSES) for t in range(3)]


def conflicting_gradients(count: int = 5, dim: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A gradient g and memory gradients M (float64) where g opposes most rows of M."""
    generator = torch.Generator().manual_seed(seed)
    memories = torch.randn(count, dim, generator=generator, dtype=torch.float64)
    noise = torch.randn(dim, generator=generator, dtype=torch.float64)
    gradient = -memories[: count - 1].sum(0) + 0.5 * noise
    assert (memories @ gradient < 0).sum() >= count - 1
    return gradient, memories


# ---------------------------------------------------------------------- the projection


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_projected_gradient_opposes_no_memory_gradient(margin):
    gradient, memories = conflicting_gradients()
    projected = gem_project(gradient, memories, margin)
    v = torch.from_numpy(gem_dual(gradient, memories, margin))
    dots = memories @ projected
    # KKT of the ridge-regularised dual: M g̃ = λ - eps v with λ >= 0, so <g̃, g_k> >= -eps v_k ...
    assert torch.all(dots >= -QP_EPSILON * v - 1e-9 * gradient.norm() * memories.norm(dim=1))
    # ... which is tiny next to the scale of the vectors: the brief's stated tolerance.
    assert torch.all(dots >= -1e-4 * gradient.norm() * memories.norm(dim=1))
    assert torch.all(v >= margin - 1e-9)
    # without the ridge the constraints hold exactly (to solver precision)
    exact = memories @ gem_project(gradient, memories, margin, eps=0.0)
    assert torch.all(exact >= -1e-8 * gradient.norm() * memories.norm(dim=1))


def test_projection_moves_the_gradient_as_little_as_possible_without_margin():
    """With margin 0 and no ridge, g̃ is the Euclidean projection of g onto {z : M z >= 0}."""
    gradient, memories = conflicting_gradients(count=3, dim=50, seed=1)
    projected = gem_project(gradient, memories, 0.0, eps=0.0)
    generator = torch.Generator().manual_seed(2)
    for _ in range(200):  # random feasible points are never closer to g
        candidate = projected + 0.3 * torch.randn(50, generator=generator, dtype=torch.float64)
        if torch.all(memories @ candidate >= 0):
            assert (candidate - gradient).norm() >= (projected - gradient).norm() - 1e-9


def test_one_memory_task_gem_equals_agem_when_margin_is_zero():
    generator = torch.Generator().manual_seed(3)
    reference = torch.randn(300, generator=generator, dtype=torch.float64)
    noise = torch.randn(300, generator=generator, dtype=torch.float64)
    noise -= (noise @ reference) / (reference @ reference) * reference  # orthogonal to g_ref
    for scale in (0.3, 0.7):  # v* = -gᵀg_ref / ‖g_ref‖² = scale
        gradient = -scale * reference + noise
        agem = agem_project(gradient, reference)
        # margin 0 (v >= 0) and no ridge: GEM's dual gives v* itself, A-GEM's coefficient
        gem = gem_project(gradient, reference[None], 0.0, eps=0.0)
        torch.testing.assert_close(gem, agem, rtol=1e-10, atol=1e-10)
        # GEM's ridge eps only scales v by ‖g_ref‖² / (‖g_ref‖² + eps)
        with_ridge = gem_project(gradient, reference[None], 0.0)
        bound = 2 * QP_EPSILON / (reference @ reference) * (agem - gradient).norm()
        assert (with_ridge - agem).norm() <= bound
        # GEM's margin 0.5 (v >= 0.5) agrees only when v* >= 0.5; otherwise it pushes further along g_ref
        with_margin = gem_project(gradient, reference[None], 0.5, eps=0.0)
        if scale >= 0.5:
            torch.testing.assert_close(with_margin, agem, rtol=1e-10, atol=1e-10)
        else:
            torch.testing.assert_close(with_margin, gradient + 0.5 * reference, rtol=1e-10, atol=1e-10)
    # no conflict: A-GEM leaves g as it is
    torch.testing.assert_close(agem_project(-gradient, reference), -gradient, rtol=0, atol=0)


# ---------------------------------------------------------------------- methods on a small MLP


def make_method(cls=GEM, **kwargs):
    torch.manual_seed(0)
    backbone = build_backbone("mlp", in_channels=1, input_size=16, hidden_sizes=[12])
    return cls(backbone, backbone.num_features, NUM_CLASSES, **kwargs)


def train_loader(images: torch.Tensor, labels: torch.Tensor) -> DeviceLoader:
    generator = torch.Generator().manual_seed(0)
    return DeviceLoader(images, labels, 8, Normalize([0.5], [0.25]), generator=generator)


def pixels(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 1, 4, 4), generator=generator, dtype=torch.uint8)
    return images, torch.randint(0, NUM_CLASSES, (count,), generator=generator)


def step(method, optimizer, images, labels):
    """One observe + optimizer_step on uint8 images (normalised as the method's loader does)."""
    _, _, loss = method.observe({"image": method.normalise(images), "label": labels})
    method.optimizer_step(loss, optimizer)
    return loss


def memory_loss(method, task_index: int) -> torch.Tensor:
    images, labels = method.stored(task_index)
    return F.cross_entropy(method.task_logits(method.backbone(images), task_index), labels)


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def two_task_gem(images, labels, fit_steps: int = 0):
    """A GEM whose task-0 memory holds (images, labels), fitted by ``fit_steps``, at the start of task 1."""
    method = make_method(GEM, n_memories=64)
    method.before_task(DOMAIN_TASKS[0], None, train_loader(images, labels), [])
    step(method, torch.optim.SGD(method.parameters(), lr=0.0), images, labels)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5)
    for _ in range(fit_steps):
        step(method, optimizer, images, labels)
    method.before_task(DOMAIN_TASKS[1], None, train_loader(images, labels), [])
    return method


def test_without_conflict_the_gradient_is_unchanged():
    images, labels = pixels(16, seed=0)
    method = two_task_gem(images, labels)
    _, _, loss = method.observe({"image": method.normalise(images), "label": labels})
    params = [p for p in method.parameters() if p.requires_grad]
    expected = torch.autograd.grad(loss, params, retain_graph=True)
    # the same data as task 0's memory: g_0 = g, so <g, g_0> > 0
    assert float(method.memory_gradients(params)[0] @ torch.cat([g.flatten() for g in expected])) > 0
    method.optimizer_step(loss, torch.optim.SGD(params, lr=0.0))
    for param, grad in zip(params, expected, strict=True):
        torch.testing.assert_close(param.grad, grad, rtol=0, atol=0)


def test_update_does_not_increase_a_memory_loss_to_first_order(float64):
    images, labels = pixels(16, seed=1)
    flipped = (labels + 1) % NUM_CLASSES  # the new task contradicts the memory
    lr = 1e-4
    method = two_task_gem(images, labels, fit_steps=5)
    plain = copy.deepcopy(method)
    before = float(memory_loss(method, 0).detach())
    params = [p for p in method.parameters() if p.requires_grad]
    loss = method.observe({"image": method.normalise(images), "label": flipped})[2]
    gradient = torch.cat([g.flatten() for g in torch.autograd.grad(loss, params, retain_graph=True)])
    memory_gradients = method.memory_gradients(params)
    assert float(memory_gradients[0] @ gradient) < 0  # a real conflict
    v = torch.from_numpy(gem_dual(gradient, memory_gradients, method.memory_strength))

    method.optimizer_step(loss, torch.optim.SGD(params, lr=lr))
    projected = torch.cat([p.grad.flatten() for p in params])
    # the direction obeys GEM's KKT bound <g̃, g_0> >= -eps v_0 (the ridge's residue, ~1e-3 here)
    assert float(memory_gradients[0] @ projected) >= -QP_EPSILON * float(v[0]) - 1e-12
    increase = float(memory_loss(method, 0).detach()) - before

    loss = plain.observe({"image": plain.normalise(images), "label": flipped})[2]
    Method.optimizer_step(plain, loss, torch.optim.SGD(plain.parameters(), lr=lr))  # unconstrained SGD
    plain_increase = float(memory_loss(plain, 0).detach()) - before
    assert plain_increase > 0.5 * lr * float(-(memory_gradients[0] @ gradient))  # plain SGD raises it ...
    assert increase <= 0.01 * plain_increase  # ... GEM's step does not, up to O(lr²) and eps v_0 lr


def test_ring_memory_keeps_the_most_recent_examples():
    method = make_method(GEM, n_memories=5)
    ids = torch.arange(40, dtype=torch.uint8).mul(5).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    labels = torch.arange(40) % NUM_CLASSES
    method.before_task(DOMAIN_TASKS[0], None, train_loader(ids, labels), [])
    seen = 0
    for size in (3, 3, 4, 7, 1, 2):
        batch = slice(seen, seen + size)
        method.remember(method.normalise(ids[batch]), labels[batch])
        seen += size
        stored_images, stored_labels = method.stored(0)
        assert len(stored_labels) == min(seen, 5) <= method.n_memories
        kept = sorted(int(image[0, 0, 0]) // 5 for image in method.memory_images[0, : len(stored_labels)])
        assert kept == list(range(max(0, seen - 5), seen))
        assert sorted(stored_labels.tolist()) == sorted((torch.tensor(kept) % NUM_CLASSES).tolist())
    # the stored uint8 images give back exactly the normalised inputs
    torch.testing.assert_close(method.stored(0)[0], method.normalise(method.memory_images[0]))


def test_task_incremental_masks_other_tasks_logits():
    method = make_method(GEM, task_incremental=True)
    images, labels = pixels(8, seed=2)
    tasks = [TaskInfo(0, 2, (0, 1), 0, 2), TaskInfo(1, 2, (2, 3), 2, 4)]
    for task in tasks:
        method.before_task(task, None, train_loader(images, labels), [])
    logits = torch.zeros(2, 4)
    assert torch.isinf(method.task_logits(logits, 1)[:, :2]).all()
    assert not torch.isinf(method.task_logits(logits, 1)[:, 2:]).any()
    rows = method.task_logits(logits, torch.tensor([0, 1]))
    assert torch.isinf(rows[0, 2:]).all() and torch.isinf(rows[1, :2]).all()
    pred, _, loss = method.observe({"image": method.normalise(images), "label": labels % 2 + 2})
    assert set(pred.tolist()) <= {2, 3} and math.isfinite(float(loss.detach()))


def test_agem_reference_batch_is_seeded_and_mixes_past_tasks():
    images, labels = pixels(12, seed=3)

    def reference_gradient():
        method = make_method(AGEM, n_memories=12, memory_batch_size=10)
        for task in DOMAIN_TASKS:
            method.before_task(task, None, train_loader(images, labels), [])
            method.remember(method.normalise(images), labels)
        params = [p for p in method.parameters() if p.requires_grad]
        return method.memory_gradients(params)

    first, second = reference_gradient(), reference_gradient()
    assert first.shape[0] == 1
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_state_dict_round_trip_restores_the_memory():
    images, labels = pixels(20, seed=4)
    method = make_method(GEM, n_memories=8)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    for task in DOMAIN_TASKS[:2]:
        method.before_task(task, None, train_loader(images, labels), [])
        step(method, optimizer, images[:12], labels[:12])
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    fresh = make_method(GEM, n_memories=8)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.memory_counts == method.memory_counts == [12, 12]
    torch.testing.assert_close(fresh.memory_images, method.memory_images, rtol=0, atol=0)
    torch.testing.assert_close(fresh.memory_labels, method.memory_labels, rtol=0, atol=0)
    assert fresh.seen_tasks == method.seen_tasks
    for model in (method, fresh):  # the next task constrains against identical memory gradients
        model.before_task(DOMAIN_TASKS[2], None, train_loader(images, labels), [])
    params = [[p for p in model.parameters() if p.requires_grad] for model in (method, fresh)]
    torch.testing.assert_close(fresh.memory_gradients(params[1]), method.memory_gradients(params[0]))


# ---------------------------------------------------------------------- whole runs


def permuted_config(tmp_path, method: dict) -> dict:
    return {
        "dataset": {
            "name": "synthetic",
            "kwargs": {"num_classes": 4, "train_per_class": 30, "test_per_class": 10, "channels": 1},
        },
        "image_size": 8,
        "scenario": {"name": "permuted", "kwargs": {"samples_per_task": 80}},
        "init_cls_num": 4,
        "inc_cls_num": 4,
        "task_num": 3,
        "epoch": 1,
        "batch_size": 10,
        "backbone": {"name": "mlp", "kwargs": {"input_size": 64, "hidden_sizes": [32]}},
        "method": method,
        "optimizer": {"name": "SGD", "kwargs": {"lr": 0.1}},
        "full_accuracy_matrix": True,
        "seed": 0,
        "device": "cpu",
        "num_threads": 1,  # batch-10 steps: thread synchronisation would cost more than the work
        "save_path": str(tmp_path / "runs"),
    }


@pytest.mark.parametrize(
    "method",
    [
        {"name": "gem", "kwargs": {"n_memories": 20}},
        {"name": "agem", "kwargs": {"n_memories": 20, "memory_batch_size": 16}},
        {"name": "gem", "kwargs": {"n_memories": 20, "task_incremental": True}},
    ],
    ids=["gem", "agem", "gem-task-incremental"],
)
def test_runs_end_to_end_on_a_permuted_stream(tmp_path, method):
    result = libcontinual.run(permuted_config(tmp_path, method))
    matrix = result.accuracy_matrix["cnn"]
    assert [len(row) for row in matrix] == [3, 3, 3]  # every task evaluated after each task
    summary = result.summary["cnn"]
    assert all(math.isfinite(summary[key]) for key in ("acc", "bwt", "fwt"))
    assert summary["acc"] == pytest.approx(sum(matrix[-1]) / 3)
    assert summary["bwt"] == pytest.approx(sum(matrix[2][j] - matrix[j][j] for j in range(2)) / 2)
    untrained = result.results["random_init_accuracy"]["cnn"]  # b_j, evaluated before any training
    assert len(untrained) == 3
    assert summary["fwt"] == pytest.approx(sum(matrix[j - 1][j] - untrained[j] for j in (1, 2)) / 2)
    assert all(task["classes"] == [0, 1, 2, 3] for task in result.results["protocol"]["tasks"])
    assert min(matrix[j][j] for j in range(3)) > 50.0  # each task is learned (chance: 25 %)
