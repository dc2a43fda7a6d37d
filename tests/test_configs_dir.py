"""Every YAML in configs/ loads, validates and names only registered components."""

from pathlib import Path

import pytest

from libcontinual.config import load_config
from libcontinual.engine.builders import load_plugins
from libcontinual.engine.experiment import check_components, register_everything

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(p for p in CONFIGS.rglob("*.yaml") if "headers" not in p.parts)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[str(p.relative_to(CONFIGS)) for p in EXPERIMENTS])
def test_config_is_valid(path):
    register_everything()
    config, config_path = load_config(path)
    load_plugins(config.plugins, config_path.parent)
    check_components(config)


def test_there_are_configs():
    assert any(p.name == "demo.yaml" for p in EXPERIMENTS)
