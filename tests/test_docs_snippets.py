"""The code on the documentation pages runs as written (the markers are described in docs/contributing.md).

``<!-- runnable -->`` before a fenced block: YAML is loaded and validated as a config, Python is executed
(one namespace per page), bash runs its ``libcontinual ...`` lines in-process and ``python -m pytest ...``
lines in a subprocess. ``<!-- file: NAME -->``: the block is ``docs/examples/NAME`` verbatim, and a page with
such blocks runs in an empty folder holding just those files, as a reader following it from scratch.
Every experiment a block starts is shrunk to a tiny synthetic stream (``shrink``), so the file takes seconds.
The static checks keep the reference pages in step with the registries and the recorded benchmarks.
"""

from __future__ import annotations

import dataclasses
import glob
import inspect
import json
import logging
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from libcontinual import cli
from libcontinual.config import ComponentConfig, ExperimentConfig, deep_merge, load_config, parse_yaml_value
from libcontinual.engine import builders, entry, seeds
from libcontinual.engine.experiment import check_components, register_everything
from libcontinual.registry import BACKBONES, BUFFERS, DATASETS, METHODS, SCENARIOS

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
EXAMPLES = DOCS / "examples"
TUTORIAL = DOCS / "add-a-method.md"
BENCHMARKS = REPO / "benchmarks"

MARKER = re.compile(r"^\s*<!--\s*(runnable|file:)(.*?)-->\s*$")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>.*)$")
LANGUAGES = {"python": "python", "py": "python", "yaml": "yaml", "yml": "yaml", "bash": "bash", "sh": "bash"}
RUNNABLE_OPTIONS = {"path", "fragment"}

# A small complete config: the base of `fragment` blocks.
FRAGMENT_BASE = {
    "dataset": "synthetic",
    "init_cls_num": 2,
    "inc_cls_num": 2,
    "task_num": 3,
    "epoch": 1,
    "backbone": "resnet8",
    "method": "finetune",
    "optimizer": {"name": "SGD", "kwargs": {"lr": 0.05}},
}
# What `shrink` runs instead of a built-in dataset whose files the test machine may not have.
STAND_IN_DATASET = ComponentConfig(
    "synthetic", {"num_classes": 6, "train_per_class": 16, "test_per_class": 8}
)
FILE_DATASETS = {"demo", "cifar10", "cifar100", "mnist", "fashion_mnist", "image_folder", "npz"}
BIG_RESNETS = {"resnet18", "resnet20", "resnet32", "resnet56"}


# ----------------------------------------------------------------------------------------- parsing
@dataclass
class Block:
    """One fenced block of a page and its marker (``kind`` is None for an unmarked block)."""

    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    kind: str | None = None  # "runnable" or "file"
    options: dict[str, str | bool] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def parse_marker(kind: str, rest: str, where: str) -> tuple[str, dict[str, str | bool]]:
    if kind == "file:":
        name = rest.strip()
        if not name or "/" in name:
            raise ValueError(f"{where}: <!-- file: NAME --> needs a file name of docs/examples/")
        return "file", {"name": name}
    options: dict[str, str | bool] = {}
    for word in shlex.split(rest):
        key, sep, value = word.partition("=")
        if key not in RUNNABLE_OPTIONS:
            raise ValueError(f"{where}: unknown runnable option {key!r} (known: {sorted(RUNNABLE_OPTIONS)})")
        options[key] = value if sep else True
    return "runnable", options


