"""LwF and EWC: their defining properties, on tiny models and on the tiny stream through the real trainer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import libcontinual
from libcontinual.backbones import build_backbone
from libcontinual.config import load_config
from libcontinual.data.augment import BatchAugment, Normalize
from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.engine.trainer import Callback
from libcontinual.errors import ConfigError
from libcontinual.methods.common import kd_loss
from libcontinual.methods.ewc import EWC
from libcontinual.methods.lwf import LwF
from probes import KeepMethods

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def task(index: int, per_task: int = 2, num_tasks: int = 3) -> TaskInfo:
    known = index * per_task
    return TaskInfo(index, num_tasks, tuple(range(known, known + per_task)), known, known + per_task)


def loader_for(info: TaskInfo, n: int = 12, seed: int = 0, size: int = 8) -> DeviceLoader:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.tensor([info.classes[i % len(info.classes)] for i in range(n)])
    return DeviceLoader(images, labels, 6, BatchAugment(MEAN, STD), shuffle=True, generator=generator)


def resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone("resnet8")


# ----------------------------------------------------------------------------------------------- LwF
@pytest.mark.parametrize("ce_classes", ["new", "seen"])
def test_lwf_with_zero_weight_trains_exactly_like_finetune(tiny_config, ce_classes):
    tiny_config["epoch"] = 1
    finetune, lwf = KeepMethods(), KeepMethods()
    tiny_config["method"] = {"name": "finetune", "kwargs": {"ce_classes": ce_classes}}
    libcontinual.run(tiny_config, callbacks=[finetune])
    tiny_config["method"] = {"name": "lwf", "kwargs": {"lamda": 0.0, "ce_classes": ce_classes}}
    libcontinual.run(tiny_config, callbacks=[lwf])
    assert len(lwf.methods) == 3
    for finetuned, distilled in zip(finetune.methods, lwf.methods, strict=True):
        expected, got = finetuned.state_dict(), distilled.state_dict()
        tensors = [key for key, value in expected.items() if isinstance(value, torch.Tensor)]
        assert tensors and tensors == [key for key, value in got.items() if isinstance(value, torch.Tensor)]
        assert all(torch.equal(expected[key], got[key]) for key in tensors)


def test_kd_is_zero_against_itself_and_positive_otherwise():
    logits = torch.randn(5, 4)
    assert kd_loss(logits, logits, 2.0) == 0
    assert kd_loss(logits, logits.flip(1), 2.0) > 0
    # Same gradient as the soft-target cross-entropy of PyCIL (they differ by the teacher's entropy).
    student = logits.clone().requires_grad_(True)
    teacher = torch.randn(5, 4)
    kd_loss(student, teacher, 2.0).backward()
    reference = student.detach().clone().requires_grad_(True)
    (-(F.softmax(teacher / 2, 1) * F.log_softmax(reference / 2, 1)).sum(1).mean()).backward()
    torch.testing.assert_close(student.grad, reference.grad)


def test_lwf_kd_term_is_zero_while_the_model_equals_its_teacher():
    method = LwF(resnet(), 64, 6)
    first, second = task(0), task(1)
    method.before_task(first, None, loader_for(first), [])
    method.after_task(first, None, loader_for(first), [])
    method.before_task(second, None, loader_for(second), [])
    assert method.teacher is not None and not any(p.requires_grad for p in method.teacher.parameters())
    method.eval()  # same BatchNorm statistics as the teacher: the student is its teacher
    batch = next(iter(loader_for(second)))
    method.observe(batch)
    assert method.pop_losses()["loss_kd"] == 0.0
    method.train()
    assert not method.teacher.training  # the teacher keeps its running statistics


class OldTaskPredictions(Callback):
    """Log-softmax over the first task's classes on its test images, after every task."""

    def __init__(self) -> None:
        self.log_probabilities: list[torch.Tensor] = []

    def on_task_end(self, trainer, record) -> None:
        method, first = trainer.method.eval(), trainer.scenario.tasks[0].info
        with torch.no_grad():
            scores = torch.cat([method.scores(batch["image"]) for batch in trainer.test_loaders[0]])
        self.log_probabilities.append(scores[:, : first.total_classes].log_softmax(dim=1))

    def drift(self) -> float:
        """KL(after the first task || after the last) of the first task's class distribution."""
        first, last = self.log_probabilities[0], self.log_probabilities[-1]
        return float(F.kl_div(last, first, log_target=True, reduction="batchmean"))


