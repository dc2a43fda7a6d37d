"""Command line: ``libcontinual run | resume | report | compare | list | datasets``.

Errors the user can fix (config, data, paths) print one message and exit with status 2, without a
Python traceback. Every console is made with ``markup=False``: text from the user (keys, paths, class
names, error messages such as ``pip install 'libcontinual[report]'``) is printed literally, never read
as rich markup; styles come from ``rich.text.Text``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from libcontinual import progress
from libcontinual.distributed import launched_as_main
from libcontinual.engine.trainer import RunInterrupted
from libcontinual.errors import LibContinualError

EXIT_USER_ERROR = 2
FIGURE_FORMATS = ("png", "svg", "pdf")  # report.plots.FORMATS, without importing matplotlib here


def plain_console(stderr: bool = False) -> Console:
    """A console that prints text literally (no rich markup: ``[report]`` in a message stays)."""
    return Console(stderr=stderr, markup=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_USER_ERROR
    console = plain_console(stderr=True)
    setup_logging(console, args.verbose)
    try:
        args.console = console
        return args.handler(args)
    except RunInterrupted as stop:
        console.print(
            Text.assemble(
                (f"stopped by {stop}", "yellow"), "; checkpoint written (see the log for the resume command)"
            )
        )
        return 128 + int(getattr(signal, str(stop), signal.SIGINT))
    except LibContinualError as exc:
        console.print(Text.assemble(("error:", "bold red"), " ", str(exc)), highlight=False)
        return EXIT_USER_ERROR
    except (MemoryError, RecursionError) as exc:
        what = "out of memory" if isinstance(exc, MemoryError) else "input nested too deeply"
        console.print(
            Text.assemble(("error:", "bold red"), f" {what} ({type(exc).__name__}: {exc}); check the sizes "),
            Text("and nesting the config asks for (num_classes, image_size, batch_size, ...)."),
            highlight=False,
        )
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        console.print(Text("interrupted", "yellow"))
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="libcontinual", description="Continual learning experiments.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(title="commands")

    run = commands.add_parser("run", help="run an experiment from a YAML config")
    run.add_argument("config", help="YAML config file")
    run.add_argument(
        "overrides", nargs="*", metavar="key=value", help="overrides, e.g. epoch=5 optimizer.kwargs.lr=0.01"
    )
    run.set_defaults(handler=cmd_run)

    resume = commands.add_parser("resume", help="continue a run directory from its newest valid checkpoint")
    resume.add_argument("run_dir", help="the run directory (save_path/<name>-<time>)")
    resume.add_argument(
        "--trust",
        action="store_true",
        help="trust this run directory: import the plugins its config.yaml lists (their code runs) and read "
        "checkpoints of libcontinual's older format (loading those can run code)",
    )
    resume.set_defaults(handler=cmd_resume)

    report = commands.add_parser(
        "report", help="write report.md and figures (PNG, SVG or PDF) into RUN_DIR/report/"
    )
    report.add_argument("run_dir", help="a finished run directory (single or multi-seed)")
    report.add_argument("--format", default="png", choices=FIGURE_FORMATS, help="figure files (default png)")
    report.set_defaults(handler=cmd_report)

    compare = commands.add_parser(
        "compare", help="compare runs of one protocol: markdown and CSV tables, an accuracy-curve figure"
    )
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished run directories")
    compare.add_argument("--out", default="comparison", help="output folder (default: ./comparison)")
    compare.add_argument("--force", action="store_true", help="compare even when the protocols differ")
    compare.add_argument("--format", default="png", choices=FIGURE_FORMATS, help="figure file (default png)")
    compare.set_defaults(handler=cmd_compare)

    listing = commands.add_parser(
        "list", help="the shipped configs (run one by name) and the registered methods, backbones, datasets"
    )
    listing.add_argument(
        "what", nargs="?", choices=LISTS, default=None, help="show only this list (default: every list)"
    )
    listing.set_defaults(handler=cmd_list)

    datasets = commands.add_parser("datasets", help="known datasets and where they are looked for")
    datasets_commands = datasets.add_subparsers(title="datasets commands")
    dataset_listing = datasets_commands.add_parser("list", help="every registered dataset, found or not")
    dataset_listing.set_defaults(handler=cmd_datasets_list)
    info = datasets_commands.add_parser("info", help="sizes, classes and class order of one dataset")
    info.add_argument("name")
    info.add_argument("--data-root", default=None)
    info.add_argument("--order-seed", type=int, default=1993)
    info.add_argument("--init-cls-num", type=int, default=None, help="classes of the first task to show")
    info.set_defaults(handler=cmd_datasets_info)
    return parser


def setup_logging(console: Console, verbose: bool) -> None:
    """Log lines on stderr; under torchrun, ranks other than 0 print warnings and errors only."""
    logger = logging.getLogger("libcontinual")
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not launched_as_main():
        logger.setLevel(logging.WARNING)
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False, markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)


# --------------------------------------------------------------------------- run


def cmd_run(args: argparse.Namespace) -> int:
    from libcontinual.config import load_config
    from libcontinual.engine.entry import run_any

    config, config_path = load_config(args.config, args.overrides)
    with terminal_progress(args.console) as callbacks:
        result = run_any(config, config_path, callbacks)
    if launched_as_main():
        print_results(plain_console(), result.results)
        plain_console().print(f"run directory: {result.run_dir}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from libcontinual.engine.entry import resume
    from libcontinual.engine.experiment import run_plugins

    trust = args.trust
    if not trust and sys.stdin.isatty() and (plugins := run_plugins(args.run_dir)):
        answer = args.console.input(
            Text(
                f"{args.run_dir} lists plugins that resuming imports, which runs their code: "
                f"{', '.join(plugins)}. Did you create this run, and do you trust them? [y/N] "
            )
        )
        trust = answer.strip().lower() in ("y", "yes")
    with terminal_progress(args.console) as callbacks:
        result = resume(args.run_dir, callbacks, trust=trust)
    if launched_as_main():
        print_results(plain_console(), result.results)
        plain_console().print(f"run directory: {result.run_dir}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from libcontinual.report import write_report

    path = write_report(args.run_dir, image_format=args.format)
    plain_console().print(f"report: {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from libcontinual.report import compare

    path = compare(args.run_dirs, args.out, force=args.force, image_format=args.format)
    csv_name = path.with_suffix(".csv").name
    plain_console().print(f"comparison: {path} (with {csv_name} and accuracy_curves.{args.format})")
    return 0


@contextlib.contextmanager
def terminal_progress(console: Console) -> Iterator[list[Any]]:
    """Rich progress bars on a terminal (decoding, batches, evaluation, herding, between-task work), with
    the trainer callback that draws the batches; on a file or pipe nothing but the log lines."""
    if not console.is_terminal or not launched_as_main():
        yield []
        return
    reporter = RichProgress(console)
    try:
        with progress.reporting(reporter):
            yield [ProgressBar(reporter)]
    finally:
        reporter.close()


def print_results(console: Console, results: dict[str, Any]) -> None:
    """The accuracy matrix (rows: after task i; columns: task j) and the summary metrics."""
    if results.get("aggregate"):
        print_aggregate(console, results)
        return
    for name, matrix in results["accuracy_matrix"].items():
        if name.endswith("_task_il"):
            continue
        tasks = len(matrix)
        table = Table(title=f"accuracy matrix ({name}, class-incremental), % on task j after training task i")
        table.add_column("after task")
        for j in range(tasks):
            table.add_column(f"task {j}", justify="right")
        table.add_column("all seen", justify="right")
        curve = results["summary"][name]["accuracy_curve"]
        for i, row in enumerate(matrix):
            cells = [f"{row[j]:.1f}" if j <= i else "" for j in range(tasks)]
            table.add_row(str(i), *cells, f"{curve[i]:.1f}")
        console.print(table)
    summary = Table(title="summary")
    summary.add_column("evaluation")
    columns = ["last_accuracy", "average_incremental_accuracy", "forgetting", "bwt"]
    for column in columns:
        summary.add_column(column.replace("_", " "), justify="right")
    for name, metrics in results["summary"].items():
        values = [metrics[c] for c in columns]
        summary.add_row(name, *("-" if v is None else f"{v:.2f}" for v in values))
    console.print(summary)
    console.print(f"wall time {results['wall_time_s']:.1f} s, peak memory {results['peak_rss_mb']:.0f} MiB")


def print_aggregate(console: Console, results: dict[str, Any]) -> None:
    """Mean ± std over seeds of the accuracy curve and the summary metrics."""
    seeds = ", ".join(map(str, results["seeds"]))
    table = Table(title=f"mean ± std over seeds {seeds}")
    table.add_column("evaluation")
    columns = ["last_accuracy", "average_incremental_accuracy", "forgetting", "bwt"]
    for column in ["accuracy after each task", *columns]:
        table.add_column(column.replace("_", " "), justify="right")
    for name, metrics in results["summary"].items():
        curve = results["accuracy_curve"][name]
        cells = [" / ".join(f"{m:.1f}" for m in curve["mean"])]
        for column in columns:
            value = metrics.get(column)
            cells.append("-" if value is None else f"{value['mean']:.2f} ± {value['std']:.2f}")
        table.add_row(name, *cells)
    console.print(table)


class RichProgress:
    """The CLI's ``progress.Reporter``: one rich Progress whose bars disappear when their work ends."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._open = 0

    def start(self, description: str, total: int | None) -> Any:
        if self._open == 0:
            self.progress.start()
        self._open += 1
        return self.progress.add_task(description, total=total, status="")

    def advance(self, handle: Any, amount: int) -> None:
        self.progress.advance(handle, amount)

    def finish(self, handle: Any) -> None:
        self.progress.remove_task(handle)
        self._open -= 1
        if self._open == 0:
            self.progress.stop()

    def close(self) -> None:
        self.progress.stop()


