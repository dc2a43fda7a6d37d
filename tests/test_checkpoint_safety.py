"""Checkpoints are safe to load (weights_only), tied to their run, and survive odd folders (issue 20)."""

import io
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import libcontinual
from libcontinual.engine import checkpoint as checkpoint_module
from libcontinual.engine.checkpoint import (
    LEGACY_MAGIC,
    MAGIC,
    CheckpointMismatch,
    CheckpointStore,
    check_storable,
    decode,
    encode,
)
from libcontinual.engine.entry import resume
from libcontinual.engine.experiment import UntrustedCode, register_everything
from libcontinual.engine.run_dir import RunDirectory
from libcontinual.engine.trainer import Callback, RunInterrupted
from libcontinual.errors import ConfigError
from libcontinual.registry import METHODS
from test_methods_contract import method_settings

register_everything()


class StopAt(Callback):
    """Acts like SIGTERM: asks the trainer to stop after one batch of one task (a checkpoint inside it)."""

    def __init__(self, task: int, batch: int) -> None:
        self.task, self.batch, self.current = task, batch, -1

    def on_task_start(self, trainer, task, epochs, batches):
        self.current = task.info.index

    def on_batch_end(self, trainer, batch_index, loss):
        if (self.current, batch_index) == (self.task, self.batch):
            trainer.request_stop("SIGTERM")


def interrupted_run(config: dict, task: int = 1, batch: int = 1) -> Path:
    with pytest.raises(RunInterrupted):
        libcontinual.run(config, callbacks=[StopAt(task, batch)])
    return max(Path(config["save_path"]).glob("*"), key=lambda p: p.stat().st_mtime)


def body(path: Path) -> bytes:
    data = path.read_bytes()
    return data[data.index(b"\n", len(MAGIC)) + 1 :]


@pytest.mark.parametrize("name", METHODS.names())
def test_every_methods_checkpoints_load_with_weights_only(tiny_config, name):
    """Inside a task (optimizer, scheduler, loader, progress) and between tasks, for every method."""
    tiny_config.update(method_settings(name), epoch=2, checkpoint_every=1)
    if name == "finetune":  # a scheduler's state holds a Counter (methods that set their own lr refuse one)
        tiny_config["lr_scheduler"] = {"name": "MultiStepLR", "kwargs": {"milestones": [1]}}
    run_dir = interrupted_run(tiny_config)
    paths = CheckpointStore(run_dir / "checkpoints").paths()
    assert paths
    for path in paths:
        payload = torch.load(io.BytesIO(body(path)), map_location="cpu", weights_only=True)
        assert payload["identity"]["run_id"] == RunDirectory(run_dir).run_id()
    assert payload["task_state"] is not None  # the newest one is the stop inside task 1


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch exploited",))


