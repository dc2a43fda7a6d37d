"""Protocol R5 (Split CIFAR-10, 5 tasks of 2 classes, ResNet-32, 5 epochs per task) for one method.

Extracts ``../shared/data/cifar10-jpg.tar.gz`` into ``benchmarks/.data/`` once, runs
``configs/reproduce/r5/<method>.yaml`` and records the outcome in
``benchmarks/results/r5/<method>-seed<seed>.json``; ``--table`` rewrites the R5 table in
``benchmarks/BENCHMARKS.md`` from every recorded result. Runs go to
``benchmarks/runs/r5-<method>-seed<seed>-*`` with a checkpoint after every epoch; a run that was killed
(Ctrl-C, a session ending) continues from its last checkpoint when the same command is given again. Its
wall time is then the time up to that checkpoint plus the time after resuming (downtime not counted).

Usage (from the repository root):
    python benchmarks/r5.py METHOD [METHOD ...] [--seed 1993]     (methods run one after another)
    python benchmarks/r5.py --table
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
DATA = REPO / "benchmarks" / ".data"
RESULTS = REPO / "benchmarks" / "results" / "r5"
BENCHMARKS_MD = REPO / "benchmarks" / "BENCHMARKS.md"
TABLE_START, TABLE_END = "<!-- r5-table:start -->", "<!-- r5-table:end -->"


def ensure_data() -> Path:
    target = DATA / "cifar10-jpg"
    marker = DATA / ".cifar10-jpg.complete"
    if not marker.exists():
        if not ARCHIVE.exists():
            sys.exit(f"R5 needs {ARCHIVE} (see ../shared/data/README.md)")
        DATA.mkdir(parents=True, exist_ok=True)
        with tarfile.open(ARCHIVE) as archive:
            archive.extractall(DATA, filter="data")
        marker.write_text("extracted\n")
    return target


def run(method: str, seed: int) -> Path:
    import libcontinual

    data_root = ensure_data()
    config = REPO / "configs" / "reproduce" / "r5" / f"{method}.yaml"
    os.chdir(REPO)
    result = libcontinual.run(
        config,
        data_root=str(data_root),
        seed=seed,
        order_seed=seed,
        name=f"r5-{method}-seed{seed}",
        resume=True,
        checkpoint_every=1,
    )
    results = result.results
    record = {
        "protocol": "R5",
        "method": method,
        "seed": seed,
        "command": f"python benchmarks/r5.py {shlex.quote(method)} --seed {seed}",
        "config": str(config.relative_to(REPO)),
        "run_dir": str(result.run_dir),
        "summary": results["summary"],
        "accuracy_matrix": results["accuracy_matrix"],
        "wall_time_s": results["wall_time_s"],
        "task_wall_time_s": results["task_wall_time_s"],
        "peak_rss_mb": results["peak_rss_mb"],
        "peak_gpu_mb": results["peak_gpu_mb"],
        "provenance": results["provenance"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{method}-seed{seed}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    return out


def table() -> str:
    rows = [
        "| method | evaluation | accuracy after each task (%) | last | avg. incremental | forgetting | "
        "wall time (min) | peak RSS (MiB) | seed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(RESULTS.glob("*.json")):
        record = json.loads(path.read_text())
        for name, summary in record["summary"].items():
            if name.endswith("_task_il"):
                continue
            curve = " / ".join(f"{v:.1f}" for v in summary["accuracy_curve"])
            forgetting = "-" if summary["forgetting"] is None else f"{summary['forgetting']:.1f}"
            rows.append(
                f"| {record['method']} | {name} | {curve} | {summary['last_accuracy']:.2f} | "
                f"{summary['average_incremental_accuracy']:.2f} | {forgetting} | "
                f"{record['wall_time_s'] / 60:.1f} | {record['peak_rss_mb']:.0f} | {record['seed']} |"
            )
    return "\n".join(rows)


def write_table() -> None:
    text = BENCHMARKS_MD.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    BENCHMARKS_MD.write_text(text[:start] + "\n" + table() + "\n" + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="*", metavar="method")
    parser.add_argument("--seed", type=int, default=1993)
    parser.add_argument("--table", action="store_true", help="rewrite the R5 table in BENCHMARKS.md")
    args = parser.parse_args()
    from libcontinual.engine.trainer import RunInterrupted

    for method in args.methods:
        try:
            print(f"recorded {run(method, args.seed)}", flush=True)
        except RunInterrupted as stop:
            sys.exit(f"R5 {method} stopped by {stop} after a checkpoint; the same command continues it.")
        write_table()
    if args.table:
        write_table()


if __name__ == "__main__":
    main()