class ProgressBar:
    """The trainer's bar over the batches of each epoch, with the running loss and accuracy."""

    def __init__(self, reporter: RichProgress) -> None:
        self.reporter = reporter
        self.progress = reporter.progress
        self.bar: Any = None
        self.epochs = 0
        self.task_index = 0

    def on_task_start(self, trainer: Any, task: Any, epochs: int, batches: int) -> None:
        self.task_index, self.epochs = task.info.index, epochs
        self.bar = self.reporter.start(self._title(0), batches)

    def on_batch_end(self, trainer: Any, batch_index: int, loss: Any) -> None:
        if batch_index % 10 == 0:
            self.progress.update(self.bar, completed=batch_index + 1, status=f"loss {float(loss):.3f}")
        else:
            self.progress.advance(self.bar)

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        status = f"loss {record['loss']:.3f} acc {record['train_accuracy']:.1f}%"
        self.progress.update(
            self.bar, completed=0, description=self._title(record["epoch"] + 1), status=status
        )

    def on_evaluation(self, trainer: Any, record: dict[str, Any]) -> None: ...

    def on_task_end(self, trainer: Any, record: dict[str, Any]) -> None:
        if self.bar is not None:
            self.reporter.finish(self.bar)
            self.bar = None

    def _title(self, epoch: int) -> str:
        return f"task {self.task_index} epoch {min(epoch + 1, self.epochs)}/{self.epochs}"


