"""Smaller things a new user meets (issue 21): logged losses, overrides that change a component, the
README's Python example, the demo config."""

from __future__ import annotations

import json

import pytest
import yaml

import libcontinual
from libcontinual.cli import main
from libcontinual.config import load_config
from libcontinual.errors import ConfigError


def test_loss_and_loss_ce_of_finetune_are_the_same_number(tiny_config):
    """finetune's loss is its CE: both are per-batch means averaged over the epoch's batches, also when
    the last batch is smaller (48 images per task in batches of 20: 20, 20, 8)."""
    tiny_config.update(batch_size=20, method={"name": "finetune", "kwargs": {"ce_classes": "seen"}})
    result = libcontinual.run(tiny_config)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert len(epochs) == 6
    for record in epochs:
        assert record["loss"] == pytest.approx(record["loss_ce"], rel=1e-6, abs=1e-7)


def test_override_typo_is_blamed_on_the_override(tiny_config, tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    assert main(["run", str(path), "optimizer.kwarg.lr=0.1"]) == 2
    message = " ".join(capsys.readouterr().err.split())
    assert "command-line override 'optimizer.kwarg.lr=0.1'" in message
    assert "Did you mean 'optimizer.kwargs'" in message and str(path) not in message
    with pytest.raises(ConfigError, match="command-line override 'augment.crop.size=2'"):
        load_config(path, ["augment.crop.size=2"])


def test_a_new_component_name_drops_the_old_ones_kwargs(tiny_config, tmp_path):
    header = tmp_path / "header.yaml"
    header.write_text(yaml.safe_dump({"dataset": {"name": "cifar100", "kwargs": {"download": True}}}))
    body = {k: v for k, v in tiny_config.items() if k != "dataset"}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"includes": ["header.yaml"], **body}))
    assert load_config(path)[0].dataset.kwargs == {"download": True}
    # on the command line
    config, _ = load_config(path, ["dataset.name=synthetic"])
    assert config.dataset.name == "synthetic" and config.dataset.kwargs == {}
    # kwargs given with the new name stay, before or after it
    config, _ = load_config(path, ["dataset.kwargs.num_classes=6", "dataset.name=synthetic"])
    assert config.dataset.kwargs == {"num_classes": 6}
    config, _ = load_config(path, ["dataset.name=synthetic", "dataset.kwargs.num_classes=6"])
    assert config.dataset.kwargs == {"num_classes": 6}
    # in a file that includes another
    (tmp_path / "d.yaml").write_text(
        yaml.safe_dump({"includes": ["header.yaml"], **body, "dataset": {"name": "synthetic"}})
    )
    assert load_config(tmp_path / "d.yaml")[0].dataset.kwargs == {}
    # the same name keeps them
    assert load_config(path, ["dataset.name=cifar100"])[0].dataset.kwargs == {"download": True}


def test_readme_python_example_shortens_every_task_and_switches_method():
    """README: libcontinual.run("configs/demo.yaml", epoch=1, method={"name": "joint"})."""
    config, _ = load_config("configs/demo.yaml", None, {"epoch": 1, "method": {"name": "joint"}})
    assert config.first_task_epochs == 1 and config.epoch == 1
    assert config.method.name == "joint" and config.method.kwargs == {}  # finetune's ce_classes went
    config, _ = load_config("demo", ["method.name=joint"])
    assert config.method.kwargs == {}


def test_figures_as_svg_or_pdf_with_readable_legends_and_visible_zero_bars(tiny_config, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from libcontinual.report import plots
    from libcontinual.report.load import load_run

    tiny_config.update(epoch=3, method={"name": "finetune", "kwargs": {"ce_classes": "seen"}})
    run_dir = libcontinual.run(tiny_config).run_dir
    assert main(["report", str(run_dir), "--format", "svg"]) == 0
    report = run_dir / "report"
    svgs = sorted(p.name for p in report.glob("*.svg"))
    assert "old_new_cnn.svg" in svgs and not list(report.glob("*.png"))
    assert all(f"({name})" in (report / "report.md").read_text() for name in svgs)
    assert (report / "old_new_cnn.svg").read_text().lstrip().startswith("<?xml")
    out = tmp_path / "cmp"
    assert main(["compare", str(run_dir), "--out", str(out), "--format", "pdf"]) == 0
    assert (out / "accuracy_curves.pdf").read_bytes().startswith(b"%PDF")
    with pytest.raises(SystemExit):  # argparse refuses another format
        main(["report", str(run_dir), "--format", "gif"])
    capsys.readouterr()

    run = load_run(run_dir)
    old, _ = run.old_new("cnn")
    figure = plots.old_new_figure(run, "cnn", run.classes_seen())
    ax = figure.axes[0]
    assert min(text.get_fontsize() for text in ax.get_legend().get_texts()) >= 10
    zero_bars = [bar for bar in ax.patches if bar.get_height() == 0]
    assert old[0, -1] == 0.0 and zero_bars  # finetune forgot every old class: a 0 % bar
    assert all(bar.get_linewidth() > 0 and bar.get_edgecolor()[3] > 0 for bar in zero_bars)
    assert ax.get_ylim()[0] < 0  # the 0 % line sits above the axis, not on it


def test_skip_bad_images_is_logged_in_every_runs_log_also_from_the_cache(tiny_config, tmp_path):
    from dataset_files import write_image_folder

    files = write_image_folder(tmp_path / "images", classes=tuple("abcdef"), per_class=4, size=8)
    files["train"][0].write_bytes(b"not an image")
    tiny_config.update(
        dataset={
            "name": "image_folder",
            "kwargs": {"skip_bad_images": True, "cache_dir": str(tmp_path / "cache")},
        },
        data_root=str(tmp_path / "images"),
        epoch=1,
    )
    logs = []
    for _ in range(2):  # decoded, then read from the cache
        run_dir = libcontinual.run(tiny_config).run_dir
        logs.append((run_dir / "log.txt").read_text())
    assert "Decoded" in logs[0] and "from the cache" in logs[1]
    for log in logs:
        assert "WARNING" in log and "Skipped 1 unreadable images" in log and str(files["train"][0]) in log
