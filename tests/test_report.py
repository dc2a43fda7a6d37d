"""Reports and comparisons built from small real runs: the tables say what results.json says."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import libcontinual
from conftest import TINY_CONFIG
from libcontinual.cli import main
from libcontinual.report import ReportError, compare, write_report

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# tables round to 2 (or 1) decimals
HALF_CENT, HALF_TENTH = 0.005 + 1e-9, 0.05 + 1e-9


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Finished tiny runs shared by the tests of this file (one epoch per task, noisy data)."""
    config = copy.deepcopy(TINY_CONFIG)
    config.update(epoch=1, save_path=str(tmp_path_factory.mktemp("runs")))
    config["dataset"]["kwargs"]["noise"] = 150.0
    other_backbone = "resnet20" if config["backbone"]["name"] != "resnet20" else "resnet8"
    return {
        "finetune": libcontinual.run(config).run_dir,
        "joint": libcontinual.run(config, method={"name": "joint"}).run_dir,
        "multi": libcontinual.run(config, seeds=[3, 4, 5]).run_dir,
        "other_order": libcontinual.run(config, order_seed=5).run_dir,
        "other_backbone": libcontinual.run(config, backbone={"name": other_backbone}).run_dir,
    }


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def table(markdown: str, heading: str | None = None) -> list[list[str]]:
    """Rows (header first, alignment row dropped) of the first table after ``## heading`` (or at all)."""
    lines = markdown.splitlines()
    start = 0
    if heading is not None:
        start = next(i for i, line in enumerate(lines) if line.startswith("## ") and heading in line)
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
        elif rows:
            break
    return [rows[0], *rows[2:]]


def stat(cell: str) -> tuple[float, float | None]:
    """``12.34`` -> (12.34, None); ``12.34 ± 0.56`` -> (12.34, 0.56)."""
    mean, _, std = cell.partition(" ± ")
    return float(mean), (float(std) if std else None)


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
    assert 500 <= width <= 3000 and 400 <= height <= 3000, (path.name, image.size)


def test_report_tables_equal_results_json(runs):
    run_dir = runs["finetune"]
    expected = results(run_dir)
    markdown = write_report(run_dir).read_text()

    final = table(markdown, "Final results")
    header = final[0]
    for row in final[1:]:
        summary = expected["summary"][row[0]]
        for key, title in [("last_accuracy", "last accuracy"), ("forgetting", "forgetting"), ("bwt", "BWT")]:
            column = next(i for i, h in enumerate(header) if h.startswith(title))
            assert stat(row[column]) == (pytest.approx(summary[key], abs=HALF_CENT), None)
    assert {row[0] for row in final[1:]} == set(expected["summary"])

    matrix = expected["accuracy_matrix"]["cnn"]
    cells = table(markdown, "Accuracy matrix (cnn")[1:]
    for i, row in enumerate(cells):
        assert [float(c) for c in row[1 : i + 2]] == pytest.approx(matrix[i], abs=HALF_TENTH)
        assert all(c == "" for c in row[i + 2 :])

    sizes = expected["test_sizes"]
    split = table(markdown, "Old vs new classes (cnn)")[1:]
    for t, row in enumerate(split):
        assert float(row[2]) == pytest.approx(matrix[t][t], abs=HALF_CENT)
        if t == 0:
            assert row[1] == "-"
        else:
            old = sum(matrix[t][j] * sizes[j] for j in range(t)) / sum(sizes[:t])
            assert float(row[1]) == pytest.approx(old, abs=HALF_CENT)
        assert float(row[3]) == pytest.approx(expected["summary"]["cnn"]["accuracy_curve"][t], abs=HALF_CENT)

    cost = dict(table(markdown, "Cost")[1:])
    assert float(cost["wall time (s)"]) == pytest.approx(expected["wall_time_s"], abs=HALF_TENTH)


def test_report_writes_valid_figures_linked_from_the_markdown(runs):
    path = write_report(runs["finetune"])
    assert path == runs["finetune"] / "report" / "report.md"
    figures = {"accuracy_curve", "accuracy_matrix_cnn", "task_accuracy_cnn", "old_new_cnn", "training"}
    assert {p.stem for p in path.parent.glob("*.png")} == figures
    markdown = path.read_text()
    for name in figures:
        assert_png(path.parent / f"{name}.png")
        assert f"]({name}.png)" in markdown
    assert "finetune" in markdown.splitlines()[0] and "B2 Inc2" in markdown.splitlines()[0]