def page_blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page`` with the marker before it; a marker without a fence is an error."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: tuple[str, dict[str, str | bool], int] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        marker = MARKER.match(line)
        fence = FENCE.match(line)
        if marker:
            if pending is not None:
                raise ValueError(f"{page.name}:{pending[2]}: marker not followed by a fenced block")
            kind, options = parse_marker(marker.group(1), marker.group(2), f"{page.name}:{index + 1}")
            pending = (kind, options, index + 1)
        elif fence:
            indent, ticks = fence.group("indent"), fence.group("fence")
            closing = re.compile(rf"^{re.escape(indent)}{re.escape(ticks[0])}{{{len(ticks)},}}\s*$")
            end = index + 1
            while end < len(lines) and not closing.match(lines[end]):
                end += 1
            if end == len(lines):
                raise ValueError(f"{page.name}:{index + 1}: fenced block never closed")
            body = [
                text[len(indent) :] if text.startswith(indent) else text for text in lines[index + 1 : end]
            ]
            info = fence.group("info").split()
            block = Block(page, index + 1, info[0] if info else "", "\n".join(body) + "\n")
            if pending is not None:
                block.kind, block.options = pending[0], pending[1]
                pending = None
            blocks.append(block)
            index = end
        elif line.strip() and pending is not None:
            raise ValueError(f"{page.name}:{pending[2]}: marker not followed by a fenced block")
        index += 1
    if pending is not None:
        raise ValueError(f"{page.name}:{pending[2]}: marker not followed by a fenced block")
    return blocks


PAGES = sorted(DOCS.glob("*.md"))
BLOCKS = {page: page_blocks(page) for page in PAGES}
RUNNABLE_PAGES = [page for page, blocks in BLOCKS.items() if any(b.kind == "runnable" for b in blocks)]


def section(text: str, heading: str) -> str:
    """The text under the level-2 ``heading`` (up to the next level-2 heading)."""
    match = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section '## {heading}'"
    return match.group(1)


# ----------------------------------------------------------------------------------------- running
def shrink(config: ExperimentConfig) -> ExperimentConfig:
    """The experiment a docs block starts, made tiny: same method, buffer and optimizer, little data."""
    work = Path.cwd().resolve()
    changes: dict = {
        "epoch": 1,
        "init_epoch": 1,
        "batch_size": 16,
        "eval_batch_size": 64,
        "device": "cpu",
        "num_threads": 1,
        "channels_last": False,
        "bf16": False,
        "compile": False,
    }
    data_root = config.data_root
    own_data = data_root is not None and Path(data_root).resolve().is_relative_to(work)
    if config.dataset.name in FILE_DATASETS and not own_data:
        changes.update(
            dataset=STAND_IN_DATASET,
            data_root=None,
            image_size=8,
            normalize=None,
            class_order=None,
            init_cls_num=2,
            inc_cls_num=2,
            task_num=min(config.task_num, 3),
        )
        if config.scenario.name == "superclass":
            changes["scenario"] = ComponentConfig("class_incremental")
    backbone = config.backbone
    if backbone.name == "mlp" and "dataset" in changes:
        changes["backbone"] = ComponentConfig("mlp", {"input_size": 64, "hidden_sizes": [16]})
    if backbone.name in BIG_RESNETS:
        changes["backbone"] = ComponentConfig(
            "resnet8", {k: v for k, v in backbone.kwargs.items() if k == "last_relu"}
        )
    if not Path(config.save_path).resolve().is_relative_to(work):
        changes["save_path"] = str(work / "runs")  # never write into the repository
    return dataclasses.replace(config, **changes)


@pytest.fixture
def tiny_experiments(monkeypatch):
    """Every experiment started through the library (API, CLI, resume, multi-seed) runs shrunk."""
    run_any, run_experiment = entry.run_any, entry.run_experiment

    def shrunk_run_any(config, config_path, callbacks=()):
        return run_any(shrink(config), config_path, callbacks)

    def shrunk_run_experiment(config, *args, **kwargs):
        return run_experiment(shrink(config), *args, **kwargs)

    monkeypatch.setattr(entry, "run_any", shrunk_run_any)
    monkeypatch.setattr(entry, "run_experiment", shrunk_run_experiment)
    monkeypatch.setattr(seeds, "run_experiment", shrunk_run_experiment)


