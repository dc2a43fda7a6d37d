"""The configs ship with the package: a plain (non-editable) install runs `libcontinual run demo` anywhere.

The install test builds a wheel of this checkout and installs it, without dependencies, into a fresh
virtual environment that sees the installed torch (``--system-site-packages``): a few seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from libcontinual.cli import main
from libcontinual.config import load_config
from libcontinual.errors import ConfigError
from libcontinual.shipped import configs_dir, shipped_config, shipped_names

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
YAMLS = sorted(CONFIGS.rglob("*.yaml"))


def test_every_file_under_configs_is_shipped_by_its_name():
    """A config added under configs/ (any depth) needs no registration to ship and resolve."""
    assert configs_dir() is not None
    names = {str(p.relative_to(CONFIGS).with_suffix("")) for p in YAMLS}
    assert set(shipped_names()) == names
    for path in YAMLS:
        name = str(path.relative_to(CONFIGS).with_suffix(""))
        for spelling in (name, f"{name}.yaml", f"configs/{name}.yaml"):
            assert shipped_config(spelling).read_bytes() == path.read_bytes(), spelling


def test_names_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config, path = load_config("demo")
    assert config.dataset.name == "demo" and path.name == "demo.yaml"
    assert load_config("icarl")[0].method.name == "icarl"
    assert load_config("configs/demo.yaml")[0].dataset.name == "demo"  # the README's clone spelling
    # includes of shipped headers, from a user's own file in an empty folder
    (tmp_path / "mine.yaml").write_text(
        "includes: [headers/r5_cifar10.yaml]\nmethod: {name: finetune}\n"
        "optimizer: {name: SGD, kwargs: {lr: 0.1}}\n"
    )
    assert load_config(tmp_path / "mine.yaml")[0].dataset.name == "image_folder"
    # a local file wins over a shipped one of the same name
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump({**load_config("icarl")[0].to_dict()}))
    assert load_config("demo.yaml")[0].method.name == "icarl"


def test_unknown_name_says_where_the_shipped_ones_are(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="libcontinual list configs"):
        load_config("demoo")
    assert shipped_config("../pyproject.toml") is None and shipped_config("/etc/passwd") is None


def test_list_shows_configs_and_every_registry(capsys):
    from libcontinual.registry import BACKBONES, DATASETS, METHODS

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ["demo", "reproduce/r5/icarl", *METHODS.names(), *BACKBONES.names(), *DATASETS.names()]:
        assert name in out, name
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert "iCaRL" in out and "reproduce/r5" not in out


def _copy_checkout(target: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(REPO / "src", target / "src", symlinks=True, ignore=ignore)
    shutil.copytree(CONFIGS, target / "configs", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, target / name)


def test_plain_pip_install_runs_a_shipped_config_by_name(tmp_path):
    checkout, venv, elsewhere = tmp_path / "checkout", tmp_path / "venv", tmp_path / "elsewhere"
    _copy_checkout(checkout)
    elsewhere.mkdir()
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True
    )
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(checkout)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheel_dir.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {n for n in archive.namelist() if n.startswith("libcontinual/configs/")}
    assert shipped == {f"libcontinual/configs/{p.relative_to(CONFIGS)}" for p in YAMLS}
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", str(wheel)], check=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    where = subprocess.run(
        [str(python), "-c", "import libcontinual; print(libcontinual.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert str(venv) in where.stdout  # the installed copy, not this checkout
    listing = subprocess.run(
        [str(venv / "bin" / "libcontinual"), "list", "configs"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
    )
    assert listing.returncode == 0, listing.stderr
    assert "reproduce/r5/icarl" in listing.stdout and str(venv) in listing.stdout
    tiny = ["task_num=2", "init_epoch=1", "epoch=1", "backbone.name=resnet8", "num_threads=1"]
    run = subprocess.run(
        [str(venv / "bin" / "libcontinual"), "run", "demo", *tiny],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "accuracy matrix" in run.stdout
    assert any((elsewhere / "runs").glob("finetune-*/results.json"))
