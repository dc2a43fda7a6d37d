"""What a new user meets on the command line (issue 21): each test runs `libcontinual` as a subprocess in a
fresh folder, with the tiny generated-data config, and checks what the user sees and what is left on disk."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY_CONFIG


def cli(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "libcontinual.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder holding c.yaml (the tiny config, one epoch, runs into ./runs)."""
    config = copy.deepcopy(TINY_CONFIG)
    config.update(epoch=1, save_path="runs")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def run_dirs(workdir: Path) -> list[Path]:
    root = workdir / "runs"
    return sorted(root.iterdir()) if root.exists() else []


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optimizer.kwargs.lr=-0.1", "Config key 'optimizer': Invalid learning rate: -0.1"),
        ("optimizer.kwargs.lr=abc", "optimizer.kwargs.lr"),
        ("lr_scheduler={name: StepLR, kwargs: {step_size: 1, gamma: abc}}", "lr_scheduler"),
    ],
)
def test_bad_optimizer_values_fail_before_any_folder_exists(workdir, override, expected):
    proc = cli("run", "c.yaml", override, cwd=workdir)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert expected in " ".join(proc.stderr.split())
    assert not (workdir / "runs").exists()


def test_missing_data_leaves_no_empty_save_path(workdir):
    proc = cli(
        "run", "c.yaml", "dataset=image_folder", "data_root=nowhere", "save_path=a/b/runs", cwd=workdir
    )
    assert proc.returncode == 2 and "nowhere" in proc.stderr
    assert not (workdir / "a").exists()


def test_a_fatal_error_is_written_to_the_runs_log_and_the_lock_goes(workdir):
    proc = cli("run", "c.yaml", "optimizer.kwargs.lr=1e30", cwd=workdir)  # diverges in the first batches
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (run_dir,) = run_dirs(workdir)
    log = (run_dir / "log.txt").read_text()
    assert log.count("ERROR") == 1 and "run failed: " in log and "at task 0, epoch 0" in log
    assert " ".join(proc.stderr.split()).count("at task 0, epoch 0") == 1  # the console shows it once
    assert not (run_dir / ".lock").exists()


def test_a_finished_run_leaves_no_lock_and_a_second_run_can_lock_again(workdir):
    assert cli("run", "c.yaml", cwd=workdir).returncode == 0
    (run_dir,) = run_dirs(workdir)
    assert not (run_dir / ".lock").exists()
    from libcontinual.engine.run_dir import RunDirectory

    first = RunDirectory(run_dir)
    first.lock()
    assert (run_dir / ".lock").exists()
    first.unlock()
    assert not (run_dir / ".lock").exists()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f(:\n    pass\n", "SyntaxError"),
        ("import not_a_module_anywhere\n", "No module named 'not_a_module_anywhere'"),
        ("x = 1\nraise RuntimeError('boom')\n", "RuntimeError: boom"),
    ],
)
def test_plugin_that_cannot_be_imported_is_one_message(workdir, source, expected):
    (workdir / "my_plugin.py").write_text(source)
    config = yaml.safe_load((workdir / "c.yaml").read_text())
    config["plugins"] = ["my_plugin.py"]
    (workdir / "c.yaml").write_text(yaml.safe_dump(config))
    proc = cli("run", "c.yaml", cwd=workdir)
    message = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "'plugins.0'" in message and f"{workdir / 'my_plugin.py'}, line" in message
    assert expected in message
    assert not (workdir / "runs").exists()


def test_plugin_module_that_is_missing_names_the_key(workdir):
    proc = cli("run", "c.yaml", "plugins=[not_a_module_anywhere.sub]", cwd=workdir)
    message = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "'plugins.0'" in message and "not_a_module_anywhere" in message


def test_run_by_shipped_name_and_list(workdir):
    proc = cli("list", "methods", cwd=workdir)
    assert proc.returncode == 0 and "icarl" in proc.stdout and "finetune" in proc.stdout
    proc = cli("run", "demoo", cwd=workdir)
    assert proc.returncode == 2 and "libcontinual list configs" in " ".join(proc.stderr.split())


def test_compare_of_the_readme_example_after_running_twice_shows_differing_settings(workdir):
    pytest.importorskip("matplotlib")
    import libcontinual

    config = yaml.safe_load((workdir / "c.yaml").read_text())
    config["save_path"] = str(workdir / "runs")
    for extra in ({}, {}, {"method": {"name": "joint"}}, {"method": {"name": "joint"}, "epoch": 2}):
        libcontinual.run(config, **extra)  # the runs themselves: in-process, quicker
    finetune = sorted(str(p.relative_to(workdir)) for p in (workdir / "runs").glob("finetune-*"))
    joint = sorted(str(p.relative_to(workdir)) for p in (workdir / "runs").glob("joint-*"))
    assert len(finetune) == 2 and len(joint) == 2
    proc = cli("compare", *joint, *finetune, cwd=workdir)  # compare runs/joint-* runs/finetune-*
    assert proc.returncode == 0, proc.stderr
    message = " ".join(proc.stderr.split())
    assert "same experiment with the same seed 7: comparing the newer" in message
    assert f"comparing the newer, {finetune[1]}" in message
    assert "different settings" in message and "epoch" in message
    text = (workdir / "comparison" / "comparison.md").read_text()
    assert "Settings that differ between these runs" in text
    assert "| `epoch` | 1 | 2 | 1 |" in text
    # Names in backticks: two runs started within one second are "name" and "name-1" (a prefix).
    assert f"`{finetune[1]}`" in text and f"`{finetune[0]}`" not in text


def test_data_root_at_an_archive_says_how_to_extract_it_and_that_works(workdir):
    import re
    import tarfile

    from dataset_files import write_image_folder

    write_image_folder(workdir / "src" / "tiny-images", classes=tuple("abcdef"), per_class=4, size=8)
    archive = workdir / "tiny-images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(workdir / "src" / "tiny-images", arcname="tiny-images")
    shutil.rmtree(workdir / "src")
    proc = cli("run", "c.yaml", "dataset=image_folder", f"data_root={archive.name}", cwd=workdir)
    message = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert not (workdir / "runs").exists()
    command = re.search(r"\((mkdir -p data && tar xf \S+ -C data)\)", message).group(1)
    data_root = re.search(r"set data_root: (\S+)", message).group(1)
    assert data_root == "data/tiny-images"
    subprocess.run(command, shell=True, cwd=workdir, check=True)  # what the message says to do
    proc = cli("run", "c.yaml", "dataset=image_folder", f"data_root={data_root}", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
