"""``libcontinual compare RUN_DIR ...``: methods side by side, only when they share a protocol.

Writes ``comparison.md``, ``comparison.csv`` (full precision, a ``_std`` column per metric) and
``accuracy_curves.png`` into the output folder. Runs whose protocol facts differ (dataset, image
shape, scenario, split, class orders, backbone) are refused unless ``force``; differing backbone
keyword arguments (e.g. ResNet-32 without its last ReLU, as LUCIR and iCaRL use) are shown, not refused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from libcontinual.files import atomic_write_text
from libcontinual.report.load import ReportError, Run, Stat, load_runs
from libcontinual.report.report import check_format, plots_module
from libcontinual.report.tables import SUMMARY_COLUMNS, csv_text, format_number, format_stat, markdown_table

logger = logging.getLogger(__name__)

SHOWN_NOT_CHECKED = ("backbone_kwargs",)
COST_COLUMNS = (
    ("wall_time_s", "wall time (s)"),
    ("images_per_second", "images/s"),
)


def compare(
    run_dirs: Sequence[str | Path], out_dir: str | Path, force: bool = False, image_format: str = "png"
) -> Path:
    """Write the comparison of ``run_dirs`` into ``out_dir`` (the figure as png, svg or pdf); returns the
    markdown's path.

    Raises ``ReportError`` naming the differing protocol fields and runs, unless ``force``.
    """
    if not run_dirs:
        raise ReportError("compare needs at least one run directory.")
    plots = plots_module()
    check_format(plots, image_format)
    runs = load_runs(run_dirs)
    differences = protocol_differences(runs)
    if differences and not force:
        raise ReportError(
            "These runs do not share a protocol, so their numbers are not comparable. Differing fields:\n"
            + "\n".join(differences)
            + "\nCompare runs of the same protocol, or pass --force (force=True) to compare anyway."
        )
    settings = setting_differences(runs)
    if settings:
        logger.warning(
            "these runs were trained with different settings (see comparison.md): %s",
            "; ".join(
                f"{key} " + ", ".join(f"{run.label}={value}" for run, value in zip(runs, values, strict=True))
                for key, values in settings
            ),
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header, rows, csv_rows = table_rows(runs)
    atomic_write_text(out / "comparison.csv", csv_text(csv_header(), csv_rows))
    spread = " (mean ± std over seeds)" if any(run.multi_seed for run in runs) else ""
    title = f"Accuracy after each task{spread}\n{protocol_title(runs)}"
    figure = plots.curves_figure(curves(plots, runs), title, max_tasks(runs), classes_seen(runs))
    figure_name = plots.save(figure, out / f"accuracy_curves.{image_format}").name
    path = out / "comparison.md"
    atomic_write_text(path, render(runs, header, rows, differences, figure_name, settings))
    logger.info("comparison of %d runs written to %s", len(runs), out)
    return path


# --------------------------------------------------------------------------- protocol


def comparable_protocol(run: Run) -> dict[str, Any]:
    """The protocol facts that must be equal; class orders as a set (seed order does not matter)."""
    protocol = {k: v for k, v in run.protocol.items() if k not in SHOWN_NOT_CHECKED}
    protocol["class_orders"] = sorted(tuple(order) for order in protocol["class_orders"])
    return protocol


def protocol_differences(runs: Sequence[Run]) -> list[str]:
    """Per differing protocol field: the field, then each value with the runs that have it."""
    protocols = [comparable_protocol(run) for run in runs]
    fields = list(dict.fromkeys(key for protocol in protocols for key in protocol))
    lines = []
    for field in fields:
        by_value: dict[str, list[str]] = {}
        for run, protocol in zip(runs, protocols, strict=True):
            by_value.setdefault(short(protocol.get(field)), []).append(str(run.path))
        if len(by_value) > 1:
            lines.append(f"  {field}:")
            lines += [f"    {value}: {', '.join(paths)}" for value, paths in by_value.items()]
    return lines


# Config keys that say where or how fast a run went, or what it is (the method: the table's rows), not
# how it was trained; every other differing key is listed beside the comparison.
NOT_SETTINGS = (
    "method",
    "seed",
    "seeds",
    "repeat",
    "save_path",
    "name",
    "resume",
    "data_root",
    "device",
    "num_threads",
    "logger",
    "plugins",
    "checkpoint_every",
    "keep_checkpoints",
    "deterministic",
    "channels_last",
    "bf16",
    "compile",
    "eval_batch_size",
)


def flat_settings(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimizer.kwargs.lr": 0.1, "epoch": 5, ...}`` without the keys of NOT_SETTINGS."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if not prefix and key in NOT_SETTINGS:
            continue
        if isinstance(value, dict) and value:
            flat.update(flat_settings(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def setting_differences(runs: Sequence[Run]) -> list[tuple[str, list[str]]]:
    """Training settings (epochs, batch size, optimizer, schedule, augmentation, buffer, ...) that are
    not the same in every run: (key, the value of each run, "-" where unset). Shown, not refused:
    methods bring their own schedules, but a reader must see them."""
    flats = [flat_settings(run.config) for run in runs]
    keys = list(dict.fromkeys(key for flat in flats for key in flat))
    missing = object()
    out = []
    for key in keys:
        values = [flat.get(key, missing) for flat in flats]
        if any(value != values[0] for value in values):
            out.append((key, ["-" if value is missing else short(value, 40) for value in values]))
    return out


def short(value: Any, limit: int = 90) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


def protocol_title(runs: Sequence[Run]) -> str:
    descriptions = list(dict.fromkeys(run.describe_protocol() for run in runs))
    return " | ".join(descriptions)


def max_tasks(runs: Sequence[Run]) -> int:
    return max(run.num_tasks for run in runs)


def classes_seen(runs: Sequence[Run]) -> list[int] | None:
    seen = [run.classes_seen() for run in runs]
    return seen[0] if all(s == seen[0] for s in seen) else None


# --------------------------------------------------------------------------- tables


def backbone_text(run: Run) -> str:
    kwargs = run.protocol.get("backbone_kwargs") or {}
    arguments = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    return f"{run.protocol['backbone']}({arguments})" if arguments else run.protocol["backbone"]


def cost_stats(run: Run) -> dict[str, Stat | None]:
    return {"wall_time_s": run.wall_time(), "images_per_second": run.images_per_second()}


def table_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]], list[list[Any]]]:
    """Markdown header and rows, and CSV rows: one per run and class-incremental evaluation."""
    header = [
        "method",
        "evaluation",
        "backbone",
        "seeds",
        *(title for _, title in SUMMARY_COLUMNS),
        *(title for _, title in COST_COLUMNS),
        "peak RSS (MiB)",
        "peak GPU (MiB)",
    ]
    rows, csv_rows = [], []
    for run in runs:
        costs = cost_stats(run)
        peaks = [run.peak_memory_mb("peak_rss_mb"), run.peak_memory_mb("peak_gpu_mb")]
        for name in run.class_incremental_classifiers:
            metrics = {key: run.metric(name, key) for key, _ in SUMMARY_COLUMNS}
            rows.append(
                [
                    run.label,
                    name,
                    backbone_text(run),
                    str(len(run.seeds)),
                    *(format_stat(metrics[key]) for key, _ in SUMMARY_COLUMNS),
                    *(format_stat(costs[key], 1) for key, _ in COST_COLUMNS),
                    *(format_number(peak, 0) for peak in peaks),
                ]
            )
            stats = [*metrics.values(), *costs.values()]
            csv_rows.append(
                [
                    run.label,
                    name,
                    len(run.seeds),
                    ";".join(map(str, run.seed_values)),
                    *(cell for stat in stats for cell in stat_cells(stat, run.multi_seed)),
                    *peaks,
                    run.protocol["backbone"],
                    json.dumps(run.protocol.get("backbone_kwargs") or {}, sort_keys=True),
                    ";".join(map(str, run_directories(run))),
                ]
            )
    return header, rows, csv_rows


def run_directories(run: Run) -> list[Path]:
    """The directory of a (multi-seed) run, or each directory of seeds run as separate jobs."""
    seed_paths = [seed.path for seed in run.seeds]
    return seed_paths if run.path in seed_paths else [run.path]


def stat_cells(stat: Stat | None, multi_seed: bool) -> list[float | None]:
    """Mean and std (std empty for one seed, both empty when missing)."""
    if stat is None:
        return [None, None]
    return [stat.mean, stat.std if multi_seed else None]


def csv_header() -> list[str]:
    keys = [key for key, _ in (*SUMMARY_COLUMNS, *COST_COLUMNS)]
    return [
        "method",
        "evaluation",
        "num_seeds",
        "seeds",
        *(name for key in keys for name in (key, f"{key}_std")),
        "peak_rss_mb",
        "peak_gpu_mb",
        "backbone",
        "backbone_kwargs",
        "run_dirs",
    ]


def curves(plots: Any, runs: Sequence[Run]) -> list[Any]:
    """One curve per run and class-incremental evaluation: colour per run, line style per evaluation."""
    styles = ("-", "--", ":", "-.")
    out = []
    for index, run in enumerate(runs):
        names = run.class_incremental_classifiers
        for k, name in enumerate(names):
            curve = run.curve(name)
            out.append(
                plots.Curve(
                    label=run.label if len(names) == 1 else f"{run.label} ({name})",
                    mean=curve.mean(axis=0),
                    std=curve.std(axis=0) if run.multi_seed else None,
                    color=plots.COLORS[index % len(plots.COLORS)],
                    linestyle=styles[k % len(styles)],
                )
            )
    return out


def settings_section(runs: Sequence[Run], settings: Sequence[tuple[str, list[str]]]) -> list[str]:
    """A table of the training settings that differ between the runs (empty when none do)."""
    if not settings:
        return []
    rows = [[f"`{key}`", *values] for key, values in settings]
    return [
        "**Settings that differ between these runs** (same protocol, different training):",
        "",
        markdown_table(["setting", *(run.label for run in runs)], rows, 1),
    ]


def render(
    runs: Sequence[Run],
    header: list[str],
    rows: list[list[str]],
    differences: list[str],
    figure: str,
    settings: Sequence[tuple[str, list[str]]] = (),
) -> str:
    lines = [f"# Comparison: {protocol_title(runs)}", ""]
    if differences:
        lines += [
            "**Warning: these runs do not share a protocol (compared with --force):**",
            "",
            "```",
            *differences,
            "```",
            "",
        ]
    multi = any(run.multi_seed for run in runs)
    note = "Mean ± std (numpy, ddof 0) over seeds where a run has several. " if multi else ""
    lines += [
        f"{note}Accuracy in %, class-incremental; forgetting and BWT over old tasks; images/s is the mean "
        "training throughput over epochs; peak memory is the largest over a run's seeds.",
        "",
        markdown_table(header, rows, 3),
        *settings_section(runs, settings),
        f"![accuracy after each task]({figure})",
        "",
        "## Runs",
        "",
        markdown_table(
            ["method", "seeds", "class orders", "run directories"],
            [
                [
                    run.label,
                    ", ".join(map(str, run.seed_values)),
                    "; ".join(short(" ".join(map(str, o)), 40) for o in run.protocol["class_orders"]),
                    ", ".join(f"`{path}`" for path in run_directories(run)),
                ]
                for run in runs
            ],
            4,
        ),
    ]
    return "\n".join(lines)
