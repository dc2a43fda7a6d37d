"""Whole runs on tiny generated data: the run directory, determinism, finetune vs joint, CLI and API."""

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import libcontinual
from libcontinual.cli import main
from libcontinual.errors import ConfigError


def test_run_writes_a_complete_run_directory(tiny_config):
    result = libcontinual.run(tiny_config)
    run_dir = result.run_dir
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "log.txt", "metrics.jsonl", "results.json"}
    results = json.loads((run_dir / "results.json").read_text())
    matrix = results["accuracy_matrix"]["cnn"]
    assert [len(row) for row in matrix] == [1, 2, 3]
    assert set(results["accuracy_matrix"]) == {"cnn", "cnn_task_il"}
    # The summary follows from the matrix (equal task sizes: last = mean of the last row, average incremental
    # = mean of the row means), and the class order is the protocol's np.random.seed(1993) permutation.
    summary = results["summary"]["cnn"]
    assert summary["last_accuracy"] == pytest.approx(sum(matrix[-1]) / 3)
    assert summary["average_incremental_accuracy"] == pytest.approx(sum(sum(r) / len(r) for r in matrix) / 3)
    np.random.seed(1993)
    assert results["protocol"]["class_order"] == np.random.permutation(6).tolist()
    assert results["provenance"]["libcontinual_version"] == libcontinual.__version__
    assert len(results["task_wall_time_s"]) == 3 and results["peak_rss_mb"] > 0
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records].count("epoch") == 3 * 2
    assert [r["event"] for r in records].count("task") == 3
    assert all("loss_ce" in r for r in records if r["event"] == "epoch")
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["method"]["name"] == "finetune" and saved["seed"] == 7
    assert "after task 2" in (run_dir / "log.txt").read_text()


def test_same_seed_gives_identical_results_and_another_seed_differs(tiny_config):
    first = libcontinual.run(tiny_config).results
    second = libcontinual.run(tiny_config).results
    assert first["accuracy_matrix"] == second["accuracy_matrix"]
    other = libcontinual.run(tiny_config, seed=8, order_seed=5).results
    assert other["protocol"]["class_order"] != first["protocol"]["class_order"]
    assert other["accuracy_matrix"] != first["accuracy_matrix"]


def test_finetune_forgets_and_joint_remembers(tiny_config):
    tiny_config["epoch"] = 4
    # CE over every seen class: the form that overwrites old classes even on this easy synthetic data.
    tiny_config["method"] = {"name": "finetune", "kwargs": {"ce_classes": "seen"}}
    finetune = libcontinual.run(tiny_config).results["accuracy_matrix"]["cnn"]
    tiny_config["method"] = {"name": "joint"}
    joint = libcontinual.run(tiny_config).results["accuracy_matrix"]["cnn"]
    # task 0 after the last task: finetune has overwritten it, joint still classifies it
    assert finetune[-1][0] < 20.0
    assert joint[-1][0] > 80.0
    assert joint[0][0] > 80.0


def test_task_incremental_accuracy_is_at_least_class_incremental(tiny_config):
    results = libcontinual.run(tiny_config).results
    for class_il, task_il in zip(
        results["accuracy_matrix"]["cnn"], results["accuracy_matrix"]["cnn_task_il"], strict=True
    ):
        assert all(t >= c for c, t in zip(class_il, task_il, strict=True))