@pytest.fixture
def restore_registries():
    """Names registered by a page (its plugins, an example dataset) are forgotten afterwards."""
    register_everything()
    registries = (DATASETS, BACKBONES, METHODS, BUFFERS, SCENARIOS)
    saved = [dict(registry._entries) for registry in registries]  # private: no public unregister
    modules = set(sys.modules)
    yield
    for registry, entries in zip(registries, saved, strict=True):
        registry._entries.clear()
        registry._entries.update(entries)
    for name in set(sys.modules) - modules:
        if name.startswith("libcontinual_plugin_"):
            del sys.modules[name]


def mirror_repository(root: Path) -> Path:
    """A folder whose entries link to the repository's top-level entries (``configs/`` resolves)."""
    root.mkdir()
    for item in REPO.iterdir():
        if item.name not in {".git", "runs", "site", "comparison", ".pytest_cache", ".ruff_cache"}:
            (root / item.name).symlink_to(item)
    return root


def real_parents(work: Path, relative: Path) -> None:
    """Make each parent folder of ``work / relative`` a real folder (linking to the repository's entries),
    so a file written there stays in the temporary folder."""
    folder = work
    for part in relative.parent.parts:
        folder = folder / part
        if folder.is_symlink():
            target = folder.resolve()
            folder.unlink()
            folder.mkdir()
            for entry in target.iterdir():
                (folder / entry.name).symlink_to(entry)
        folder.mkdir(exist_ok=True)


def validate_yaml(block: Block, work: Path) -> None:
    register_everything()
    if block.options.get("fragment"):
        config, config_path = load_config(deep_merge(FRAGMENT_BASE, parse_yaml_value(block.text)))
        config_dir = work
    else:
        relative = Path(str(block.options.get("path", f"snippet-{block.line}.yaml")))
        real_parents(work, relative)
        (work / relative).write_text(block.text)
        config, config_path = load_config(work / relative)
        config_dir = config_path.parent
    plugins = builders.resolve_plugins(config.plugins, config_dir)
    builders.load_plugins(plugins, None)
    check_components(dataclasses.replace(config, plugins=plugins))


def run_cli(argv: list[str]) -> int:
    """``libcontinual ARGV`` in-process; the log handlers the CLI installs are removed afterwards."""
    logger = logging.getLogger("libcontinual")
    handlers, level = list(logger.handlers), logger.level
    try:
        return cli.main(argv)
    finally:
        for handler in logger.handlers[:]:
            if handler not in handlers:
                logger.removeHandler(handler)
        logger.setLevel(level)


def commands(text: str) -> Iterator[str]:
    """The command lines of a bash block (continuations joined, comments and blank lines dropped)."""
    joined = text.replace("\\\n", " ")
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            yield line


def run_bash(block: Block, work: Path, log: list[str]) -> None:
    for command in commands(block.text):
        argv = shlex.split(command)
        if argv[:2] in (["libcontinual", "report"], ["libcontinual", "compare"]):
            pytest.importorskip("matplotlib", reason=f"`{command}` needs the report extra (matplotlib)")
        if argv[0] == "libcontinual":
            args = []
            for arg in argv[1:]:
                if "*" in arg:
                    matches = sorted(glob.glob(arg, root_dir=work))
                    assert matches, f"{block.where}: `{command}`: nothing matches {arg}"
                    args += matches
                else:
                    args.append(arg)
            status = run_cli(args)
            assert status == 0, f"{block.where}: `{command}` exited with status {status}"
        elif argv[:3] == ["python", "-m", "pytest"]:
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", *argv[3:], "-p", "no:cacheprovider"],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert proc.returncode == 0, f"{block.where}: `{command}` failed:\n{proc.stdout}\n{proc.stderr}"
        else:
            pytest.fail(
                f"{block.where}: a runnable bash block may hold only `libcontinual ...` and "
                f"`python -m pytest ...` lines, not `{command}`"
            )
        log.append(command)