def test_a_checkpoint_that_would_run_code_is_not_executed(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    buffer = io.BytesIO()
    torch.save({"task": 0, "x": Exploit()}, buffer)
    data = buffer.getvalue()
    import hashlib

    forged = MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n" + data  # a valid checksum
    with pytest.raises(checkpoint_module.CheckpointError, match="safe load refuses"):
        decode(forged, Path("checkpoint-000001.pt"))
    assert not (tmp_path / "exploited").exists()
    store = CheckpointStore(tmp_path / "checkpoints")
    store.folder.mkdir()
    (store.folder / "checkpoint-000001.pt").write_bytes(forged)
    assert store.load_latest() is None and "safe load refuses" in caplog.text
    assert not (tmp_path / "exploited").exists()


def test_an_older_pickle_format_checkpoint_needs_trust(tmp_path):
    data = pickle.dumps(None)
    buffer = io.BytesIO()
    torch.save({"rng": {"numpy": np.random.get_state()}}, buffer)
    import hashlib

    legacy = LEGACY_MAGIC + hashlib.sha256(buffer.getvalue()).hexdigest().encode() + b"\n" + buffer.getvalue()
    with pytest.raises(CheckpointMismatch, match="resume --trust"):
        decode(legacy, tmp_path / "old.pt")
    assert data and decode(legacy, tmp_path / "old.pt", trust=True)["rng"]["numpy"][0] == "MT19937"


def test_a_state_a_safe_load_would_refuse_is_refused_when_saved_naming_where():
    check_storable({"method": {"w": torch.zeros(2), "steps": [1, 2.5, "x", None, (True,)]}})
    with pytest.raises(TypeError, match=r"checkpoint\.method\.extra\.mask is a numpy\.ndarray"):
        encode({"method": {"extra": {"mask": np.zeros(3)}}})
    with pytest.raises(TypeError, match=r"checkpoint\.lr is a numpy\.float64"):
        encode({"lr": np.float64(0.1)})


def _crashed_run(tiny_config: dict) -> Path:
    tiny_config.update(epoch=2, checkpoint_every=1)
    return interrupted_run(tiny_config)


def test_a_checkpoint_of_another_run_is_refused(tiny_config):
    first = _crashed_run(tiny_config)
    second = _crashed_run(tiny_config)  # same config, another run
    newest = CheckpointStore(first / "checkpoints").paths()[-1]
    foreign = second / "checkpoints" / "checkpoint-000099.pt"
    shutil.copy(newest, foreign)
    with pytest.raises(CheckpointMismatch, match=f"belongs to run {RunDirectory(first).run_id()}"):
        resume(second)
    foreign.unlink()
    assert resume(second).run_dir == second


def test_a_checkpoint_written_with_another_config_is_refused(tiny_config):
    run_dir = _crashed_run(tiny_config)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["seed"] = 8
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(CheckpointMismatch, match=r"another config.*seed: 7 in the checkpoint, 8 now"):
        resume(run_dir)
    config["seed"] = 7
    config["keep_checkpoints"] = 3  # bookkeeping keys may change
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    assert resume(run_dir).run_dir == run_dir


def test_resume_imports_a_run_directorys_plugins_only_with_trust(tiny_config, tmp_path):
    marker = tmp_path / "imported"
    plugin = tmp_path / "my_plugin_issue20.py"
    plugin.write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\n")
    tiny_config.update(epoch=2, checkpoint_every=1, plugins=[str(plugin)])
    run_dir = interrupted_run(tiny_config)
    marker.unlink()
    import sys

    sys.modules.pop("libcontinual_plugin_my_plugin_issue20", None)
    with pytest.raises(UntrustedCode, match=r"lists plugins .*my_plugin_issue20\.py.*resume --trust"):
        resume(run_dir)
    assert not marker.exists()
    assert resume(run_dir, trust=True).run_dir == run_dir
    assert marker.exists()


def test_resume_from_another_working_directory_with_a_relative_save_path(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_config.update(save_path="runs", epoch=2, checkpoint_every=1)
    run_dir = interrupted_run(tiny_config).resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = resume(run_dir)
    assert (run_dir / "results.json").exists() and result.run_dir == run_dir
    assert not (elsewhere / "runs").exists()


def test_stale_temporaries_and_a_folder_under_a_checkpoints_name_do_not_stop_a_resume(tiny_config):
    run_dir = _crashed_run(tiny_config)
    folder = run_dir / "checkpoints"
    stale = folder / ".checkpoint-000042.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    (folder / "checkpoint-000000.pt").mkdir()  # a directory where a checkpoint file would be
    (folder / "checkpoint-000000.pt" / "x").write_text("x")
    resume(run_dir)
    assert not stale.exists()
    assert (folder / "checkpoint-000000.pt").is_dir()  # left alone, not pruned


def test_a_checkpoints_path_that_is_a_file_is_a_clear_error(tiny_config):
    run_dir = _crashed_run(tiny_config)
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / "checkpoints").write_text("not a folder")
    with pytest.raises(libcontinual.errors.LibContinualError, match="checkpoints is not a folder"):
        resume(run_dir)


def test_resume_checks_results_json_again_once_it_holds_the_lock(tiny_config, monkeypatch):
    """A second resume that passed the first check while the first one finished must not re-run the end."""
    run_dir = _crashed_run(tiny_config)
    original_lock = RunDirectory.lock

    def lock_after_the_other_process_finished(self):
        (self.path / "results.json").write_text(json.dumps({"finished": "by the other process"}))
        original_lock(self)

    monkeypatch.setattr(RunDirectory, "lock", lock_after_the_other_process_finished)
    with pytest.raises(ConfigError, match="already finished"):
        resume(run_dir)
    assert json.loads((run_dir / "results.json").read_text()) == {"finished": "by the other process"}
    assert not (run_dir / ".lock").exists()
