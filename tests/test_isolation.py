"""Parameter isolation (PackNet, Piggyback, CPG): zero forgetting, ownership, pruning, growth, resume."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import libcontinual
from libcontinual.backbones import build_backbone
from libcontinual.config import load_config
from libcontinual.engine.entry import resume
from libcontinual.engine.experiment import register_everything
from libcontinual.engine.trainer import Callback
from libcontinual.errors import ConfigError
from libcontinual.isolation.masks import (
    mask_gradient_,
    pack_bits,
    prune_layer_,
    unpack_bits,
    zhu_gupta_sparsity,
)
from libcontinual.registry import METHODS
from test_resume import CrashAt, SimulatedCrash

register_everything()
ISOLATION = ["packnet", "piggyback", "cpg"]
FIXED_BATCH = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def vgg_config(tiny_config: dict, name: str, **kwargs) -> dict:
    """Three 2-class tasks of 32x32 images on a 1/16-width VGG16-BN, task-incremental protocol."""
    config = copy.deepcopy(tiny_config)
    config.update(
        image_size=32,
        epoch=2,
        backbone={"name": "vgg16_bn", "kwargs": {"width": 0.0625, "fc_features": 256}},
        method={"name": name, "kwargs": kwargs},
        optimizer={"name": "SGD", "kwargs": {"lr": 0.1, "momentum": 0.9}},
        protocol="task_il",
    )
    return config


class TaskLogits(Callback):
    """After each task: the logits of every learned task on a fixed batch (eval mode)."""

    def __init__(self) -> None:
        self.after: list[list[torch.Tensor]] = []
        self.methods: list = []

    def on_task_end(self, trainer, record):
        method = trainer.method
        method.eval()
        tasks = method.seen_tasks[: record["task"] + 1]
        self.after.append([method.scores(FIXED_BATCH, t.index)[:, list(t.classes)] for t in tasks])
        method.train()
        self.methods.append(method)


def assert_old_logits_unchanged(after: list[list[torch.Tensor]]) -> None:
    for later in range(1, len(after)):
        for task in range(later):
            assert torch.equal(after[task][task], after[later][task]), (task, later)


CPG_GROWS = {"goals": [0.0, 101.0, 0.0], "growth_step": 0.5, "max_parameter_multiplier": 1.5}


@pytest.mark.parametrize(
    "name, kwargs", [("packnet", {}), ("piggyback", {}), ("cpg", {}), ("cpg", CPG_GROWS)], ids=str
)
def test_earlier_tasks_logits_are_bit_identical_after_later_tasks(tiny_config, name, kwargs):
    recorder = TaskLogits()
    result = libcontinual.run(vgg_config(tiny_config, name, **kwargs), callbacks=[recorder])
    assert_old_logits_unchanged(recorder.after)
    matrix = result.accuracy_matrix["cnn_task_il"]
    assert "cnn" not in result.accuracy_matrix  # task_il protocol: no class-incremental pass
    assert result.summary["cnn_task_il"]["forgetting"] == 0.0
    assert all(matrix[i][j] == matrix[j][j] for i in range(3) for j in range(i + 1))
    if kwargs:
        events = result.results["method_report"]["growth_events"]
        assert [e["task"] for e in events] == [1]  # the goal of 101 % cannot be met: grow once, to the cap
        assert events[0]["weights_after"] > events[0]["weights_before"]


def test_crash_after_growth_resumes_to_the_same_logits_and_matrix(tiny_config):
    config = vgg_config(tiny_config, "cpg", **CPG_GROWS)
    config["checkpoint_every"] = 1
    reference = TaskLogits()
    expected = libcontinual.run(config, callbacks=[reference])
    crashed = TaskLogits()
    with pytest.raises(SimulatedCrash):
        libcontinual.run(config, callbacks=[crashed, CrashAt(task=2, epoch=1, batch=1)])
    run_dir = max(Path(config["save_path"]).glob("cpg-*"), key=lambda p: p.stat().st_mtime)
    resumed = TaskLogits()
    result = resume(run_dir, callbacks=[resumed])  # a fresh model: resume rebuilds the grown shapes
    assert result.accuracy_matrix == expected.accuracy_matrix
    assert result.results["method_report"] == expected.results["method_report"]
    for task in range(2):
        assert torch.equal(resumed.after[-1][task], crashed.after[task][task])
        assert torch.equal(resumed.after[-1][task], reference.after[-1][task])
    assert torch.equal(resumed.after[-1][2], reference.after[-1][2])


@pytest.mark.parametrize("name", ["packnet", "cpg"])
def test_a_gradient_step_leaves_weights_of_other_tasks_bit_identical(tiny_config, name):
    recorder = TaskLogits()
    config = vgg_config(tiny_config, name)
    config["task_num"] = 2
    libcontinual.run(config, callbacks=[recorder])
    method = recorder.methods[-1]
    owners = [method.owners[i].clone() for i in range(len(method.owners))]
    assert any(bool((o == 1).any()) for o in owners) and any(bool((o == 2).any()) for o in owners)
    before = [w.detach().clone() for w in method.weights()]
    if name == "cpg":  # as while task 1 trains: earlier weights enter through its pick mask
        method.picks.start(method.task_shapes[-1], method.device)
    # more steps of task 1 (owner 2) through the method's own update, with weight decay
    method.weight_decay = 0.1
    optimizer = torch.optim.SGD(method.trainable_parameters(), lr=1.0, momentum=0.9)
    batch = {"image": FIXED_BATCH, "label": torch.tensor([2, 3, 2, 3, 2, 3])}
    method.train()
    for _ in range(2):
        _, _, loss = method.observe(batch)
        method.optimizer_step(loss, optimizer)
    moved = False
    for owner, old, new in zip(owners, before, method.weights(), strict=True):
        others = owner != 2
        assert torch.equal(old[others], new.detach()[others])
        moved |= not torch.equal(old[~others], new.detach()[~others])
    assert moved  # the task's own weights did move


def test_pruning_hits_the_target_sparsity_of_every_layer():
    torch.manual_seed(0)
    for shape in [(16, 8, 3, 3), (32, 40), (7, 3, 3, 3)]:
        weight = torch.randn(shape)
        owners = torch.ones(shape, dtype=torch.uint8)  # task 0 owns the layer
        owners.view(-1)[: owners.numel() // 5] = 9  # a fifth belongs to task 8: never pruned
        frozen = weight[owners == 9].clone()
        capacity = int((owners == 1).sum())
        for sparsity in (0.1, 0.5, 0.9):
            prune_layer_(weight, owners, 0, sparsity)
            free = int((owners == 0).sum())
            assert free == round(sparsity * capacity)
            assert torch.equal(weight[owners == 9], frozen)
            assert bool((weight[owners == 0] == 0).all())
            if free:
                assert weight[owners == 1].abs().min() >= weight.new_tensor(0.0)
        kept = weight[owners == 1].abs()
        assert kept.numel() == capacity - round(0.9 * capacity)


def test_pruning_keeps_the_largest_magnitudes():
    weight = torch.tensor([0.3, -2.0, 0.1, 1.5, -0.05, 0.7, -0.9, 0.2])
    owners = torch.ones(8, dtype=torch.uint8)
    prune_layer_(weight, owners, 0, 0.5)
    assert owners.tolist() == [0, 1, 0, 1, 0, 1, 1, 0]


def test_gradual_schedule_gives_the_zhu_gupta_values():
    # s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3
    assert zhu_gupta_sparsity(100, 100, 200, 0.2, 0.8) == pytest.approx(0.2)
    assert zhu_gupta_sparsity(150, 100, 200, 0.2, 0.8) == pytest.approx(0.8 - 0.6 * 0.125)
    assert zhu_gupta_sparsity(175, 100, 200, 0.0, 0.9) == pytest.approx(0.9 - 0.9 * 0.25**3)
    assert zhu_gupta_sparsity(200, 100, 200, 0.2, 0.8) == pytest.approx(0.8)
    assert zhu_gupta_sparsity(999, 100, 200, 0.2, 0.8) == pytest.approx(0.8)
    assert zhu_gupta_sparsity(0, 100, 200, 0.2, 0.8) == pytest.approx(0.2)


def test_masks_are_packed_one_bit_per_weight():
    mask = torch.rand(5, 7, 3) > 0.4
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-mask.numel() // 8)
    assert torch.equal(unpack_bits(packed, mask.shape), mask)


def test_gradient_mask_keeps_only_own_weights_and_decays_only_them():
    weight = torch.nn.Parameter(torch.randn(4, 4))
    weight.grad = torch.ones(4, 4)
    owners = torch.tensor([[1, 2, 0, 2]] * 4, dtype=torch.uint8)
    mask_gradient_(weight, owners, 1, weight_decay=0.5)
    own = owners == 2
    assert torch.equal(weight.grad[~own], torch.zeros(int((~own).sum())))
    assert torch.allclose(weight.grad[own], 1 + 0.5 * weight.detach()[own])


def test_growth_keeps_every_weight_and_earlier_outputs(tiny_config):
    backbone = build_backbone("vgg16_bn", width=0.0625, fc_features=256)
    old = {name: p.detach().clone() for name, p in backbone.named_parameters()}
    ids = {name: id(p) for name, p in backbone.named_parameters()}
    backbone.grow_to(0.1)
    for name, parameter in backbone.named_parameters():
        assert id(parameter) == ids[name]
        block = tuple(slice(0, n) for n in old[name].shape)
        assert torch.equal(parameter.detach()[block], old[name])
        assert parameter.shape != old[name].shape or name.startswith("head")
    recorder = TaskLogits()
    config = vgg_config(tiny_config, "packnet")
    config["task_num"] = 2
    libcontinual.run(config, callbacks=[recorder])
    method = recorder.methods[-1]
    method.eval()
    before = [method.scores(FIXED_BATCH, t) for t in range(2)]
    method.grow(0.125)
    assert all(torch.equal(method.scores(FIXED_BATCH, t), before[t]) for t in range(2))


def test_a_grown_model_saves_and_loads_into_a_fresh_one(tiny_config):
    recorder = TaskLogits()
    config = vgg_config(tiny_config, "cpg", **CPG_GROWS)
    libcontinual.run(config, callbacks=[recorder])
    grown = recorder.methods[-1]
    state = copy.deepcopy(grown.state_dict())
    backbone = build_backbone("vgg16_bn", width=0.0625, fc_features=256)
    fresh = METHODS.get("cpg")(backbone, backbone.num_features, 6, **CPG_GROWS)
    fresh.load_state_dict(state)
    fresh.eval()
    grown.eval()
    assert fresh.backbone.width > 0.0625
    for task in range(3):
        assert torch.equal(fresh.scores(FIXED_BATCH, task), grown.scores(FIXED_BATCH, task))
    assert fresh.task_report() == grown.task_report()


def test_report_counts_parameters_and_mask_bytes_per_task(tiny_config):
    result = libcontinual.run(vgg_config(tiny_config, "cpg"))
    report = result.results["method_report"]
    total = report["total_weights"]
    owned = sum(t["owned_weights"] for t in report["tasks"])
    assert owned + report["free_weights"] == total == report["owner_map_bytes"]
    assert report["tasks"][0]["mask_bytes"] == 0
    assert all(t["mask_bytes"] == -(-total // 8) or t["mask_bytes"] > 0 for t in report["tasks"][1:])


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("packnet", {"prune_ratio": 1.0}, "prune_ratio must lie in \\[0, 1\\)"),
        ("cpg", {"sparsities": [0.5, 1.0]}, "sparsities must lie in \\[0, 1\\)"),
        ("cpg", {"max_parameter_multiplier": 0.5}, "max_parameter_multiplier must be >= 1"),
        ("piggyback", {"mask_init": 1e-3}, "must exceed the threshold"),
    ],
)
def test_bad_isolation_settings_fail_before_training(tiny_config, name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        libcontinual.run(vgg_config(tiny_config, name, **kwargs))


def test_optimizer_weight_decay_and_schedulers_are_refused(tiny_config):
    config = vgg_config(tiny_config, "packnet")
    config["optimizer"]["kwargs"]["weight_decay"] = 5e-4
    with pytest.raises(ConfigError, match="optimizer.kwargs.weight_decay"):
        libcontinual.run(config)
    config = vgg_config(tiny_config, "packnet")
    config["lr_scheduler"] = {"name": "StepLR", "kwargs": {"step_size": 1}}
    with pytest.raises(ConfigError, match="lr_scheduler"):
        libcontinual.run(config)


def test_growth_beyond_the_cap_and_task_ids_out_of_range_are_clear_errors(tiny_config):
    recorder = TaskLogits()
    config = vgg_config(tiny_config, "cpg", **CPG_GROWS)
    config["task_num"] = 2
    libcontinual.run(config, callbacks=[recorder])
    method = recorder.methods[-1]
    assert not method.can_grow()
    with pytest.raises(ConfigError, match="growth cap max_parameter_multiplier=1.5 is reached"):
        method.restart_wider()
    with pytest.raises(ValueError, match="task id 2 out of range: CPG has learned 2 task"):
        method.scores(FIXED_BATCH, 2)
    with pytest.raises(ValueError, match="task id -1 out of range"):
        method.scores(FIXED_BATCH, -1)


def test_protocol_key_is_validated(tiny_config):
    tiny_config["protocol"] = "task-il"
    with pytest.raises(ConfigError, match="key 'protocol' is 'task-il', not one of class_il, task_il"):
        load_config(tiny_config)


def test_finetune_under_the_task_il_protocol_reports_only_task_il_accuracy(tiny_config):
    tiny_config["protocol"] = "task_il"
    result = libcontinual.run(tiny_config)
    assert list(result.accuracy_matrix) == ["cnn_task_il"]
    assert result.results["protocol"]["evaluation"] == "task_il"


@pytest.mark.parametrize("name", ISOLATION + ["individual"])
def test_isolation_methods_are_task_aware(name):
    assert METHODS.get(name).task_aware_inference