def test_lwf_keeps_old_predictions_closer_than_without_distillation(tiny_config):
    tiny_config["task_num"] = 2
    accuracy, drift = {}, {}
    for name, method in [
        ("finetune", {"name": "finetune", "kwargs": {"ce_classes": "seen"}}),
        ("no_kd", {"name": "lwf", "kwargs": {"lamda": 0.0}}),
        ("lwf", {"name": "lwf"}),
    ]:
        tiny_config["method"] = method
        probe = OldTaskPredictions()
        accuracy[name] = libcontinual.run(tiny_config, callbacks=[probe]).accuracy_matrix["cnn"]
        drift[name] = probe.drift()
    assert accuracy["finetune"][0] == accuracy["lwf"][0]  # the first task is plain cross-entropy for both
    # CE over every seen class forgets the old task outright; CE over the new logits (finetune's and LwF's
    # default) already spares the old logits, so this tiny stream cannot show KD in accuracy: the drift can.
    assert accuracy["finetune"][1][0] <= 25.0 <= accuracy["lwf"][1][0]
    # The distillation term itself keeps the old classes' predictions closer to the teacher's.
    assert drift["lwf"] < 0.75 * drift["no_kd"]


def test_lwf_with_a_coreset_trains_on_exemplars(tiny_config):
    config, _ = load_config(CONFIGS / "lwf_coreset.yaml")
    assert config.method.kwargs["ce_classes"] == "seen" and config.buffer.kwargs["buffer_size"] == 2000
    tiny_config["method"] = {"name": "lwf", "kwargs": config.method.kwargs}
    tiny_config["buffer"] = {"name": "linear", "kwargs": {**config.buffer.kwargs, "buffer_size": 12}}
    sizes = []

    class TrainingSetSize(Callback):
        def on_task_start(self, trainer, task, epochs, batches) -> None:
            sizes.append(batches)

    result = libcontinual.run(tiny_config, callbacks=[TrainingSetSize()])
    assert sizes == [3, 4, 4]  # 48 samples per task (batch 16), then + 12 exemplars
    assert [len(row) for row in result.accuracy_matrix["cnn"]] == [1, 2, 3]


def test_lwf_new_class_cross_entropy_refuses_a_buffer():
    method = LwF(resnet(), 64, 6)
    with pytest.raises(ConfigError, match="ce_classes: seen"):
        method.before_task(task(0), object(), loader_for(task(0)), [])
    with pytest.raises(ValueError, match="ce_classes"):
        LwF(resnet(), 64, 6, ce_classes="old")


# ----------------------------------------------------------------------------------------------- EWC
def trained_ewc(**kwargs) -> tuple[EWC, DeviceLoader]:
    """An EWC method after task 0 (Fisher computed) and inside task 1."""
    method = EWC(resnet(), 64, 6, **kwargs)
    first, second = task(0), task(1)
    method.before_task(first, None, loader_for(first), [])
    method.after_task(first, None, loader_for(first), [])
    second_loader = loader_for(second, seed=1)
    method.before_task(second, None, second_loader, [])
    return method, second_loader


def shift_parameters(method: EWC, scale: float, seed: int = 3) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in method.backbone.named_parameters():
            if name in method.anchors[0]:
                p.copy_(method.anchors[0][name] + scale * torch.randn(p.shape, generator=generator))


def test_ewc_penalty_is_zero_at_the_optimum_and_quadratic_around_it():
    method, _ = trained_ewc(lamda=10.0)
    fisher = method.fishers[0]
    assert all((f >= 0).all() for f in fisher.values()) and any((f > 0).any() for f in fisher.values())
    assert method.penalty() == 0
    shift_parameters(method, 0.01)
    small = method.penalty()
    shift_parameters(method, 0.02)
    assert small > 0
    torch.testing.assert_close(method.penalty(), 4 * small, rtol=1e-4, atol=0)


def test_ewc_penalises_old_parameters_only():
    method, loader = trained_ewc()
    names = set(method.fishers[0])
    assert "head.weights.0" in names and "head.weights.1" not in names  # the new task's chunk is free
    assert "stem.0.weight" in names
    method.after_task(task(1, num_tasks=2), None, loader, [])
    assert len(method.fishers) == 1  # no Fisher after the last task: nothing comes after it


def per_sample_squared_gradients(model: torch.nn.Module, loader: DeviceLoader, classes: int) -> list[dict]:
    """Brute force: one backward pass per sample, in eval mode."""
    model.eval()
    squares = []
    for image, label in zip(Normalize(MEAN, STD)(loader.images), loader.labels, strict=True):
        model.zero_grad()
        F.cross_entropy(model(image[None])[:, :classes], label[None]).backward()
        squares.append({name: p.grad.pow(2) for name, p in model.named_parameters()})
    return squares


