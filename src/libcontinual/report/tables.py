"""Markdown and CSV tables; numbers formatted one way everywhere (``mean ± std`` over several seeds)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from libcontinual.report.load import Stat

# Summary metrics of results.json shown in tables, with their column titles.
SUMMARY_COLUMNS = (
    ("last_accuracy", "last accuracy (%)"),
    ("average_incremental_accuracy", "avg. incremental accuracy (%)"),
    ("forgetting", "forgetting (%)"),
    ("bwt", "BWT (%)"),
)


def format_number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_stat(stat: Stat | None, digits: int = 2) -> str:
    """``12.34`` for one seed, ``12.34 ± 0.56`` over several, ``-`` when missing."""
    if stat is None:
        return "-"
    if len(stat.values) == 1:
        return format_number(stat.mean, digits)
    return f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> str:
    """A GitHub markdown table; the first ``text_columns`` columns left-aligned, the rest right-aligned."""
    escape = [[cell.replace("|", "\\|") for cell in row] for row in [header, *rows]]
    align = [":---" if i < text_columns else "---:" for i in range(len(header))]
    lines = [escape[0], align, *escape[1:]]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines) + "\n"


def csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """CSV with full-precision numbers (``repr`` of floats) and empty cells for missing values."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(
            ["" if cell is None else repr(cell) if isinstance(cell, float) else cell for cell in row]
        )
    return buffer.getvalue()