# --------------------------------------------------------------------------- list

LISTS = ("configs", "methods", "backbones", "datasets", "buffers", "scenarios")


def cmd_list(args: argparse.Namespace) -> int:
    from libcontinual.engine.experiment import register_everything
    from libcontinual.registry import BACKBONES, BUFFERS, DATASETS, METHODS, SCENARIOS
    from libcontinual.shipped import configs_dir, description, is_header, shipped_config, shipped_names

    register_everything()
    console = plain_console()
    wanted = [args.what] if args.what else list(LISTS)
    if "configs" in wanted:
        table = Table(title=f"shipped configs (in {configs_dir()}): libcontinual run NAME [key=value ...]")
        table.add_column("name")
        table.add_column("what it runs")
        for name in sorted(shipped_names(), key=is_header):
            path = shipped_config(name)
            what = description(path) if path else ""
            table.add_row(name, f"(header for includes:) {what}" if is_header(name) else what)
        console.print(table)
    registries = {
        "methods": METHODS,
        "backbones": BACKBONES,
        "datasets": DATASETS,
        "buffers": BUFFERS,
        "scenarios": SCENARIOS,
    }
    for what, registry in registries.items():
        if what not in wanted:
            continue
        table = Table(title=f"{what} (config key {registry.kind}.name)")
        table.add_column("name")
        table.add_column("what it is")
        for name in registry.names():
            table.add_row(name, summary_line(registry.get(name), prefer_module=what == "methods"))
        console.print(table)
    return 0


def summary_line(component: Any, prefer_module: bool = False) -> str:
    """The first docstring line of a component: its module's for a method (a method file starts with its
    paper), else its own, else its module's."""
    import inspect

    module = inspect.getmodule(component)
    texts = [getattr(module, "__doc__", None), component.__doc__]
    for text in texts if prefer_module else texts[::-1]:
        if text and text.strip():
            return text.strip().splitlines()[0]
    return ""


# --------------------------------------------------------------------------- datasets


def cmd_datasets_list(args: argparse.Namespace) -> int:
    from libcontinual.data.datasets import describe_datasets

    table = Table(title="datasets")
    for column in ("name", "what", "looked for in (data_root unset)", "found there", "options"):
        table.add_column(column)
    for entry in describe_datasets():
        found = entry["found"]
        options = ", ".join(f"{k}={v!r}" for k, v in entry["options"].items())
        table.add_row(
            entry["name"],
            entry["description"],
            entry["default_location"] or "- (set data_root)",
            "-" if found is None else ("yes" if found else "no"),
            options,
        )
    plain_console().print(table)
    return 0


def cmd_datasets_info(args: argparse.Namespace) -> int:
    import libcontinual.data.datasets  # noqa: F401
    from libcontinual.data.scenario import default_class_order
    from libcontinual.registry import DATASETS

    data = DATASETS.get(args.name)(data_root=args.data_root)
    data.validate()
    console = plain_console()
    order = default_class_order(data.num_classes, args.order_seed)
    console.print(f"dataset {data.name}: {data.source}")
    console.print(
        f"train {len(data.train_labels)} images, test {len(data.test_labels)} images, "
        f"shape {data.image_shape}"
    )
    console.print(f"{data.num_classes} classes: {', '.join(data.class_names)}")
    console.print(f"class order (seed {args.order_seed}): {order}")
    if args.init_cls_num:
        first = order[: args.init_cls_num]
        console.print(f"first task: {[f'{c} {data.class_names[c]}' for c in first]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
