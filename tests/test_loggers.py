"""TensorBoard and CSV loggers: what they write equals what metrics.jsonl and results.json record."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

import libcontinual
from libcontinual.config import LOGGERS, load_config
from libcontinual.engine.entry import resume
from libcontinual.engine.loggers import LOGGERS as LOGGER_CLASSES
from libcontinual.errors import ConfigError
from test_resume import CrashAt, SimulatedCrash


def epoch_records(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == "epoch"]


def csv_rows(run_dir: Path) -> list[dict]:
    return list(csv.DictReader((run_dir / "metrics.csv").open()))


def assert_csv_equals_metrics(run_dir: Path) -> None:
    records = epoch_records(run_dir)
    rows = csv_rows(run_dir)
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        assert set(row) == {k for r in records for k in r} - {"event"}
        for key, value in record.items():
            if key != "event":
                assert (float(row[key]) if row[key] else None) == value, key


def event_accumulator(folder: Path):
    accumulator_module = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="tensorboard is not installed (pip install 'libcontinual[tensorboard]')",
    )
    accumulator = accumulator_module.EventAccumulator(
        str(folder), size_guidance={accumulator_module.SCALARS: 0, accumulator_module.IMAGES: 0}
    )
    accumulator.Reload()
    return accumulator


def test_csv_logger_rows_equal_metrics_jsonl_epoch_records(tiny_config):
    tiny_config["logger"] = ["csv"]
    run_dir = libcontinual.run(tiny_config, method={"name": "lwf"}).run_dir
    assert_csv_equals_metrics(run_dir)
    rows = csv_rows(run_dir)
    assert [(int(r["task"]), int(r["epoch"])) for r in rows] == [(t, e) for t in range(3) for e in range(2)]
    # a loss term that starts at task 1 gets its own column, empty before
    assert rows[0]["loss_kd"] == "" and rows[-1]["loss_kd"] != ""


def test_tensorboard_logger_writes_the_expected_scalars_and_matrix_images(tiny_config):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed")
    tiny_config.update(logger=["tensorboard"], val_per_epoch=1)
    result = libcontinual.run(tiny_config)
    events = event_accumulator(result.run_dir / "tensorboard")
    scalars = set(events.Tags()["scalars"])
    expected = {"train/loss", "train/loss_ce", "train/accuracy", "train/lr", "train/images_per_second"}
    expected |= {"eval/cnn", "accuracy_after_task/cnn", "accuracy_after_task/cnn_task_il", "task/seconds"}
    expected |= {f"task_accuracy/cnn/task_{j}" for j in range(3)}
    assert expected <= scalars
    assert set(events.Tags()["images"]) == {"accuracy_matrix/cnn"}

    records = epoch_records(result.run_dir)
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(len(records)))
    assert [e.value for e in losses] == pytest.approx([r["loss"] for r in records], rel=1e-6)
    lr = [e.value for e in events.Scalars("train/lr")]
    assert lr == pytest.approx([r["lr"] for r in records], rel=1e-6)
    after_task = events.Scalars("accuracy_after_task/cnn")
    assert [e.step for e in after_task] == [0, 1, 2]
    curve = result.results["summary"]["cnn"]["accuracy_curve"]
    assert [e.value for e in after_task] == pytest.approx(curve, rel=1e-6)
    first_task = [e.value for e in events.Scalars("task_accuracy/cnn/task_0")]
    assert first_task == pytest.approx([row[0] for row in result.accuracy_matrix["cnn"]], rel=1e-6)
    images = events.Images("accuracy_matrix/cnn")
    assert [image.step for image in images] == [0, 1, 2]
    assert images[-1].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n" and images[-1].width > 200


def test_loggers_continue_correctly_after_resume(tiny_config):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed")
    # checkpoints only at task starts: the crash comes after two logged epochs of task 1 that resume repeats
    tiny_config.update(logger=["csv", "tensorboard"], epoch=3, checkpoint_every=0)
    with pytest.raises(SimulatedCrash):
        libcontinual.run(tiny_config, callbacks=[CrashAt(task=1, epoch=2, batch=0)])
    (run_dir,) = Path(tiny_config["save_path"]).iterdir()
    resume(run_dir)
    assert_csv_equals_metrics(run_dir)
    assert len(csv_rows(run_dir)) == 9
    events = event_accumulator(run_dir / "tensorboard")
    losses = events.Scalars("train/loss")
    # the resumed run purged the events it wrote again: one value per epoch, equal to metrics.jsonl
    assert [e.step for e in losses] == list(range(9))
    assert [e.value for e in losses] == pytest.approx([r["loss"] for r in epoch_records(run_dir)], rel=1e-6)
    assert [e.step for e in events.Scalars("accuracy_after_task/cnn")] == [0, 1, 2]


def test_unknown_or_repeated_logger_is_a_config_error_naming_the_nearest(tiny_config):
    with pytest.raises(ConfigError, match=r"logger\.0.*'tensorbord'.*Did you mean 'tensorboard'"):
        load_config(dict(tiny_config, logger=["tensorbord"]))
    with pytest.raises(ConfigError, match="more than once"):
        load_config(dict(tiny_config, logger=["csv", "csv"]))


def test_tensorboard_without_its_package_fails_when_the_config_loads(tiny_config, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "tensorboard" else find_spec(name, *args),
    )
    with pytest.raises(ConfigError, match=r"tensorboard, which is not installed: pip install"):
        load_config(dict(tiny_config, logger=["tensorboard"]))


def test_every_configurable_logger_has_a_callback():
    assert set(LOGGERS) == set(LOGGER_CLASSES)
