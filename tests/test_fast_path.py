"""The GPU fast path switches off cleanly without CUDA and changes nothing on CPU beyond float tolerance;
``FastPath.describe`` records what a run resolved."""

import pytest
import torch

import libcontinual
from libcontinual.config import load_config
from libcontinual.engine.checkpoint import CheckpointStore
from libcontinual.engine.trainer import FastPath


def test_fast_path_defaults_are_off_on_cpu(tiny_config):
    config, _ = load_config(tiny_config)
    fast = FastPath.resolve(config, torch.device("cpu"))
    assert fast == FastPath(channels_last=False, bf16=False, device_type="cpu", compile=False)
    with fast.autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_describe_records_the_resolved_switches_and_threads(tiny_config):
    config, _ = load_config(dict(tiny_config, channels_last=True, compile=True))
    described = FastPath.resolve(config, torch.device("cpu")).describe()
    assert described == {
        "channels_last": True,
        "bf16": False,
        "device_type": "cpu",
        "compile": True,
        "num_threads": torch.get_num_threads(),
    }


def test_fast_path_defaults_follow_cuda(tiny_config):
    config, _ = load_config(tiny_config)
    fast = FastPath.resolve(config, torch.device("cuda"))
    assert fast.channels_last is True
    explicit, _ = load_config(dict(tiny_config, channels_last=False, bf16=False))
    assert FastPath.resolve(explicit, torch.device("cuda")) == FastPath(False, False, "cuda")


def test_channels_last_on_cpu_gives_the_same_training_within_float_tolerance(tiny_config):
    tiny_config["epoch"] = 1
    plain = libcontinual.run(tiny_config)
    channels_last = libcontinual.run(tiny_config, channels_last=True)
    a = CheckpointStore(plain.run_dir / "checkpoints").load_latest()[0]["method"]
    b = CheckpointStore(channels_last.run_dir / "checkpoints").load_latest()[0]["method"]
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            torch.testing.assert_close(b[key].contiguous(), value, rtol=1e-4, atol=1e-5, msg=key)
    for row_a, row_b in zip(plain.accuracy_matrix["cnn"], channels_last.accuracy_matrix["cnn"], strict=True):
        assert row_a == pytest.approx(row_b, abs=100 / 16)  # at most one test image of 16 may flip


def test_bf16_autocast_runs_on_cpu_when_asked(tiny_config):
    tiny_config["epoch"] = 1
    result = libcontinual.run(tiny_config, bf16=True)
    assert result.accuracy_matrix["cnn"][0][0] >= 0.0


def test_results_record_the_fast_path_the_run_used(tiny_config):
    import libcontinual

    tiny_config.update(task_num=1, epoch=1, channels_last=True)
    results = libcontinual.run(tiny_config).results
    assert results["fast_path"]["channels_last"] is True
    assert results["fast_path"]["num_threads"] == 1
