"""Where a run starts: one experiment, or one per seed with an aggregate (``engine/seeds.py``), and
resuming either. This layer sits above both; ``experiment`` knows nothing of seeds."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from libcontinual.config import ExperimentConfig, load_config
from libcontinual.engine.experiment import RunResult, UntrustedCode, distributed_session, run_experiment
from libcontinual.engine.seeds import run_seeds
from libcontinual.engine.trainer import Callback
from libcontinual.errors import ConfigError


def run(
    config: str | Path | dict[str, Any],
    overrides: list[str] | None = None,
    callbacks: Sequence[Callback] = (),
    **kwargs: Any,
) -> RunResult:
    """Run an experiment from a YAML path or dict; ``key.sub=value`` overrides and nested keyword overrides.

    Example: ``libcontinual.run("configs/demo.yaml", epoch=1, method={"name": "joint"})``.
    """
    experiment_config, config_path = load_config(config, overrides, kwargs or None)
    return run_any(experiment_config, config_path, callbacks)


def run_any(
    config: ExperimentConfig, config_path: Path | None, callbacks: Sequence[Callback] = ()
) -> RunResult:
    """One run, or one per seed with an aggregate when the config lists several seeds."""
    if config.seed_list:
        with distributed_session(config):
            return run_seeds(config, config_path, callbacks)
    return run_experiment(config, config_path, callbacks)


def resume(run_dir: str | Path, callbacks: Sequence[Callback] = (), trust: bool = False) -> RunResult:
    """Continue a run directory from its newest valid checkpoint (its saved config is used).

    Loading a run runs no code from it unless ``trust`` is set: checkpoints are read with
    ``torch.load(weights_only=True)``, and ``plugins`` listed in its config.yaml are refused
    (:class:`UntrustedCode`). ``trust=True`` imports them, and reads checkpoints of the older format.
    """
    path = Path(run_dir)
    config_file = path / "config.yaml"
    if not config_file.is_file():
        raise ConfigError(f"{path} is not a run directory: {config_file} is missing.")
    if (path / "results.json").exists():
        raise ConfigError(f"Run {path} has already finished (results.json exists); nothing to resume.")
    config, _ = load_config(config_file)
    if config.plugins and not trust:
        raise UntrustedCode(path, config.plugins)
    # save_path in config.yaml may be relative to where the run started; the run lives where it is now.
    config = dataclasses.replace(config, save_path=str(path.absolute().parent))
    if config.seed_list:
        with distributed_session(config):
            return run_seeds(config, None, callbacks, resume_dir=path, trust=trust)
    return run_experiment(config, None, callbacks, resume_dir=path, trust=trust)
