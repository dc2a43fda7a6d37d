"""Exact resume after a crash, checkpoint integrity, and the run's reaction to signals and bad losses."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import libcontinual
from libcontinual.engine.checkpoint import CheckpointStore, decode
from libcontinual.engine.entry import resume
from libcontinual.engine.experiment import register_everything
from libcontinual.engine.trainer import Callback
from libcontinual.errors import ConfigError, TrainingError
from libcontinual.registry import METHODS
from test_methods_contract import method_settings

register_everything()
TIMING_KEYS = {"seconds", "images_per_second"}


class SimulatedCrash(Exception):
    pass


class CrashAt(Callback):
    """Dies (like a killed process) at one batch of one epoch of one task."""

    def __init__(self, task: int, epoch: int, batch: int) -> None:
        self.where = (task, epoch, batch)
        self.current = (0, 0)

    def on_task_start(self, trainer, task, epochs, batches):
        self.current = (task.info.index, 0)

    def on_epoch_end(self, trainer, record):
        self.current = (record["task"], record["epoch"] + 1)

    def on_batch_end(self, trainer, batch_index, loss):
        if (*self.current, batch_index) == self.where:
            raise SimulatedCrash(self.where)


def metrics_without_timing(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def resume_config(tiny_config: dict, name: str) -> dict:
    tiny_config.update(method_settings(name), epoch=3, checkpoint_every=1)
    return tiny_config


@pytest.mark.parametrize("name", METHODS.names())
def test_crash_inside_a_task_resumes_to_the_identical_result(tiny_config, name):
    config = resume_config(tiny_config, name)
    reference = libcontinual.run(config)
    with pytest.raises(SimulatedCrash):
        libcontinual.run(config, callbacks=[CrashAt(task=1, epoch=2, batch=1)])
    crashed = max(Path(config["save_path"]).glob("*"), key=lambda p: p.stat().st_mtime)
    assert not (crashed / "results.json").exists()
    resumed = resume(crashed)
    assert resumed.run_dir == crashed
    assert resumed.accuracy_matrix == reference.accuracy_matrix
    assert metrics_without_timing(crashed) == metrics_without_timing(reference.run_dir)


def test_crash_inside_a_task_with_an_online_buffer_resumes_to_the_identical_result(tiny_config):
    config = resume_config(tiny_config, "replay")
    config["buffer"] = {"name": "online", "kwargs": {"buffer_size": 24, "strategy": "reservoir"}}
    reference = libcontinual.run(config)
    with pytest.raises(SimulatedCrash):
        libcontinual.run(config, callbacks=[CrashAt(task=2, epoch=1, batch=1)])
    crashed = max(Path(config["save_path"]).glob("*"), key=lambda p: p.stat().st_mtime)
    assert resume(crashed).accuracy_matrix == reference.accuracy_matrix


def test_crash_between_tasks_resumes_to_the_identical_result(tiny_config):
    config = resume_config(tiny_config, "finetune")
    config["checkpoint_every"] = 0  # only end-of-task checkpoints
    reference = libcontinual.run(config)
    with pytest.raises(SimulatedCrash):
        libcontinual.run(config, callbacks=[CrashAt(task=2, epoch=0, batch=0)])
    crashed = max(Path(config["save_path"]).glob("*"), key=lambda p: p.stat().st_mtime)
    assert resume(crashed).accuracy_matrix == reference.accuracy_matrix


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one(tiny_config, caplog):
    config = resume_config(tiny_config, "finetune")
    reference = libcontinual.run(config)
    with pytest.raises(SimulatedCrash):
        libcontinual.run(config, callbacks=[CrashAt(task=2, epoch=1, batch=0)])
    crashed = max(Path(config["save_path"]).glob("*"), key=lambda p: p.stat().st_mtime)
    store = CheckpointStore(crashed / "checkpoints")
    newest = store.paths()[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    result = resume(crashed)
    assert "skipping checkpoint" in caplog.text and newest.name in caplog.text
    assert result.accuracy_matrix == reference.accuracy_matrix


def test_checkpoints_are_checksummed_and_only_the_last_k_are_kept(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for i in range(4):
        store.save({"i": i})
    assert [p.name for p in store.paths()] == ["checkpoint-000003.pt", "checkpoint-000004.pt"]
    assert store.load_latest()[0] == {"i": 3}
    data = bytearray(store.paths()[-1].read_bytes())
    data[-5] ^= 0xFF
    with pytest.raises(Exception, match="checksum"):
        decode(bytes(data), Path("x"))
    assert not list(tmp_path.glob("*.tmp"))


def test_results_name_every_process_of_a_resumed_run(tiny_config):
    """A run resumed by another process (perhaps at another commit) records both processes' provenance,
    not only the one that finished it."""
    config = resume_config(tiny_config, "finetune")
    with pytest.raises(SimulatedCrash):
        libcontinual.run(config, callbacks=[CrashAt(task=1, epoch=0, batch=0)])
    crashed = max(Path(config["save_path"]).glob("*"), key=lambda p: p.stat().st_mtime)
    first = json.loads((crashed / "processes.json").read_text())
    assert [p["resumed"] for p in first] == [False]
    first[0]["git_commit"] = "a-commit-of-the-first-process"
    (crashed / "processes.json").write_text(json.dumps(first))
    resume(crashed)
    processes = json.loads((crashed / "results.json").read_text())["process_provenance"]
    assert [p["resumed"] for p in processes] == [False, True]
    assert processes[0]["git_commit"] == "a-commit-of-the-first-process"
    assert processes[1]["git_commit"] != "a-commit-of-the-first-process"
    assert {"started", "torch_version", "platform"} <= processes[1].keys()


def test_a_corrupt_processes_file_is_refused_naming_it(tiny_config):
    config = resume_config(tiny_config, "finetune")
    with pytest.raises(SimulatedCrash):
        libcontinual.run(config, callbacks=[CrashAt(task=1, epoch=0, batch=0)])
    crashed = max(Path(config["save_path"]).glob("*"), key=lambda p: p.stat().st_mtime)
    (crashed / "processes.json").write_text('{"not": "a list"}')
    with pytest.raises(ConfigError, match="processes.json"):
        resume(crashed)


def test_resume_refuses_a_finished_run_and_a_non_run_folder(tiny_config, tmp_path):
    tiny_config["epoch"] = 1
    finished = libcontinual.run(tiny_config).run_dir
    with pytest.raises(ConfigError, match="already finished"):
        resume(finished)
    with pytest.raises(ConfigError, match="not a run directory"):
        resume(tmp_path)


def test_run_with_resume_true_continues_the_unfinished_run(tiny_config):
    config = resume_config(tiny_config, "finetune")
    reference = libcontinual.run(config)
    with pytest.raises(SimulatedCrash):
        libcontinual.run(config, callbacks=[CrashAt(task=1, epoch=1, batch=0)])
    crashed = max(Path(config["save_path"]).glob("*"), key=lambda p: p.stat().st_mtime)
    result = libcontinual.run(config, resume=True)
    assert result.run_dir == crashed
    assert result.accuracy_matrix == reference.accuracy_matrix


def test_a_run_in_use_by_another_process_cannot_be_resumed_until_released(tiny_config):
    config = resume_config(tiny_config, "finetune")
    with pytest.raises(SimulatedCrash):
        libcontinual.run(config, callbacks=[CrashAt(task=1, epoch=0, batch=0)])
    crashed = max(Path(config["save_path"]).glob("*"), key=lambda p: p.stat().st_mtime)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(crashed)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        checkpoints = sorted((crashed / "checkpoints").iterdir())
        with pytest.raises(TrainingError, match=f"in use by another process \\(pid {holder.pid}\\)"):
            resume(crashed)
        assert sorted((crashed / "checkpoints").iterdir()) == checkpoints  # nothing touched
    finally:
        holder.kill()
        holder.wait()
    assert resume(crashed).run_dir == crashed  # the lock dies with its process


HOLD_LOCK = """
import sys, time
from pathlib import Path
from libcontinual.engine.run_dir import RunDirectory
run_dir = RunDirectory(Path(sys.argv[1]))
run_dir.lock()  # held while run_dir lives
print("locked", flush=True)
time.sleep(120)
"""


def test_non_finite_loss_stops_with_task_epoch_and_batch(tiny_config):
    tiny_config.update(optimizer={"name": "SGD", "kwargs": {"lr": 1.0e30}}, checkpoint_every=1)
    with pytest.raises(TrainingError, match=r"Non-finite loss at task 0, epoch 0, batch \d+"):
        libcontinual.run(tiny_config)
    run_dir = next(Path(tiny_config["save_path"]).iterdir())
    assert not (run_dir / "results.json").exists()
    assert not list((run_dir / "checkpoints").glob("*.pt")) if (run_dir / "checkpoints").exists() else True


def _subprocess_run(config_path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "libcontinual.cli", *args, str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _reference_run(config_path: Path, save_path: Path, timeout: float) -> None:
    """The uninterrupted run to compare with, in its own process, saved under ``save_path``."""
    reference = subprocess.run(
        [sys.executable, "-m", "libcontinual.cli", "run", str(config_path), f"save_path={save_path}"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert reference.returncode == 0, reference.stderr


def _wait_for_checkpoint(save_path: Path, proc: subprocess.Popen, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(save_path.glob("*/checkpoints/checkpoint-*.pt"))
        if found:
            return found[0].parents[1]
        if proc.poll() is not None:
            pytest.fail(f"run ended before its first checkpoint: {proc.stderr.read()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no checkpoint appeared")


def _slow_config(tiny_config: dict, tmp_path: Path) -> Path:
    tiny_config.update(epoch=40, init_epoch=2, checkpoint_every=1, num_threads=1)
    tiny_config["dataset"]["kwargs"]["train_per_class"] = 64
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    return path


def test_sigkill_in_the_middle_of_a_task_then_resume_matches_an_uninterrupted_run(tiny_config, tmp_path):
    config_path = _slow_config(tiny_config, tmp_path)
    tiny_config["epoch"] = 3
    config_path.write_text(yaml.safe_dump(tiny_config))
    _reference_run(config_path, tmp_path / "ref", timeout=300)
    proc = _subprocess_run(config_path, "run")
    run_dir = _wait_for_checkpoint(Path(tiny_config["save_path"]), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (run_dir / "results.json").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "libcontinual.cli", "resume", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    ref_dir = next((tmp_path / "ref").iterdir())
    ours = json.loads((run_dir / "results.json").read_text())["accuracy_matrix"]
    theirs = json.loads((ref_dir / "results.json").read_text())["accuracy_matrix"]
    assert ours == theirs


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tiny_config, tmp_path):
    config_path = _slow_config(tiny_config, tmp_path)
    proc = _subprocess_run(config_path, "run")
    run_dir = _wait_for_checkpoint(Path(tiny_config["save_path"]), proc)
    before = len(list((run_dir / "checkpoints").glob("*.pt")))
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert "libcontinual resume" in stderr
    checkpoints = CheckpointStore(run_dir / "checkpoints").paths()
    assert checkpoints and (len(checkpoints) > before or before == 2)
    assert CheckpointStore(run_dir / "checkpoints").load_latest() is not None


def test_deterministic_mode_gives_bit_identical_weights_and_is_restored_afterwards(tiny_config):
    import torch

    tiny_config.update(deterministic=True, epoch=1)
    first = libcontinual.run(tiny_config)
    second = libcontinual.run(tiny_config)
    assert first.accuracy_matrix == second.accuracy_matrix
    assert not torch.are_deterministic_algorithms_enabled()
    store_a = CheckpointStore(first.run_dir / "checkpoints").load_latest()[0]["method"]
    store_b = CheckpointStore(second.run_dir / "checkpoints").load_latest()[0]["method"]
    assert all(torch.equal(store_a[k], store_b[k]) for k in store_a if isinstance(store_a[k], torch.Tensor))


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS.names())
def test_sigkill_then_resume_matches_for_every_method(tiny_config, tmp_path, name):
    """The real thing for each method: a separate process killed with SIGKILL, resumed from the CLI."""
    tiny_config.update(method_settings(name), epoch=6, checkpoint_every=1, num_threads=1)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config))
    _reference_run(config_path, tmp_path / "ref", timeout=600)
    proc = _subprocess_run(config_path, "run")
    run_dir = _wait_for_checkpoint(Path(tiny_config["save_path"]), proc)
    time.sleep(0.3)  # let it get past the first checkpoint, into the task
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    if (run_dir / "results.json").exists():
        pytest.skip("the run finished before the kill; nothing to resume")
    resumed = subprocess.run(
        [sys.executable, "-m", "libcontinual.cli", "resume", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr
    ref_dir = next((tmp_path / "ref").iterdir())
    ours = json.loads((run_dir / "results.json").read_text())["accuracy_matrix"]
    assert ours == json.loads((ref_dir / "results.json").read_text())["accuracy_matrix"]