def test_schedulers_and_first_task_settings(tiny_config):
    tiny_config.update(
        init_epoch=3,
        init_optimizer={"name": "Adam", "kwargs": {"lr": 0.01}},
        lr_scheduler={"name": "MultiStepLR", "kwargs": {"milestones": [1], "gamma": 0.1}},
        val_per_epoch=1,
    )
    result = libcontinual.run(tiny_config)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["event"] == "epoch"]
    first_task = [r for r in epochs if r["task"] == 0]
    assert len(first_task) == 3 and first_task[0]["lr"] == 0.01  # init_optimizer, init_epoch
    later = [r["lr"] for r in epochs if r["task"] == 1]
    assert later == pytest.approx([0.05, 0.005])  # optimizer + MultiStepLR stepped per epoch
    evaluations = [r for r in records if r["event"] == "eval"]
    assert len(evaluations) == 2 + 1 + 1  # every epoch but the last of each task


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"backbone": {"name": "resnet33"}}, "Did you mean 'resnet32'"),
        ({"method": {"name": "finetun"}}, "Did you mean 'finetune'"),
        ({"optimizer": {"name": "sgd"}}, "Did you mean 'SGD'"),
        ({"optimizer": {"name": "SGD", "kwargs": {"learning_rate": 0.1}}}, "optimizer.kwargs.learning_rate"),
        ({"backbone": {"name": "resnet20", "kwargs": {"last_rel": False}}}, "Did you mean 'last_relu'"),
        (
            {"lr_scheduler": {"name": "MultiStepLR", "kwargs": {"milestone": [2]}}},
            "Did you mean 'milestones'",
        ),
        ({"task_num": 4}, r"needs .* = 8 classes, but dataset 'synthetic' has 6"),
        ({"dataset": {"name": "synthetic", "kwargs": {"classes": 3}}}, "Did you mean 'num_classes'"),
        ({"method": {"name": "finetune", "kwargs": {"backbone": 1}}}, "set by the library"),
    ],
)
def test_bad_components_fail_before_training_with_a_clear_message(tiny_config, tmp_path, change, pattern):
    tiny_config.update(change)
    with pytest.raises(ConfigError, match=pattern):
        libcontinual.run(tiny_config)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_unwritable_save_path_is_a_config_error(tiny_config, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    tiny_config["save_path"] = str(blocker / "runs")
    with pytest.raises(ConfigError, match="save_path"):
        libcontinual.run(tiny_config)


def test_plugin_method_from_a_user_file(tiny_config, tmp_path):
    plugin = tmp_path / "my_method.py"
    plugin.write_text(
        "from libcontinual import Method, register_method\n"
        "@register_method('plugin_finetune_e2e')\n"
        "class PluginFinetune(Method):\n"
        "    def __init__(self, backbone, feat_dim, num_class, scale: float = 1.0):\n"
        "        super().__init__(backbone, feat_dim, num_class)\n"
        "        self.scale = scale\n"
    )
    config_path = tmp_path / "exp.yaml"
    tiny_config.update(
        plugins=["my_method.py"], method={"name": "plugin_finetune_e2e", "kwargs": {"scale": 2.0}}
    )
    config_path.write_text(yaml.safe_dump(tiny_config))
    result = libcontinual.run(config_path)
    assert result.results["config"]["method"]["name"] == "plugin_finetune_e2e"


def test_cli_run_prints_the_accuracy_matrix(tiny_config, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    assert main(["run", str(path), "epoch=1"]) == 0
    out = capsys.readouterr().out
    assert "accuracy matrix (cnn" in out and "average incremental" in out and "run directory" in out


def test_cli_config_error_is_one_message_without_traceback(tiny_config, tmp_path):
    tiny_config["epochs"] = 3
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    proc = subprocess.run(
        [sys.executable, "-m", "libcontinual.cli", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "Did you mean 'epoch'" in proc.stderr


def test_full_accuracy_matrix_records_random_init_and_forward_transfer(tiny_config):
    tiny_config["epoch"] = 1
    results = libcontinual.run(tiny_config, full_accuracy_matrix=True).results
    matrix = results["accuracy_matrix"]["cnn"]
    assert [len(row) for row in matrix] == [3, 3, 3]
    assert len(results["random_init_accuracy"]["cnn"]) == 3
    summary = results["summary"]["cnn"]
    assert summary["acc"] == pytest.approx(sum(matrix[-1]) / 3)
    expected_fwt = sum(matrix[j - 1][j] - results["random_init_accuracy"]["cnn"][j] for j in (1, 2)) / 2
    assert summary["fwt"] == pytest.approx(expected_fwt)
    # class-incremental: a task whose classes the head does not have yet cannot be predicted
    assert matrix[0][1] == 0.0 and matrix[0][2] == 0.0


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux procfs to reset the peak")
def test_peak_memory_is_the_runs_own_not_an_earlier_peak_of_the_process(tiny_config):
    earlier = np.ones(2**30 // 8)  # 1 GiB touched before the run: the process's lifetime peak includes it
    del earlier
    lifetime_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results = libcontinual.run(tiny_config).results
    assert results["peak_rss_mb"] < lifetime_peak_mb - 512
