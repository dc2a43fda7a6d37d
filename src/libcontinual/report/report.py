"""``libcontinual report RUN_DIR``: report.md and PNG figures in ``RUN_DIR/report/``.

Every number comes from results.json (per seed for multi-seed runs) and metrics.jsonl; figures are
written beside the markdown and linked from it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from libcontinual.files import atomic_write_text
from libcontinual.report.load import ReportError, Run, Stat, load_run
from libcontinual.report.tables import SUMMARY_COLUMNS, format_number, format_stat, markdown_table

logger = logging.getLogger(__name__)

REPORT_COLUMNS = (
    *SUMMARY_COLUMNS[:2],
    ("last_mean_task_accuracy", "last mean task accuracy (%)"),
    *SUMMARY_COLUMNS[2:],
)


def plots_module() -> Any:
    """The plotting module; matplotlib is the optional ``report`` extra."""
    try:
        from libcontinual.report import plots
    except ImportError as exc:
        raise ReportError(
            f"Reports need matplotlib ({exc}). Install it with: pip install 'libcontinual[report]'"
        ) from None
    return plots


def write_report(run_dir: str | Path, image_format: str = "png") -> Path:
    """Write ``report.md`` and its figures (``image_format``: png, svg or pdf) into ``run_dir/report/``;
    returns the markdown's path."""
    plots = plots_module()
    check_format(plots, image_format)
    run = load_run(run_dir)
    out = run.path / "report"
    out.mkdir(exist_ok=True)
    figures = write_figures(plots, run, out, image_format)
    path = out / "report.md"
    atomic_write_text(path, render(run, figures))
    logger.info("report written to %s", path)
    return path


def check_format(plots: Any, image_format: str) -> None:
    if image_format not in plots.FORMATS:
        raise ReportError(f"Figure format {image_format!r} is not one of {', '.join(plots.FORMATS)}.")


def write_figures(plots: Any, run: Run, out: Path, image_format: str = "png") -> dict[str, str]:
    """Draw every figure into ``out``; returns file names by figure key."""
    classes_seen = run.classes_seen()
    files: dict[str, str] = {}

    def keep(key: str, figure: Any) -> None:
        if figure is not None:
            files[key] = plots.save(figure, out / f"{key}.{image_format}").name

    bases = run.class_incremental_classifiers
    curves = []
    for name in run.classifiers:
        base = name.removesuffix("_task_il")
        curve = run.curve(name)
        curves.append(
            plots.Curve(
                label=name.replace("_task_il", " (task-IL)"),
                mean=curve.mean(axis=0),
                std=curve.std(axis=0) if run.multi_seed else None,
                color=plots.COLORS[bases.index(base) % len(plots.COLORS)] if base in bases else None,
                linestyle="-" if name == base else "--",
            )
        )
    keep(
        "accuracy_curve",
        plots.curves_figure(curves, f"Accuracy after each task\n{run.title()}", run.num_tasks, classes_seen),
    )
    for name in run.class_incremental_classifiers:
        matrices = run.matrices(name)
        mean, std = matrix_mean_std(matrices)
        spread = f" — mean over {len(run.seeds)} seeds" if run.multi_seed else ""
        title = f"Accuracy matrix ({name}), %{spread}\n{run.title()}"
        keep(f"accuracy_matrix_{name}", plots.heatmap_figure(mean, std, title, task_labels(run)))
        keep(f"task_accuracy_{name}", plots.task_accuracy_figure(run, name, classes_seen))
        keep(f"old_new_{name}", plots.old_new_figure(run, name, classes_seen))
    keep("training", plots.training_figure(run))
    return files


