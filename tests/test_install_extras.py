"""The README's install step gives a passing test run, and CI runs the tests after exactly that step."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Makes the extras that ".[test]" does not install unimportable, as in a fresh environment after the
# README's install step (matplotlib: report; tensorboard; mkdocs: docs).
WITHOUT_EXTRAS = """
import importlib.abc, importlib.util, sys
BLOCKED = ("matplotlib", "tensorboard", "mkdocs", "material")
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Absent())
real_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (
    None if name.split(".")[0] in BLOCKED else real_find_spec(name, package)
)
"""


def install_lines(text: str) -> list[str]:
    """`pip install ...` commands, without comments, `python -m`, and pip's output flags."""
    lines = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip().replace('"${quiet[@]}" ', "")
        line = re.sub(r"^(python3? -m )?pip install ", "pip install ", line)
        if line.startswith("pip install "):
            lines.append(line)
    return lines


def test_ci_runs_the_tests_after_exactly_the_readmes_install_step():
    readme = (REPO / "README.md").read_text()
    install = readme[readme.index("## Install") :]
    install = install[: install.index("```", install.index("```") + 3)]
    ci = (REPO / ".ci" / "run").read_text()
    before_tests = ci[: ci.index("python -m pytest")]
    assert "venv" in before_tests  # a fresh environment: nothing installed before leaks in
    assert install_lines(before_tests) == install_lines(install)
    assert "mkdocs build" in ci[ci.index("python -m pytest") :]


def test_tests_that_need_an_absent_extra_skip_with_a_reason(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(WITHOUT_EXTRAS)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "tests/test_report.py",
            "tests/test_loggers.py",
            "tests/test_first_hour.py::test_figures_as_svg_or_pdf_with_readable_legends_and_visible_zero_bars",
            "tests/test_docs_snippets.py::test_runnable_blocks_of_the_page_run[reproducibility.md]",
        ],
        cwd=REPO,
        env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert "No module named 'matplotlib'" in run.stdout and "tensorboard is not installed" in run.stdout
    assert "needs the report extra (matplotlib)" in run.stdout
