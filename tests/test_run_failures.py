"""What a run does when its own run stops, diverges or cannot write (issue 20, items 4, 5, 6 and 9)."""

import errno
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import libcontinual
from libcontinual import files
from libcontinual.engine import run_dir as run_dir_module
from libcontinual.engine.checkpoint import CheckpointStore
from libcontinual.engine.entry import resume
from libcontinual.engine.experiment import register_everything
from libcontinual.engine.trainer import Callback
from libcontinual.errors import TrainingError
from libcontinual.report.load import read_metrics
from test_checkpoint_safety import interrupted_run
from test_methods_contract import method_settings
from test_resume import metrics_without_timing

register_everything()


def test_a_stop_inside_an_epoch_keeps_the_named_losses_of_that_epoch(tiny_config):
    """SIGTERM's checkpoint (inside an epoch) holds the loss_ce / loss_kd sums, so the resumed epoch's
    record equals an uninterrupted run's, not only its total loss."""
    tiny_config.update(method_settings("lwf"), epoch=2, checkpoint_every=1)
    reference = libcontinual.run(tiny_config)
    run_dir = interrupted_run(tiny_config, task=1, batch=1)
    resume(run_dir)
    ours, theirs = metrics_without_timing(run_dir), metrics_without_timing(reference.run_dir)
    assert [r.get("loss_kd") for r in ours] == [r.get("loss_kd") for r in theirs]
    assert ours == theirs


def test_metrics_shorter_than_the_checkpoint_says_are_not_padded(tiny_config, caplog):
    tiny_config.update(epoch=2, checkpoint_every=1)
    run_dir = interrupted_run(tiny_config)
    metrics = run_dir / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes()[:-30])  # lost lines, and a partial last one
    resume(run_dir)
    data = metrics.read_bytes()
    assert b"\0" not in data
    assert all(record["event"] for record in read_metrics(metrics))  # every line parses
    assert "records before the checkpoint are lost" in caplog.text


def test_metrics_are_fsynced_before_a_checkpoint_counts_them(tiny_config, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(run_dir_module.os, "fsync", spy)
    tiny_config.update(epoch=1)
    result = libcontinual.run(tiny_config)
    assert (result.run_dir / "metrics.jsonl").stat().st_ino in synced


@pytest.mark.parametrize("name", ["finetune", "gem"])
def test_a_diverging_run_stops_instead_of_finishing(tiny_config, name):
    if name == "gem":
        pytest.importorskip("quadprog", reason="GEM needs quadprog (pip install 'libcontinual[gem]')")
    tiny_config.update(method_settings(name))
    tiny_config["optimizer"] = {"name": "SGD", "kwargs": {"lr": 1.0e6}}
    with pytest.raises(TrainingError, match=r"above max_loss \(1e\+06\): the run diverged"):
        libcontinual.run(tiny_config)
    assert not any(Path(tiny_config["save_path"]).glob("*/results.json"))
    tiny_config["max_loss"] = None  # the check can be turned off
    assert libcontinual.run(tiny_config).results["accuracy_matrix"]


class FailWritesFrom(Callback):
    """From task 1 on, every fsync fails as on a full disk / a folder remounted read-only."""

    def __init__(self, monkeypatch, code: int) -> None:
        self.monkeypatch, self.code = monkeypatch, code

    def on_task_start(self, trainer, task, epochs, batches):
        if task.info.index == 1:

            def fail(fd):
                raise OSError(self.code, os.strerror(self.code))

            self.monkeypatch.setattr(files.os, "fsync", fail)
            self.monkeypatch.setattr(run_dir_module.os, "fsync", fail)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_failed_write_names_the_file_keeps_the_checkpoint_and_says_how_to_resume(
    tiny_config, monkeypatch, code
):
    tiny_config.update(epoch=2, checkpoint_every=1)
    reference = libcontinual.run(tiny_config)
    with pytest.raises(TrainingError) as info:
        libcontinual.run(tiny_config, callbacks=[FailWritesFrom(monkeypatch, code)])
    monkeypatch.undo()
    message = str(info.value)
    run_dir = max(Path(tiny_config["save_path"]).glob("*"), key=lambda p: p.stat().st_mtime)
    assert f"Cannot write {run_dir}" in message and os.strerror(code) in message
    intact = re.search(r"the last checkpoint \((\S+\.pt)\) is intact", message)
    assert intact and CheckpointStore(run_dir / "checkpoints").paths()[-1] == Path(intact.group(1))
    assert f"libcontinual resume {run_dir}" in message
    assert message in (run_dir / "log.txt").read_text()
    assert resume(run_dir).accuracy_matrix == reference.accuracy_matrix


def test_a_file_size_limit_mid_run_is_one_error_without_a_traceback(tiny_config, tmp_path):
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(dict(tiny_config, epoch=1)))
    limit = 64 * 1024  # below one checkpoint (~330 KB), above config.yaml, log.txt and metrics.jsonl

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run = subprocess.run(
        [sys.executable, "-m", "libcontinual.cli", "run", str(config_path)],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_file_size,
    )
    stderr = " ".join(run.stderr.split())
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and "Logging error" not in run.stderr
    assert "File too large" in stderr and "checkpoint-000001.pt" in stderr
    assert "no checkpoint was written yet" in stderr and "libcontinual resume" in stderr


def test_a_damaged_metrics_line_is_a_report_error_naming_file_and_line(tmp_path):
    from libcontinual.report.load import ReportError

    metrics = tmp_path / "metrics.jsonl"
    metrics.write_bytes(b'{"event": "epoch"}\n\0\0\0\n{"event": "ta\n')
    with pytest.raises(ReportError, match=r"metrics.jsonl line 3 is not a JSON record"):
        read_metrics(metrics)
