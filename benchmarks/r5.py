"""The Split CIFAR-10 protocols of ../shared/PROTOCOLS.md for one method: R5 (class-incremental), R5-DF
(R5 without data: ``--protocol r5df``) and T5 (task-incremental, VGG16-BN: ``--protocol t5``).

Extracts ``../shared/data/cifar10-jpg.tar.gz`` into ``benchmarks/.data/`` once, runs
``configs/reproduce/<protocol>/<method>.yaml`` and records the outcome in
``benchmarks/results/<protocol>/<method>-seed<seed>.json``; ``--table`` rewrites the protocol's table in
``benchmarks/BENCHMARKS.md`` (mean ± std over the recorded seeds). The class order is the protocol's
(``order_seed: 1993`` in the config) for every seed; the seed varies initialisation, batches and
augmentation. Runs go to ``benchmarks/runs/<protocol>-<method>-seed<seed>-*`` with a checkpoint after
every epoch; a run that was killed
(Ctrl-C, a session ending) continues from its last checkpoint when the same command is given again. Its
wall time is then the time up to that checkpoint plus the time after resuming (downtime not counted).

Usage (from the repository root):
    python benchmarks/r5.py METHOD [METHOD ...] [--seed 1993] [--protocol r5]   (one after another)
    python benchmarks/r5.py --table [--protocol r5]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tarfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
DATA = REPO / "benchmarks" / ".data"
RESULTS = REPO / "benchmarks" / "results"
BENCHMARKS_MD = REPO / "benchmarks" / "BENCHMARKS.md"
PROTOCOLS = {"r5": "R5", "r5df": "R5-DF", "t5": "T5"}


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


def run(method: str, seed: int, protocol: str = "r5") -> Path:
    import libcontinual

    data_root = ensure_data()
    config = REPO / "configs" / "reproduce" / protocol / f"{method}.yaml"
    os.chdir(REPO)
    result = libcontinual.run(
        config,
        data_root=str(data_root),
        seed=seed,
        name=f"{protocol}-{method}-seed{seed}",
        resume=True,
        checkpoint_every=1,
    )
    results = result.results
    flag = "" if protocol == "r5" else f" --protocol {protocol}"
    record = {
        "protocol": PROTOCOLS[protocol],
        "method": method,
        "seed": seed,
        "command": f"python benchmarks/r5.py {shlex.quote(method)} --seed {seed}{flag}",
        "config": str(config.relative_to(REPO)),
        "run_dir": str(result.run_dir),
        "summary": results["summary"],
        "accuracy_matrix": results["accuracy_matrix"],
        "class_order": results["protocol"]["class_order"],
        "wall_time_s": results["wall_time_s"],
        "task_wall_time_s": results["task_wall_time_s"],
        "peak_rss_mb": results["peak_rss_mb"],
        "peak_gpu_mb": results["peak_gpu_mb"],
        "provenance": results["provenance"],
    }
    out = RESULTS / protocol / f"{method}-seed{seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    return out


def mean_std(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(protocol: str = "r5") -> str:
    """One row per (method, evaluation): mean ± std (sample std) over the recorded seeds."""
    rows = [
        "| method | evaluation | accuracy after each task (%) | last | avg. incremental | forgetting | "
        "wall time (min) | peak RSS (MiB) | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[tuple[dict, dict]]] = defaultdict(list)
    for path in sorted((RESULTS / protocol).glob("*.json")):
        record = json.loads(path.read_text())
        for name, summary in record["summary"].items():
            if protocol == "t5" or not name.endswith("_task_il"):
                groups[record["method"], name].append((record, summary))
    for (method, name), entries in sorted(groups.items()):
        summaries = [summary for _, summary in entries]
        curve = " / ".join(
            f"{statistics.mean(values):.1f}"
            for values in zip(*(s["accuracy_curve"] for s in summaries), strict=True)
        )
        forgetting = [s["forgetting"] for s in summaries if s["forgetting"] is not None]
        seeds = ", ".join(str(record["seed"]) for record, _ in entries)
        rows.append(
            f"| {method} | {name} | {curve} | {mean_std([s['last_accuracy'] for s in summaries])} | "
            f"{mean_std([s['average_incremental_accuracy'] for s in summaries])} | "
            f"{mean_std(forgetting, 1) if forgetting else '-'} | "
            f"{mean_std([r['wall_time_s'] / 60 for r, _ in entries], 1)} | "
            f"{max(r['peak_rss_mb'] for r, _ in entries):.0f} | {seeds} |"
        )
    return "\n".join(rows)


def replace_section(name: str, body: str) -> None:
    """Put ``body`` between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in BENCHMARKS.md."""
    start_mark, end_mark = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = BENCHMARKS_MD.read_text()
    if start_mark not in text:
        sys.exit(f"{BENCHMARKS_MD} has no {start_mark} ... {end_mark} section for the table")
    start, end = text.index(start_mark) + len(start_mark), text.index(end_mark)
    BENCHMARKS_MD.write_text(text[:start] + "\n" + body + "\n" + text[end:])


def write_table(protocol: str = "r5") -> None:
    replace_section(f"{protocol}-table", table(protocol))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("methods", nargs="*", metavar="method")
    parser.add_argument("--seed", type=int, default=1993)
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="r5")
    parser.add_argument("--table", action="store_true", help="rewrite the protocol's table in BENCHMARKS.md")
    args = parser.parse_args()
    from libcontinual.engine.trainer import RunInterrupted

    for method in args.methods:
        try:
            print(f"recorded {run(method, args.seed, args.protocol)}", flush=True)
        except RunInterrupted as stop:
            sys.exit(f"{method} stopped by {stop} after a checkpoint; the same command continues it.")
        write_table(args.protocol)
    if args.table:
        write_table(args.protocol)


if __name__ == "__main__":
    main()
