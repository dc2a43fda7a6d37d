"""Progress of long work: what a run reports (decoding, between-task work, herding, evaluation), rich bars
on a terminal, nothing on a pipe, and still one log line per epoch."""

from __future__ import annotations

import copy
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import yaml

import libcontinual
from conftest import TINY_CONFIG
from dataset_files import write_image_folder
from libcontinual import progress


class Recorder:
    """A progress.Reporter that records what was tracked and how far each bar got."""

    def __init__(self) -> None:
        self.started: list[tuple[str, int | None]] = []
        self.done: dict[int, int] = {}
        self.open: set[int] = set()
        self.lock = threading.Lock()

    def start(self, description: str, total: int | None) -> int:
        self.started.append((description, total))
        handle = len(self.started) - 1
        self.open.add(handle)
        self.done[handle] = 0
        return handle

    def advance(self, handle: int, amount: int) -> None:
        with self.lock:
            self.done[handle] += amount

    def finish(self, handle: int) -> None:
        self.open.remove(handle)

    def first(self, prefix: str) -> tuple[str, int | None, int]:
        for handle, (description, total) in enumerate(self.started):
            if description.startswith(prefix):
                return description, total, self.done[handle]
        raise AssertionError(f"nothing tracked as {prefix!r}: {[d for d, _ in self.started]}")


def image_folder_config(tmp_path: Path) -> dict:
    """Replay with herding on a 6-class image folder (written once per tmp_path, cached in it)."""
    if not (tmp_path / "images").exists():
        write_image_folder(tmp_path / "images", classes=tuple("abcdef"), per_class=6, size=8)
    config = copy.deepcopy(TINY_CONFIG)
    config.update(
        dataset={"name": "image_folder", "kwargs": {"cache_dir": str(tmp_path / "cache")}},
        data_root=str(tmp_path / "images"),
        epoch=1,
        batch_size=8,
        method={"name": "replay"},
        buffer={"name": "linear", "kwargs": {"buffer_size": 12, "strategy": "herding"}},
        save_path=str(tmp_path / "runs"),
    )
    return config


def test_a_run_reports_decoding_between_task_work_herding_and_evaluation(tmp_path):
    recorder = Recorder()
    with progress.reporting(recorder):
        libcontinual.run(image_folder_config(tmp_path))
    assert recorder.first("decoding 36 train images") == ("decoding 36 train images", 36, 36)
    assert recorder.first("decoding 36 test images")[1:] == (36, 36)
    assert recorder.first("caching the decoded images")[1] is None  # a spinner
    assert recorder.first("task 0: replay before_task")
    assert recorder.first("task 2: replay after_task")
    _, total, done = recorder.first("herding exemplars of 2 classes")
    assert total == done and total >= 2
    _, total, done = recorder.first("evaluating task 0")
    assert total == done == 1  # 12 test images, one batch
    assert not recorder.open  # every bar was closed
    # a second run reads the cache: no decoding, no caching
    again = Recorder()
    with progress.reporting(again):
        libcontinual.run(image_folder_config(tmp_path))
    assert not [d for d, _ in again.started if d.startswith(("decoding", "caching"))]


def test_without_a_reporter_nothing_is_tracked(tiny_config):
    assert progress._REPORTER.get() is None
    libcontinual.run(tiny_config)  # and nothing fails: the default is silence


def _cli(tmp_path: Path, terminal: bool) -> tuple[int, str]:
    config = image_folder_config(tmp_path)
    config["save_path"] = "runs"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "160", "TERM": "xterm"}
    command = [sys.executable, "-m", "libcontinual.cli", "run", "c.yaml"]
    if not terminal:
        proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=240)
        return proc.returncode, proc.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=follower, env=env)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=240), b"".join(chunks).decode("utf-8", "replace")


def test_cli_shows_bars_on_a_terminal_and_none_on_a_pipe(tmp_path):
    code, terminal = _cli(tmp_path / "tty", terminal=True)
    assert code == 0
    for text in ("decoding 36 train images", "task 0 epoch 1/1", "evaluating task", "herding exemplars"):
        assert text in terminal, text
    code, piped = _cli(tmp_path / "pipe", terminal=False)
    assert code == 0
    assert "decoding 36" not in piped and "evaluating task" not in piped and "\x1b[" not in piped
    assert piped.count("epoch 0: loss") == 3  # the log: one line per epoch (3 tasks, 1 epoch each)
    (run_dir,) = (tmp_path / "pipe" / "runs").iterdir()
    log = (run_dir / "log.txt").read_text()
    assert log.count("epoch 0: loss") == 3 and "decoding" not in log
    assert "Decoded 72 images" in log  # written before the run directory existed, kept in its log
