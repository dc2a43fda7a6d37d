"""Reports and comparisons of finished run directories: markdown, CSV and matplotlib figures.

``write_report(run_dir)`` describes one run (single or multi-seed); ``compare(run_dirs, out_dir)``
puts several methods side by side after checking that they share a protocol.
"""

from libcontinual.report.compare import compare
from libcontinual.report.load import ReportError, Run, load_run, load_runs
from libcontinual.report.report import write_report

__all__ = ["ReportError", "Run", "compare", "load_run", "load_runs", "write_report"]
