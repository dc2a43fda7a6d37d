"""The generated config reference matches the schema (regenerate with scripts/config_reference.py)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import libcontinual.config as config_module

REPO = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location(
        "config_reference", REPO / "scripts" / "config_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_config_reference_is_up_to_date():
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "config_reference.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


def test_config_reference_lists_every_key():
    text = (REPO / "docs" / "config-reference.md").read_text()
    import dataclasses

    for spec in dataclasses.fields(config_module.ExperimentConfig):
        assert f"| `{spec.name}` |" in text
    assert load_script().render() == text