def run_page(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    """Run the page's blocks in order; returns the working folder and the commands run."""
    blocks = BLOCKS[page]
    tutorial = any(b.kind == "file" for b in blocks)
    work = tmp_path / "reader" if tutorial else mirror_repository(tmp_path / "repository")
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    namespace: dict = {"__name__": "__docs__"}
    log: list[str] = []
    for block in blocks:
        if block.kind == "file":
            (work / str(block.options["name"])).write_text(block.text)
        elif block.kind == "runnable":
            language = LANGUAGES.get(block.language)
            if language not in ("yaml", "python", "bash"):
                pytest.fail(
                    f"{block.where}: runnable blocks must be python, yaml or bash, not {block.language!r}"
                )
            try:
                if language == "yaml":
                    validate_yaml(block, work)
                elif language == "python":
                    exec(compile(block.text, block.where, "exec"), namespace)
                else:
                    run_bash(block, work, log)
            except AssertionError:
                raise
            except Exception as error:  # name the block: the traceback alone points into the library
                raise AssertionError(f"{block.where}: {type(error).__name__}: {error}") from error
    return work, log


# ----------------------------------------------------------------------------------------- the pages
@pytest.mark.parametrize("page", [p for p in RUNNABLE_PAGES if p != TUTORIAL], ids=lambda p: p.name)
def test_runnable_blocks_of_the_page_run(page, tmp_path, monkeypatch, tiny_experiments, restore_registries):
    run_page(page, tmp_path, monkeypatch)


def test_add_a_method_tutorial_works_from_an_empty_folder(
    tmp_path, monkeypatch, tiny_experiments, restore_registries
):
    work, log = run_page(TUTORIAL, tmp_path, monkeypatch)
    assert sorted(p.name for p in work.iterdir() if p.is_file()) == sorted(
        ["distill_features.py", "distill_features.yaml", "test_distill_features.py"]
    )
    assert any(command.startswith("python -m pytest") for command in log)  # its property tests passed
    (distilled,) = (work / "runs").glob("distill_features-*")
    (finetuned,) = (work / "runs").glob("finetune-*")
    records = [json.loads(line) for line in (distilled / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert all(("loss_fd" in r) == (r["task"] > 0) for r in epochs)
    assert "loss_fd" not in (finetuned / "metrics.jsonl").read_text()
    comparison = (work / "comparison" / "comparison.md").read_text()
    assert "| distill_features |" in comparison and "| finetune |" in comparison


# ----------------------------------------------------------------------------------------- static checks
def test_markers_are_attached_to_blocks_of_known_languages():
    for blocks in BLOCKS.values():
        for block in blocks:
            if block.kind == "runnable":
                assert block.language in LANGUAGES, f"{block.where}: cannot run a {block.language!r} block"
                if block.options and LANGUAGES[block.language] != "yaml":
                    pytest.fail(f"{block.where}: path/fragment apply to yaml blocks only")


def test_file_blocks_are_the_example_files_and_every_example_is_shown():
    shown = set()
    for blocks in BLOCKS.values():
        for block in blocks:
            if block.kind == "file":
                name = str(block.options["name"])
                assert block.text == (EXAMPLES / name).read_text(), (
                    f"{block.where} differs from docs/examples/{name}"
                )
                shown.add(name)
    examples = {p.name for p in EXAMPLES.iterdir() if p.is_file()}
    assert examples == shown, f"docs/examples files not shown in full on a page: {sorted(examples - shown)}"


def test_mkdocs_nav_lists_every_page():
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]
    listed = {next(iter(entry.values())) for entry in nav}
    assert listed == {page.name for page in PAGES}


def builtin(registry) -> list[str]:
    register_everything()
    return [name for name in registry.names() if registry.get(name).__module__.startswith("libcontinual.")]


def default_text(value) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def keyword_defaults(factory, skip: set[str]) -> list[tuple[str, str]]:
    parameters = inspect.signature(factory).parameters.values()
    return [
        (p.name, default_text(p.default))
        for p in parameters
        if p.name not in skip and p.default is not p.empty
    ]


def documented_keys(text: str) -> list[tuple[str, str]]:
    """Rows ``| `key` | `default` | ... |`` of the first table after **Config keys.**"""
    after = text.split("**Config keys.**", 1)[1]
    rows = []
    for line in after.splitlines()[1:]:
        if rows and not line.startswith("|"):
            break
        match = re.match(r"^\| `(\w+)` \| `([^`]*)` \|", line)
        if match:
            rows.append((match.group(1), match.group(2)))
        elif line.startswith("**"):
            break
    return rows


@pytest.mark.parametrize("name", builtin(METHODS))
def test_every_method_has_a_section_with_its_config_keys(name):
    text = section((DOCS / "methods.md").read_text(), f"`{name}`")
    expected = keyword_defaults(METHODS.get(name), {"self", "backbone", "feat_dim", "num_class"})
    assert documented_keys(text) == expected, (
        f"docs/methods.md § {name}: the Config keys table must list {expected}"
    )
    assert "**Recorded results.**" in text


def test_recorded_results_come_from_the_benchmarks():
    methods = (DOCS / "methods.md").read_text()
    recorded = "\n".join(p.read_text() for p in BENCHMARKS.rglob("*") if p.suffix in {".md", ".json"})
    for paragraph in re.findall(r"^\*\*Recorded results\.\*\*(.*)$", methods, re.M):
        for number in re.findall(r"-?\d+\.\d+", paragraph):
            assert number in recorded, (
                f"docs/methods.md quotes {number}, which no file in benchmarks/ records"
            )
        for config in re.findall(r"R5 \(`([^`]+)`\): not yet measured", paragraph):
            assert (REPO / config).is_file(), f"docs/methods.md names a missing R5 config {config}"
    for path in sorted((BENCHMARKS / "results" / "r5").glob("*.json")):
        record = json.loads(path.read_text())
        summary = record["summary"]["cnn"]
        assert f"R5 (`{record['config']}`): not yet measured" not in methods, (
            f"{path.relative_to(REPO)} records R5 for {record['config']} (last accuracy "
            f"{summary['last_accuracy']:.2f}, average incremental "
            f"{summary['average_incremental_accuracy']:.2f}): put these numbers into the method's "
            "Recorded results in docs/methods.md"
        )


@pytest.mark.parametrize("name", builtin(DATASETS))
def test_every_dataset_and_its_options_are_documented(name):
    text = (DOCS / "datasets.md").read_text()
    options = [
        p.name for p in inspect.signature(DATASETS.get(name)).parameters.values() if p.kind is p.KEYWORD_ONLY
    ]
    assert f"`{name}`" in text
    for option in options:
        assert f"`{option}`" in text, (
            f"docs/datasets.md does not mention option {option!r} of dataset {name!r}"
        )


@pytest.mark.parametrize("name", builtin(SCENARIOS))
def test_every_scenario_and_its_options_are_documented(name):
    text = section((DOCS / "datasets.md").read_text(), "Scenarios: how a dataset becomes tasks")
    shared = builders.INJECTED["scenario"]  # top-level keys the library passes every scenario
    assert f"| `{name}` |" in text
    for option, _ in keyword_defaults(SCENARIOS.get(name), shared):
        assert f"`{option}`" in text, (
            f"docs/datasets.md does not mention option {option!r} of scenario {name!r}"
        )


def test_buffer_keys_are_documented():
    text = section((DOCS / "methods.md").read_text(), "Buffers")
    for name in builtin(BUFFERS):
        assert f"| `{name}` |" in text
        for option, _ in keyword_defaults(BUFFERS.get(name), {"self"}):
            assert f"`{option}`" in text, f"docs/methods.md § Buffers does not mention {option!r} of {name!r}"


def test_readme_methods_table_has_a_row_per_method():
    table = section((REPO / "README.md").read_text(), "Methods")
    rows = re.findall(r"^\| `(\w+)` \|", table, re.M)
    assert sorted(rows) == sorted(builtin(METHODS))
