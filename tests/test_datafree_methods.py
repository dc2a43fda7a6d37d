"""Data-free methods (abd, deepinversion, lwf_mc): their defining properties, memory 0, pictures, resume."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

import libcontinual
from libcontinual.backbones import build_backbone
from libcontinual.buffers.linear import LinearBuffer
from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.engine.checkpoint import CheckpointStore
from libcontinual.engine.entry import resume
from libcontinual.engine.experiment import register_everything
from libcontinual.errors import ConfigError
from libcontinual.generative.dreamer import Dreamer
from libcontinual.registry import METHODS
from test_resume import _reference_run, _subprocess_run, metrics_without_timing

register_everything()
DATA_FREE = ("abd", "deepinversion", "lwf_mc")
TINY_GENERATOR = {"generator_steps": 6, "generator_batch_size": 16}


def kwargs_for(name: str) -> dict:
    return {} if name == "lwf_mc" else dict(TINY_GENERATOR)


def loader(classes: tuple[int, ...], n: int = 32, seed: int = 0) -> DeviceLoader:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.tensor(classes).repeat(n // len(classes))
    return DeviceLoader(images, labels, 16, lambda x, g: x.float() / 127.5 - 1.0)


def method_after_one_task(name: str):
    """A method that has trained (briefly) on task 0 and started task 1 of a 2 + 2 class stream."""
    torch.manual_seed(0)
    backbone = build_backbone("resnet8")
    method = METHODS.get(name)(backbone, backbone.num_features, 4, **kwargs_for(name))
    tasks = [TaskInfo(0, 2, (0, 1), 0, 2), TaskInfo(1, 2, (2, 3), 2, 4)]
    first = loader((0, 1))
    method.before_task(tasks[0], None, first, [])
    optimizer = torch.optim.SGD(method.get_parameters(None), lr=0.05)
    method.train()
    for batch in first:
        _, _, loss = method.observe(batch)
        method.optimizer_step(loss, optimizer)
    method.after_task(tasks[0], None, first, [])
    second = loader((2, 3), seed=1)
    method.before_task(tasks[1], None, second, [])
    method.train()
    return method, next(iter(second))


def backbone_parameters(method) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in method.backbone.named_parameters() if not n.startswith("head.")]


def test_abd_synthetic_ce_gives_exactly_zero_gradient_to_every_backbone_parameter():
    method, batch = method_after_one_task("abd")
    _, terms = method.loss_terms(batch)
    named = backbone_parameters(method)
    grads = torch.autograd.grad(
        terms["loss_ce_head"], [p for _, p in named], allow_unused=True, retain_graph=True
    )
    assert all(g is None or not g.any() for g in grads), [
        n for (n, _), g in zip(named, grads, strict=True) if g is not None and g.any()
    ]
    head = [p for n, p in method.backbone.named_parameters() if n.startswith("head.")]
    head_grads = torch.autograd.grad(terms["loss_ce_head"], head, retain_graph=True)
    assert all(g.abs().sum() > 0 for g in head_grads)  # the head, old and new chunks, learns from it
    for other in ("loss_ce_new", "loss_kd"):  # the other terms do train the backbone
        grads = torch.autograd.grad(terms[other], [p for _, p in named], allow_unused=True, retain_graph=True)
        assert any(g is not None and g.any() for g in grads), other


def test_abd_weights_old_and_new_samples_by_their_share_of_the_seen_classes():
    method, batch = method_after_one_task("abd")
    torch.manual_seed(1)
    state = method.dreamer.rng().get_state()
    _, terms = method.loss_terms(batch)
    method.dreamer.rng().set_state(state)
    synthetic = method.dreamer.images(batch["label"].shape[0])
    synthetic_labels = method.teacher(synthetic)[:, :2].argmax(dim=1)
    inputs = torch.cat([batch["image"], synthetic])
    # train-mode BN: recompute on the same inputs gives the same features
    logits = method.backbone(inputs)[:, :4]
    targets = torch.cat([batch["label"], synthetic_labels])
    expected = (F.cross_entropy(logits, targets, reduction="none") * 0.5).mean()  # 2 old / 4 seen = 0.5 each
    assert torch.allclose(terms["loss_ce_head"], expected, atol=1e-5)
    assert bool((synthetic_labels < 2).all())


def test_replay_labels_are_the_teachers_argmax_over_the_old_classes():
    method, _ = method_after_one_task("deepinversion")
    images, labels, logits = method.dreamer.sample(method.teacher, 40, method.known_classes)
    assert logits.shape == (40, 2)
    assert torch.equal(labels, method.teacher(images)[:, :2].argmax(dim=1))
    assert not any(m._forward_hooks for m in method.teacher.modules())  # hooks were removed after use


def test_deepinversion_distils_old_classes_on_real_and_all_classes_on_synthetic_images():
    method, batch = method_after_one_task("deepinversion")
    state = method.dreamer.rng().get_state()
    _, terms = method.loss_terms(batch)
    method.dreamer.rng().set_state(state)
    synthetic = method.dreamer.images(batch["label"].shape[0])
    synthetic_teacher = method.teacher(synthetic)[:, :2]
    real = batch["label"].shape[0]
    logits = method.backbone(torch.cat([batch["image"], synthetic]))[:, :4]
    old_real = F.softmax(method.teacher(batch["image"])[:, :2] / 2, dim=1)
    old_synthetic = F.softmax(synthetic_teacher / 2, dim=1)
    kd_real = -(old_real * F.log_softmax(logits[:real, :2] / 2, dim=1)).sum(1).mean()
    kd_synthetic = -(old_synthetic * F.log_softmax(logits[real:, :4] / 2, dim=1)[:, :2]).sum(1).mean()
    assert torch.allclose(terms["loss_kd"], kd_real + kd_synthetic, atol=1e-5)
    assert torch.allclose(terms["loss_ce"], F.cross_entropy(logits[:real], batch["label"]), atol=1e-5)
    with pytest.raises(ConfigError, match="synthetic_kd"):
        METHODS.get("deepinversion")(build_backbone("resnet8"), 64, 4, synthetic_kd="both")


def test_lwf_mc_old_class_targets_are_the_old_models_sigmoid_outputs():
    method, batch = method_after_one_task("lwf_mc")
    images, labels = batch["image"], batch["label"]
    targets = method.targets(images, labels)
    with torch.no_grad():
        old = torch.sigmoid(method.teacher(images)[:, :2])
    assert torch.equal(targets[:, :2], old)
    assert torch.equal(targets[:, 2:], F.one_hot(labels - 2, 2).float())
    _, _, loss = method.observe(batch)
    probabilities = torch.sigmoid(method.backbone(images)[:, :4])
    expected = F.binary_cross_entropy(probabilities, targets, reduction="sum") / labels.shape[0]
    assert torch.allclose(loss, expected, atol=1e-5)


@pytest.mark.parametrize("name", DATA_FREE)
def test_a_configured_buffer_is_a_clear_error(tiny_config, name):
    tiny_config["method"] = {"name": name, "kwargs": kwargs_for(name)}
    tiny_config["buffer"] = {"name": "linear", "kwargs": {"buffer_size": 8}}
    with pytest.raises(ConfigError, match="data-free .*Remove 'buffer'"):
        libcontinual.run(tiny_config)
    assert not Path(tiny_config["save_path"]).exists() or not any(Path(tiny_config["save_path"]).iterdir())
    method = METHODS.get(name)(build_backbone("resnet8"), 64, 4, **kwargs_for(name))
    with pytest.raises(ConfigError, match="buffer"):
        method.before_task(TaskInfo(0, 2, (0, 1), 0, 2), LinearBuffer(8), loader((0, 1)), [])


@pytest.mark.parametrize("name", DATA_FREE)
def test_no_method_keeps_an_exemplar(tiny_config, name):
    tiny_config.update(method={"name": name, "kwargs": kwargs_for(name)}, epoch=1)
    run = libcontinual.run(tiny_config)
    checkpoint = CheckpointStore(run.run_dir / "checkpoints").load_latest()[0]
    assert checkpoint["buffer"] is None
    image_shape = (3, 8, 8)
    for key, value in checkpoint["method"].items():
        if isinstance(value, torch.Tensor):
            assert value.dtype != torch.uint8, key
            assert tuple(value.shape[-3:]) != image_shape, key


@pytest.mark.parametrize("name", ["abd", "deepinversion"])
def test_each_task_but_the_last_writes_a_picture_of_synthetic_images_per_class(tiny_config, name):
    tiny_config.update(method={"name": name, "kwargs": kwargs_for(name)}, epoch=1)
    run = libcontinual.run(tiny_config)
    dreams = run.run_dir / "dreams"
    assert sorted(p.name for p in dreams.iterdir()) == [
        "task-0.json",
        "task-0.png",
        "task-1.json",
        "task-1.png",
    ]
    record = json.loads((dreams / "task-1.json").read_text())
    assert record["generator"]["steps"] == 6 and len(record["synthetic_class_counts"]) == 4
    assert sum(record["synthetic_class_counts"]) == record["samples"]
    assert record["generator"]["history"][-1]["step"] == 5


def generator_crash(monkeypatch, task: int, step: int) -> None:
    """Die (like a killed process) at one step of the generator training after ``task``."""
    calls = {"fits": 0, "steps": 0}
    original_fit, original_terms = Dreamer.fit, Dreamer.loss_terms

    def fit(self, *args, **kwargs):
        calls["steps"] = 0
        calls["fits"] += 1
        return original_fit(self, *args, **kwargs)

    def loss_terms(self, *args, **kwargs):
        calls["steps"] += 1
        if calls["fits"] == task + 1 and calls["steps"] == step + 1:
            raise KeyboardInterrupt(f"simulated kill in generator training after task {task}")
        return original_terms(self, *args, **kwargs)

    monkeypatch.setattr(Dreamer, "fit", fit)
    monkeypatch.setattr(Dreamer, "loss_terms", loss_terms)


@pytest.mark.parametrize("name", ["abd", "deepinversion"])
def test_a_crash_during_generator_training_resumes_to_the_identical_result(tiny_config, name, monkeypatch):
    """Generator training inside after_task is not checkpointed mid-way: re-running it from the last
    checkpoint (the task's last epoch) must repeat it bit for bit, pictures included."""
    tiny_config.update(method={"name": name, "kwargs": kwargs_for(name)}, epoch=2, checkpoint_every=1)
    reference = libcontinual.run(tiny_config)
    with monkeypatch.context() as patch:
        generator_crash(patch, task=1, step=3)
        with pytest.raises(KeyboardInterrupt):
            libcontinual.run(tiny_config)
    crashed = max(Path(tiny_config["save_path"]).glob(f"{name}-*"), key=lambda p: p.stat().st_mtime)
    assert not (crashed / "results.json").exists()
    assert not (crashed / "dreams" / "task-1.png").exists()
    resumed = resume(crashed)
    assert resumed.accuracy_matrix == reference.accuracy_matrix
    assert metrics_without_timing(crashed) == metrics_without_timing(reference.run_dir)
    for picture in ("task-0.png", "task-1.png"):
        assert (crashed / "dreams" / picture).read_bytes() == (
            reference.run_dir / "dreams" / picture
        ).read_bytes()


@pytest.mark.slow
def test_sigkill_during_generator_training_then_resume_matches_an_uninterrupted_run(tiny_config, tmp_path):
    """A real kill -9 of the CLI process while the generator trains after task 0, then ``resume``."""
    tiny_config.update(
        method={"name": "abd", "kwargs": {"generator_steps": 150, "generator_batch_size": 16}},
        epoch=2,
        checkpoint_every=1,
        num_threads=1,
    )
    tiny_config["scenario"] = {"name": "class_incremental"}
    tiny_config["task_num"] = 2
    tiny_config["dataset"]["kwargs"]["num_classes"] = 4
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config))
    _reference_run(config_path, tmp_path / "ref", timeout=300)
    proc = _subprocess_run(config_path, "run")
    save_path = Path(tiny_config["save_path"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        logs = list(save_path.glob("*/log.txt"))
        if logs and "training the generator" in logs[0].read_text():
            break
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    run_dir = next(save_path.iterdir())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    if any(r["event"] == "task" for r in records):
        pytest.skip("the kill came after the generator training; nothing to test")
    resumed = subprocess.run(
        [sys.executable, "-m", "libcontinual.cli", "resume", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    ref_dir = next((tmp_path / "ref").iterdir())
    ours = json.loads((run_dir / "results.json").read_text())["accuracy_matrix"]
    assert ours == json.loads((ref_dir / "results.json").read_text())["accuracy_matrix"]
    assert (run_dir / "dreams" / "task-0.png").read_bytes() == (
        ref_dir / "dreams" / "task-0.png"
    ).read_bytes()


def test_report_shows_the_pictures_and_the_generators_numbers(tiny_config):
    pytest.importorskip("matplotlib", reason="reports need the report extra (matplotlib)")
    from libcontinual.report import write_report

    tiny_config.update(method={"name": "abd", "kwargs": kwargs_for("abd")}, epoch=1)
    run = libcontinual.run(tiny_config)
    report = write_report(run.run_dir)
    text = report.read_text()
    assert "## Synthetic images" in text
    links = re.findall(r"!\[synthetic images after task (\d)\]\(([^)]+)\)", text)
    assert [task for task, _ in links] == ["0", "1"]
    assert all((report.parent / link).resolve().is_file() for _, link in links)
    assert "| 1 | 6 |" in text  # after task 1: 6 generator steps
    plain = libcontinual.run({**tiny_config, "method": {"name": "finetune"}})
    assert "Synthetic images" not in write_report(plain.run_dir).read_text()