def test_fisher_equals_a_per_sample_brute_force_loop():
    method, loader = trained_ewc()
    fisher = method.fisher(loader)
    squares = per_sample_squared_gradients(method.backbone, loader, 4)
    assert set(fisher) == set(squares[0])
    for name in fisher:
        expected = torch.stack([square[name] for square in squares]).mean(dim=0)
        torch.testing.assert_close(fisher[name], expected, rtol=1e-4, atol=1e-9)
    # ... and not the squared gradient of the batch loss (GEM's and PyCIL's shortcut).
    method.backbone.zero_grad()
    images = Normalize(MEAN, STD)(loader.images)
    F.cross_entropy(method.backbone(images)[:, :4], loader.labels).backward()
    batch_squared = dict(method.backbone.named_parameters())["stem.0.weight"].grad.pow(2)
    assert not torch.allclose(fisher["stem.0.weight"], batch_squared, rtol=0.1)


def test_fisher_sample_count_and_sampled_labels():
    method, loader = trained_ewc(fisher_samples=1)
    fisher = method.fisher(loader)
    squares = per_sample_squared_gradients(method.backbone, loader, 4)
    assert any(torch.allclose(fisher["stem.0.weight"], square["stem.0.weight"]) for square in squares)
    sampled, loader = trained_ewc(sample_labels=True)
    assert all(torch.isfinite(f).all() and (f >= 0).all() for f in sampled.fisher(loader).values())
    clamped, _ = trained_ewc(fisher_max=1e-6)
    assert max(float(f.max()) for f in clamped.fishers[0].values()) <= 1e-6


@pytest.mark.parametrize("fisher_update", ["merge", "per_task", "online"])
def test_ewc_fisher_update_merges_sums_or_runs(fisher_update):
    """merge: F = a F_old + (1 - a) F_new (a = n_old / n_seen, PyCIL); per_task: one pair per task; online:
    F = F_new + gamma F_old; a single anchor (the latest parameters) unless per_task."""
    gamma = 0.5
    method, loader = trained_ewc(fisher_update=fisher_update, gamma=gamma)
    first_fisher = {name: f.clone() for name, f in method.fishers[0].items()}
    shift_parameters(method, 0.05)
    new_fisher = method.fisher(loader)
    second = task(1)
    method.after_task(second, None, loader, [])
    current = dict(method.backbone.named_parameters())
    assert len(method.fishers) == len(method.anchors) == (2 if fisher_update == "per_task" else 1)
    assert all(torch.equal(anchor, current[name]) for name, anchor in method.anchors[-1].items())
    alpha = second.known_classes / second.total_classes
    assert alpha == 0.5
    for name, f in method.fishers[-1].items():
        expected = new_fisher[name]
        if name in first_fisher and fisher_update == "online":
            expected = expected + gamma * first_fisher[name]
        elif name in first_fisher and fisher_update == "merge":
            expected = alpha * first_fisher[name] + (1 - alpha) * expected
        torch.testing.assert_close(f, expected, rtol=1e-4, atol=1e-9)
    assert "head.weights.1" in method.fishers[-1]
    if fisher_update == "merge":  # the merged penalty stays the size of one task's, not the sum of two
        torch.testing.assert_close(method.fishers[-1]["head.weights.1"], new_fisher["head.weights.1"])


def test_ewc_rejects_an_unknown_fisher_update():
    with pytest.raises(ValueError, match="fisher_update"):
        EWC(resnet(), 64, 6, fisher_update="sum")


@pytest.mark.parametrize("name", ["lwf", "ewc"])
def test_state_dict_round_trip_gives_identical_outputs(tiny_config, name):
    tiny_config.update(task_num=2, epoch=1, method={"name": name})
    keep = KeepMethods()
    libcontinual.run(tiny_config, callbacks=[keep])
    trained = keep.methods[-1].eval()
    fresh = (LwF if name == "lwf" else EWC)(build_backbone(tiny_config["backbone"]["name"]), 64, 6)
    fresh.load_state_dict(trained.state_dict())
    methods = [trained, fresh.eval()]
    images = Normalize(MEAN, STD)(loader_for(task(2)).images)
    assert torch.equal(methods[0].scores(images), methods[1].scores(images))
    third = task(2)
    losses = []
    for method in methods:  # the next task starts the same way (teacher or penalty rebuilt from the state)
        torch.manual_seed(0)  # the new head chunk's initialisation
        method.before_task(third, None, loader_for(third), [])
        losses.append(method.observe(next(iter(loader_for(third))))[2])
    assert torch.equal(losses[0], losses[1]) and losses[0] > 0
