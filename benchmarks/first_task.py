"""How much of a first-task difference is seed variance? R5's first task (finetune, 5 epochs, classes of
the protocol's first task) over 5 seeds with each head initialisation (``backbone.kwargs.head_init``).

Each (head_init, seed) run records ``benchmarks/results/first_task/<head_init>-seed<seed>.json``; a recorded
run is skipped, so the command can be given again after a stop. ``--table`` writes mean ± std per head_init
into benchmarks/BENCHMARKS.md (it is also rewritten after every run).

Usage (from the repository root):
    python benchmarks/first_task.py [--seeds 1993 1994 1995 1996 1997] [--head-init kaiming_uniform ...]
    python benchmarks/first_task.py --table
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from r5 import REPO, ensure_data, replace_section  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "first_task"
CONFIG = REPO / "configs" / "reproduce" / "r5" / "finetune.yaml"
HEAD_INITS = ("kaiming_uniform", "torch_default")
SEEDS = (1993, 1994, 1995, 1996, 1997)


def run(head_init: str, seed: int) -> Path:
    import libcontinual

    out = RESULTS / f"{head_init}-seed{seed}.json"
    if out.exists():
        return out
    data_root = ensure_data()
    os.chdir(REPO)
    result = libcontinual.run(
        CONFIG,
        [f"backbone.kwargs.head_init={head_init}", "task_num=1"],
        data_root=str(data_root),
        seed=seed,
        name=f"first-task-{head_init}-seed{seed}",
        save_path="benchmarks/runs",
    )
    record = {
        "protocol": "R5, first task only (task_num=1)",
        "method": "finetune",
        "head_init": head_init,
        "seed": seed,
        "command": f"python benchmarks/first_task.py --seeds {seed} --head-init {head_init}",
        "accuracy": result.results["accuracy_matrix"]["cnn"][0][0],
        "wall_time_s": result.results["wall_time_s"],
        "provenance": result.results["provenance"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    return out


def table() -> str:
    rows = ["| head_init | first-task accuracy (%) per seed | mean ± std |", "|---|---|---|"]
    for head_init in HEAD_INITS:
        records = [json.loads(p.read_text()) for p in sorted(RESULTS.glob(f"{head_init}-seed*.json"))]
        if not records:
            continue
        values = [r["accuracy"] for r in records]
        per_seed = ", ".join(f"{r['seed']}: {r['accuracy']:.2f}" for r in records)
        spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        rows.append(f"| {head_init} | {per_seed} | {statistics.mean(values):.2f}{spread} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--head-init", nargs="+", choices=HEAD_INITS, default=list(HEAD_INITS))
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    for seed in [] if args.table else args.seeds:
        for head_init in args.head_init:
            print(f"recorded {run(head_init, seed)}", flush=True)
    replace_section("first-task-table", table())


if __name__ == "__main__":
    main()