def test_multi_seed_report_shows_numpy_mean_and_std_over_seeds(runs):
    parent = runs["multi"]
    per_seed = [results(parent / f"seed-{s}") for s in (3, 4, 5)]
    markdown = write_report(parent).read_text()
    final = table(markdown, "Final results")
    header = final[0]
    row = next(r for r in final[1:] if r[0] == "cnn")
    for key, title in [
        ("last_accuracy", "last accuracy"),
        ("average_incremental_accuracy", "avg. incremental"),
    ]:
        values = [r["summary"]["cnn"][key] for r in per_seed]
        mean, std = stat(row[next(i for i, h in enumerate(header) if h.startswith(title))])
        assert mean == pytest.approx(np.mean(values), abs=HALF_CENT)
        assert std == pytest.approx(np.std(values), abs=HALF_CENT)
    assert np.std([r["summary"]["cnn"]["last_accuracy"] for r in per_seed]) > 0  # the check can fail
    # the matrix cells are means over the seeds' matrices
    cell = table(markdown, "Accuracy matrix (cnn")[3][1]
    values = [r["accuracy_matrix"]["cnn"][2][0] for r in per_seed]
    assert stat(cell) == (
        pytest.approx(np.mean(values), abs=HALF_TENTH),
        pytest.approx(np.std(values), abs=HALF_TENTH),
    )
    for name in ("accuracy_curve", "accuracy_matrix_cnn", "old_new_cnn", "training"):
        assert_png(parent / "report" / f"{name}.png")


def test_compare_tables_equal_results_json_and_metrics(runs, tmp_path):
    dirs = [runs["finetune"], runs["joint"]]
    path = compare(dirs, tmp_path / "cmp")
    rows = list(csv.DictReader((tmp_path / "cmp" / "comparison.csv").open()))
    assert [(r["method"], r["evaluation"]) for r in rows] == [("finetune", "cnn"), ("joint", "cnn")]
    markdown = path.read_text()
    md_rows = table(markdown)
    header = md_rows[0]
    for run_dir, row, md_row in zip(dirs, rows, md_rows[1:], strict=True):
        expected = results(run_dir)
        for key in ("last_accuracy", "average_incremental_accuracy", "forgetting", "bwt"):
            assert float(row[key]) == expected["summary"]["cnn"][key]
            assert row[f"{key}_std"] == ""
        assert float(row["wall_time_s"]) == expected["wall_time_s"]
        assert float(row["peak_rss_mb"]) == expected["peak_rss_mb"]
        epochs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        speeds = [r["images_per_second"] for r in epochs if r["event"] == "epoch"]
        assert float(row["images_per_second"]) == pytest.approx(np.mean(speeds))
        last = md_row[header.index("last accuracy (%)")]
        assert float(last) == pytest.approx(expected["summary"]["cnn"]["last_accuracy"], abs=HALF_CENT)
        assert float(md_row[header.index("images/s")]) == pytest.approx(np.mean(speeds), abs=HALF_TENTH)
    assert_png(tmp_path / "cmp" / "accuracy_curves.png")


def test_compare_multi_seed_shows_numpy_mean_and_std_and_groups_loose_seed_runs(runs, tmp_path):
    parent = runs["multi"]
    per_seed = [results(parent / f"seed-{s}") for s in (3, 4, 5)]
    compare([parent], tmp_path / "aggregate")
    # the same seeds passed as separate run directories (e.g. a SLURM array) become one row
    compare([parent / "seed-5", parent / "seed-3", parent / "seed-4"], tmp_path / "loose")
    for folder in ("aggregate", "loose"):
        (row,) = list(csv.DictReader((tmp_path / folder / "comparison.csv").open()))
        assert row["seeds"] == "3;4;5" and row["num_seeds"] == "3"
        for key in ("last_accuracy", "average_incremental_accuracy", "forgetting", "bwt"):
            values = [r["summary"]["cnn"][key] for r in per_seed]
            assert float(row[key]) == pytest.approx(np.mean(values))
            assert float(row[f"{key}_std"]) == pytest.approx(np.std(values))
        markdown = (tmp_path / folder / "comparison.md").read_text()
        values = [r["summary"]["cnn"]["last_accuracy"] for r in per_seed]
        assert f"{np.mean(values):.2f} ± {np.std(values):.2f}" in markdown


@pytest.mark.parametrize(
    ("other", "field"), [("other_order", "class_orders"), ("other_backbone", "backbone")]
)
def test_compare_refuses_different_protocols_unless_forced(runs, tmp_path, other, field):
    dirs = [runs["finetune"], runs[other]]
    with pytest.raises(ReportError) as error:
        compare(dirs, tmp_path / "refused")
    message = str(error.value)
    assert f"  {field}:\n" in message and str(runs[other]) in message and "--force" in message
    assert not (tmp_path / "refused").exists()
    markdown = compare(dirs, tmp_path / "forced", force=True).read_text()
    assert "do not share a protocol" in markdown and f"  {field}:\n" in markdown


def test_report_of_an_unfinished_run_is_a_clear_error(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ReportError, match="no results.json"):
        write_report(tmp_path / "run")


def test_cli_report_and_compare_exit_0_and_a_protocol_mismatch_exits_2(runs, tmp_path, capsys):
    assert main(["report", str(runs["joint"])]) == 0
    assert (runs["joint"] / "report" / "report.md").is_file()
    out = tmp_path / "cli"
    assert main(["compare", str(runs["finetune"]), str(runs["joint"]), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"comparison.md", "comparison.csv", "accuracy_curves.png"}
    capsys.readouterr()
    mismatch = [str(runs["finetune"]), str(runs["other_backbone"]), "--out", str(tmp_path / "x")]
    assert main(["compare", *mismatch]) == 2
    err = capsys.readouterr().err
    assert "backbone:" in err and "Traceback" not in err
    assert main(["compare", *mismatch, "--force"]) == 0
