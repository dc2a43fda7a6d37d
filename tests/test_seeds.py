"""Multi-seed runs: one run per seed, and an aggregate whose mean ± std equals numpy's."""

import json
from pathlib import Path

import numpy as np
import pytest

import libcontinual
from libcontinual.config import load_config
from libcontinual.errors import ConfigError


def test_seeds_run_into_subdirectories_and_aggregate_with_numpy_mean_and_std(tiny_config):
    tiny_config["epoch"] = 1
    result = libcontinual.run(tiny_config, seeds=[3, 4, 5])
    parent = result.run_dir
    per_seed = [json.loads((parent / f"seed-{s}" / "results.json").read_text()) for s in (3, 4, 5)]
    assert [r["config"]["seed"] for r in per_seed] == [3, 4, 5]
    # each seed fixes its own class order
    assert len({tuple(r["protocol"]["class_order"]) for r in per_seed}) == 3
    aggregate = json.loads((parent / "results.json").read_text())
    assert aggregate == result.results
    for metric in ("last_accuracy", "average_incremental_accuracy", "forgetting", "bwt"):
        values = [r["summary"]["cnn"][metric] for r in per_seed]
        assert aggregate["summary"]["cnn"][metric]["mean"] == pytest.approx(np.mean(values))
        assert aggregate["summary"]["cnn"][metric]["std"] == pytest.approx(np.std(values))
    curves = np.array([r["summary"]["cnn"]["accuracy_curve"] for r in per_seed])
    assert aggregate["accuracy_curve"]["cnn"]["mean"] == pytest.approx(curves.mean(axis=0).tolist())
    assert aggregate["accuracy_curve"]["cnn"]["std"] == pytest.approx(curves.std(axis=0).tolist())


def test_repeat_means_consecutive_seeds_and_explicit_order_is_kept(tiny_config):
    tiny_config.update(epoch=1, repeat=2, seed=10, class_order=[5, 4, 3, 2, 1, 0])
    result = libcontinual.run(tiny_config)
    assert result.results["seeds"] == [10, 11]
    assert result.results["protocol"]["class_orders"] == [[5, 4, 3, 2, 1, 0]] * 2


def test_seeds_and_repeat_together_is_an_error(tiny_config):
    with pytest.raises(ConfigError, match="cannot be combined"):
        load_config(dict(tiny_config, seeds=[1, 2], repeat=2))


def test_a_crashed_multi_seed_run_resumes_to_the_same_aggregate(tiny_config):
    from libcontinual.engine.entry import resume
    from test_resume import CrashAt, SimulatedCrash

    tiny_config.update(epoch=2, seeds=[3, 4])
    reference = libcontinual.run(tiny_config).results
    with pytest.raises(SimulatedCrash):
        libcontinual.run(tiny_config, callbacks=[CrashAt(task=1, epoch=1, batch=0)])
    parents = sorted(Path(tiny_config["save_path"]).iterdir(), key=lambda p: p.stat().st_mtime)
    resumed = resume(parents[-1]).results
    assert resumed["summary"] == reference["summary"]