def matrix_mean_std(matrices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Cell-wise mean (and std over seeds when there are several) of (seeds, tasks, tasks) matrices."""
    mean = matrices.mean(axis=0)
    return mean, (matrices.std(axis=0) if matrices.shape[0] > 1 else None)


def task_labels(run: Run) -> list[str]:
    """Task index, with its class names when they fit (three classes or fewer, same in every seed)."""
    names = run.task_classes()
    labels = []
    for j in range(run.num_tasks):
        if names is not None and len(names[j]) <= 3:
            labels.append(f"{j}\n" + "\n".join(names[j]))
        else:
            labels.append(str(j))
    return labels


# --------------------------------------------------------------------------- markdown


def render(run: Run, figures: dict[str, str]) -> str:
    sections = [header(run), final_table(run)]
    if run.multi_seed:
        sections.append(per_seed_table(run))
    sections.append(curve_section(run, figures))
    for name in run.class_incremental_classifiers:
        sections.append(matrix_section(run, name, figures))
        sections.append(old_new_section(run, name, figures))
    if "training" in figures:
        sections.append(f"## Training\n\n![training per epoch]({figures['training']})\n")
    sections.append(dreams_section(run))
    sections.append(cost_section(run))
    return "\n".join(sections)


def header(run: Run) -> str:
    config = run.config
    provenance = run.seeds[0].results.get("provenance", {})
    first_epochs = config["epoch"] if config.get("init_epoch") is None else config["init_epoch"]
    orders = "; ".join(" ".join(map(str, order)) for order in run.protocol["class_orders"])
    lines = [
        f"# {run.label}: {run.describe_protocol()}",
        "",
        f"- method: {component(config['method'])}",
        f"- buffer: {component(config['buffer']) if config.get('buffer') else 'none'}",
        f"- backbone: {component(config['backbone'])}",
        f"- epochs: {first_epochs} (first task), {config['epoch']} (later tasks)",
        f"- {run.describe_seeds()}; class order{'s' if run.multi_seed else ''}: {orders}",
        f"- run directory: `{run.path}`",
        f"- libcontinual {provenance.get('libcontinual_version')}, commit {provenance.get('git_commit')}, "
        f"torch {provenance.get('torch_version')}",
        "",
    ]
    return "\n".join(lines)


def component(section: dict[str, Any]) -> str:
    """``name`` and its kwargs as written in the config."""
    kwargs = ", ".join(f"{k}={v}" for k, v in (section.get("kwargs") or {}).items())
    return f"`{section['name']}`" + (f" ({kwargs})" if kwargs else "")


def final_table(run: Run) -> str:
    what = f"mean ± std over {len(run.seeds)} seeds" if run.multi_seed else "one seed"
    columns = list(REPORT_COLUMNS)
    if "fwt" in run.seeds[0].results["summary"][run.classifiers[0]]:
        columns += [("acc", "ACC: mean of the last row (%)"), ("fwt", "FWT (%)")]
    rows = [[name, *(format_stat(run.metric(name, key)) for key, _ in columns)] for name in run.classifiers]
    table = markdown_table(["evaluation", *(title for _, title in columns)], rows)
    return f"## Final results ({what})\n\n{table}"


def per_seed_table(run: Run) -> str:
    rows = []
    for seed in run.seeds:
        for name in run.class_incremental_classifiers:
            summary = seed.results["summary"][name]
            rows.append(
                [str(seed.seed), name, *(format_number(summary.get(key)) for key, _ in REPORT_COLUMNS)]
            )
    table = markdown_table(["seed", "evaluation", *(title for _, title in REPORT_COLUMNS)], rows, 2)
    return f"## Per seed\n\n{table}"


def curve_section(run: Run, figures: dict[str, str]) -> str:
    rows = []
    for name in run.classifiers:
        curve = run.curve(name)
        rows.append([name, *(format_stat(Stat.of(curve[:, t].tolist())) for t in range(run.num_tasks))])
    table = markdown_table(["evaluation", *(f"task {t}" for t in range(run.num_tasks))], rows)
    return (
        "## Accuracy after each task (all seen classes, %)\n\n"
        f"{table}\n![accuracy after each task]({figures['accuracy_curve']})\n"
    )


def matrix_section(run: Run, name: str, figures: dict[str, str]) -> str:
    matrices = run.matrices(name)
    rows = []
    for i in range(run.num_tasks):
        cells = [
            "" if np.isnan(matrices[0, i, j]) else format_stat(Stat.of(matrices[:, i, j].tolist()), 1)
            for j in range(run.num_tasks)
        ]
        rows.append([f"after task {i}", *cells])
    table = markdown_table(["", *(f"task {j}" for j in range(run.num_tasks))], rows)
    return (
        f"## Accuracy matrix ({name}, %)\n\nRow i: after training task i; column j: test set of task j.\n\n"
        f"{table}\n![accuracy matrix]({figures[f'accuracy_matrix_{name}']})\n\n"
        f"![accuracy of each task over time]({figures[f'task_accuracy_{name}']})\n"
    )


def old_new_section(run: Run, name: str, figures: dict[str, str]) -> str:
    old, new = run.old_new(name)
    curve = run.curve(name)
    rows = [
        [
            str(t),
            "-" if t == 0 else format_stat(Stat.of(old[:, t].tolist())),
            format_stat(Stat.of(new[:, t].tolist())),
            format_stat(Stat.of(curve[:, t].tolist())),
        ]
        for t in range(run.num_tasks)
    ]
    table = markdown_table(["after task", "old classes (%)", "new classes (%)", "all seen (%)"], rows)
    return (
        f"## Old vs new classes ({name})\n\nOld: tasks before the current one, weighted by test-set size; "
        f"new: the current task.\n\n{table}\n![old vs new classes]({figures[f'old_new_{name}']})\n"
    )


def dreams_section(run: Run) -> str:
    """Pictures and numbers of a data-free method's generator (``dreams/task-<t>.png`` and ``.json`` written
    after each task); empty for other methods. Multi-seed runs show the first seed's pictures."""
    seed = run.seeds[0]
    records = sorted(
        (json.loads(p.read_text()) for p in (seed.path / "dreams").glob("task-*.json")),
        key=lambda r: r["task"],
    )
    if not records:
        return ""
    rows = []
    for record in records:
        generator = record["generator"]
        last = generator["history"][-1] if generator["history"] else {}
        rows.append(
            [
                str(record["task"]),
                str(generator["steps"]),
                format_number(generator["seconds"], 1),
                format_number(generator["steps_per_second"], 2),
                format_number(last.get("loss_bn"), 3),
                format_number(100.0 * record["teacher_mean_confidence"], 1),
                " / ".join(map(str, record["synthetic_class_counts"])),
            ]
        )
    table = markdown_table(
        [
            "after task",
            "generator steps",
            "generator time (s)",
            "steps/s",
            "last BN loss",
            "teacher confidence (%)",
            "synthetic samples per class",
        ],
        rows,
    )
    which = f" (seed {seed.seed})" if run.multi_seed else ""
    pictures = []
    for record in records:
        png = seed.path / "dreams" / f"task-{record['task']}.png"
        if png.is_file():
            link = os.path.relpath(png, run.path / "report")
            pictures.append(
                f"After task {record['task']}:\n\n![synthetic images after task {record['task']}]({link})\n"
            )
    return (
        f"## Synthetic images{which}\n\nThe generator trained after each task (not after the last): row c of "
        "a picture holds images the teacher labels c. Class counts and confidence are the teacher's on "
        f"{records[0]['samples']} samples.\n\n{table}\n" + "\n".join(pictures)
    )


def cost_section(run: Run) -> str:
    rows = [
        ["wall time (s)", format_stat(run.wall_time(), 1)],
        ["training speed (images/s, mean over epochs)", format_stat(run.images_per_second(), 1)],
        ["peak resident memory (MiB)", format_number(run.peak_memory_mb("peak_rss_mb"), 0)],
        ["peak GPU memory (MiB)", format_number(run.peak_memory_mb("peak_gpu_mb"), 0)],
    ]
    task_times = run.task_wall_time()
    if task_times is not None:
        rows += [
            [f"task {t} wall time (s)", format_stat(Stat.of(task_times[:, t].tolist()), 1)]
            for t in range(task_times.shape[1])
        ]
    return "## Cost\n\n" + markdown_table(["", "value"], rows)
