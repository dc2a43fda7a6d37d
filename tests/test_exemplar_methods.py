"""Replay, iCaRL, E2E, BiC and WA: each method's defining property, its state, and replay against finetune."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import libcontinual
from libcontinual.backbones import build_backbone
from libcontinual.backbones.heads import IncrementalLinear
from libcontinual.buffers import LinearBuffer, OnlineBuffer
from libcontinual.data.augment import BatchAugment, Normalize
from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.errors import ConfigError
from libcontinual.methods import e2e as e2e_module
from libcontinual.methods.bic import BiC
from libcontinual.methods.icarl import ICaRL
from libcontinual.methods.replay import Replay
from libcontinual.methods.wa import WA, align_weights
from probes import KeepMethods

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def task(index: int, per_task: int = 2, num_tasks: int = 3) -> TaskInfo:
    known = index * per_task
    return TaskInfo(index, num_tasks, tuple(range(known, known + per_task)), known, known + per_task)


def loader_for(info: TaskInfo, n: int = 12, seed: int = 0) -> DeviceLoader:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8, generator=generator)
    labels = torch.tensor([info.classes[i % len(info.classes)] for i in range(n)])
    return DeviceLoader(images, labels, 6, BatchAugment(MEAN, STD), shuffle=True, generator=generator)


def mlp():
    torch.manual_seed(0)
    return build_backbone("mlp", in_channels=3, input_size=16, hidden_sizes=[8])


def test_nme_predicts_the_class_whose_flip_augmented_exemplar_mean_is_nearest():
    method = ICaRL(mlp(), 8, 6)
    buffer = LinearBuffer(memory_per_class=3, strategy="random")
    first = task(0)
    loader = loader_for(first)
    method.before_task(first, buffer, loader, [])
    method.after_task(first, buffer, loader, [])
    assert len(buffer) == 6 and method.class_means.shape == (2, 8)
    method.eval()
    queries = Normalize(MEAN, STD)(loader_for(first, n=20, seed=5).images)
    predicted = method.scores(queries, classifier="nme").argmax(dim=1)
    with torch.no_grad():  # the definition, written out
        means = []
        for cls in first.classes:
            exemplars = Normalize(MEAN, STD)(buffer.images[buffer.labels == cls])
            both = torch.cat([exemplars, exemplars.flip(3)])
            features = F.normalize(method.backbone.forward_features(both), dim=1)
            means.append(F.normalize(features.mean(dim=0), dim=0))
        features = F.normalize(method.backbone.forward_features(queries), dim=1)
        distances = torch.stack([(features - mean).norm(dim=1) for mean in means], dim=1)
    assert torch.equal(predicted, distances.argmin(dim=1))
    assert set(predicted.tolist()) == {0, 1}  # not a constant guess
    restored = ICaRL(mlp(), 8, 6)
    restored.load_state_dict(method.state_dict())
    restored.eval()
    assert torch.equal(restored.scores(queries, classifier="nme"), method.scores(queries, classifier="nme"))


def test_bic_stage_two_changes_only_new_class_logits():
    method = BiC(mlp(), 8, 6, bias_epochs=30, bias_milestones=[])
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(10)
    logits = torch.randn(40, 4, generator=generator) + 3.0 * F.one_hot(labels, 4)
    logits[:, 2:] += 2.0  # the new classes (2, 3) are favoured: the bias BiC corrects
    before = method.corrected(logits)
    loss_before = F.cross_entropy(before, labels)
    method.correct_bias(logits, labels, known=2, batch_size=16, generator=generator)
    after = method.corrected(logits)
    assert torch.equal(after[:, :2], before[:, :2])
    assert not torch.allclose(after[:, 2:], before[:, 2:])
    assert F.cross_entropy(after, labels) < loss_before
    assert method.gamma[2] < 0 and method.gamma[2] == method.gamma[3] and method.beta[2] == method.beta[3]
    assert method.beta[:2].tolist() == [1.0, 1.0] and method.gamma[4:].tolist() == [0.0, 0.0]
    restored = BiC(mlp(), 8, 6)
    restored.load_state_dict(method.state_dict())
    assert torch.equal(restored.corrected(logits), after)


def test_bic_holds_out_a_balanced_validation_set_from_exemplars_and_new_data():
    method = BiC(mlp(), 8, 6, val_ratio=0.5)
    buffer = LinearBuffer(buffer_size=8, strategy="equal_random")
    first, second = task(0), task(1)
    method.before_task(first, buffer, loader_for(first), [])
    assert method.validation is None
    method.after_task(first, buffer, loader_for(first), [])
    loader = loader_for(second, n=20, seed=1)
    method.before_task(second, buffer, loader, [])
    images, labels = method.validation
    assert torch.bincount(labels).tolist() == [2, 2, 2, 2]  # 50 % of 4 exemplars per class, for every class
    assert loader.num_samples == 20 + 8 - 8
    with pytest.raises(ConfigError, match="linear"):
        BiC(mlp(), 8, 6).before_task(first, OnlineBuffer(buffer_size=8), loader_for(first), [])


def test_wa_equalises_the_mean_weight_norms_of_old_and_new_classes():
    head = IncrementalLinear(8, 4)
    head.expand(7)
    with torch.no_grad():
        head.weights[1].mul_(5.0)
    old = head.weights[0].clone()
    factor = align_weights(head, 4)
    norms = head.weight.norm(dim=1)
    torch.testing.assert_close(norms[4:].mean(), norms[:4].mean())
    assert torch.equal(head.weights[0], old) and factor < 1


def test_wa_clips_classifier_weights_only_in_incremental_tasks():
    """The first task trains exactly like finetune; from the second on, every step clips the head to >= 0."""
    method = WA(mlp(), 8, 6)
    buffer = LinearBuffer(buffer_size=4, strategy="random")
    first, second = task(0), task(1)
    loader = loader_for(first)
    method.before_task(first, buffer, loader, [])
    optimizer = torch.optim.SGD(method.get_parameters(None), lr=1.0)
    _, _, loss = method.observe(next(iter(loader)))
    method.optimizer_step(loss, optimizer)
    assert method.backbone.head.weight.min() < 0  # the first task is not clipped
    method.after_task(first, buffer, loader, [])
    loader = loader_for(second, seed=1)
    method.before_task(second, buffer, loader, [])
    optimizer = torch.optim.SGD(method.get_parameters(None), lr=1.0)
    assert method.backbone.head.weight.min() < 0
    _, _, loss = method.observe(next(iter(loader)))
    method.optimizer_step(loss, optimizer)
    assert method.backbone.head.weight.min() >= 0


def test_wa_first_task_trains_exactly_like_finetune(tiny_config):
    tiny_config.update(task_num=1, epoch=1)
    runs = {}
    for name in ("finetune", "wa"):
        keep = KeepMethods()
        tiny_config["method"] = {"name": name}
        tiny_config["buffer"] = {"name": "linear", "kwargs": {"buffer_size": 4}} if name == "wa" else None
        libcontinual.run(tiny_config, callbacks=[keep])
        runs[name] = dict(keep.methods[0].backbone.named_parameters())
    assert runs["wa"].keys() == runs["finetune"].keys()
    assert all(torch.equal(runs["wa"][key], runs["finetune"][key]) for key in runs["wa"])


@pytest.mark.parametrize("loss", ["kd", "bce"])
def test_icarl_distils_the_previous_model_on_old_classes(loss):
    method = ICaRL(mlp(), 8, 6, loss=loss)
    buffer = LinearBuffer(buffer_size=4, strategy="random")
    first, second = task(0), task(1)
    method.before_task(first, buffer, loader_for(first), [])
    method.after_task(first, buffer, loader_for(first), [])
    loader = loader_for(second, seed=1)
    method.before_task(second, buffer, loader, [])
    assert method.teacher is not None and not any(p.requires_grad for p in method.teacher.parameters())
    assert all(id(p) not in {id(q) for q in method.teacher.parameters()} for p in method.get_parameters(None))
    method.eval()  # the student still is its teacher: KD is 0, the BCE targets of old classes are its own
    _, _, value = method.observe(next(iter(loader)))
    terms = method.pop_losses()
    if loss == "kd":
        assert set(terms) == {"loss_ce", "loss_kd"} and abs(terms["loss_kd"]) < 1e-6
    else:
        assert set(terms) == {"loss_bce"} and value > 0
    with pytest.raises(ValueError, match="loss must be one of"):
        ICaRL(mlp(), 8, 6, loss="sigmoid")


def test_e2e_balanced_finetuning_uses_the_same_number_of_samples_per_class(tiny_config, monkeypatch):
    seen_labels = []

    class RecordingLoader(DeviceLoader):
        def __init__(self, images, labels, *args, **kwargs):
            seen_labels.append(labels.clone())
            super().__init__(images, labels, *args, **kwargs)

    monkeypatch.setattr(e2e_module, "DeviceLoader", RecordingLoader)
    tiny_config.update(task_num=2, epoch=1, method={"name": "e2e", "kwargs": {"balanced_epochs": 1}})
    tiny_config["buffer"] = {"name": "linear", "kwargs": {"buffer_size": 10, "strategy": "herding"}}
    libcontinual.run(tiny_config)
    (labels,) = seen_labels  # only the second task has old classes
    assert torch.bincount(labels).tolist() == [5, 5, 5, 5]


def test_replay_needs_a_buffer(tiny_config):
    with pytest.raises(ConfigError, match="needs exemplars"):
        libcontinual.run(tiny_config, method={"name": "replay"})


def test_replay_with_an_online_buffer_trains_on_mixed_batches():
    method = Replay(mlp(), 8, 6)
    buffer = OnlineBuffer(buffer_size=6)
    first, second = task(0), task(1)
    method.before_task(first, buffer, loader_for(first), [])
    method.after_task(first, buffer, loader_for(first), [])
    loader = loader_for(second, seed=1)
    method.before_task(second, buffer, loader, [])
    assert loader.num_samples == 12
    pred, _, loss = method.observe(next(iter(loader)))
    assert pred.shape == (6 + 6,) and loss > 0
    resumed = Replay(mlp(), 8, 6)  # resumed inside the task: state loaded, then resume_task
    resumed.load_state_dict(method.state_dict())
    resumed.resume_task(second, buffer, loader, [])
    pred, _, _ = resumed.observe(next(iter(loader)))
    assert pred.shape == (6 + 6,)


@pytest.fixture(scope="module")
def finetune_matrix(tmp_path_factory):
    from conftest import TINY_CONFIG

    config = copy.deepcopy(TINY_CONFIG)
    config.update(epoch=4, save_path=str(tmp_path_factory.mktemp("runs")))
    # Replay's loss (CE over every seen class) without its memory: the baseline it must beat.
    config["method"] = {"name": "finetune", "kwargs": {"ce_classes": "seen"}}
    return config, libcontinual.run(config).results["accuracy_matrix"]["cnn"]


@pytest.mark.parametrize("buffer", ["linear", "online"])
def test_replay_beats_finetune_on_the_old_tasks(finetune_matrix, buffer):
    config, finetune = finetune_matrix
    replay_config = {**config, "method": {"name": "replay"}}
    replay_config["buffer"] = {"name": buffer, "kwargs": {"buffer_size": 24, "strategy": "equal_random"}}
    replay = libcontinual.run(replay_config).results["accuracy_matrix"]["cnn"]
    assert finetune[-1][0] < 20.0 and finetune[-1][1] < 20.0  # finetune has overwritten tasks 0 and 1
    assert replay[-1][0] > 60.0 and replay[-1][1] > 60.0
