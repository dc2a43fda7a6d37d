"""Protocol G20 (GEM's MNIST experiments: 20 permuted or rotated tasks, MLP 784-100-100-10) for one method.

Runs ``configs/reproduce/g20/<method>_<scenario>.yaml`` on ``../shared/data/mnist`` and records ACC,
BWT, FWT (paper's definition, divided by T-1), the accuracy matrix and the wall time in
``benchmarks/results/g20/<method>-<scenario>-seed<seed>.json``; ``--table`` rewrites the table in
``benchmarks/results/g20/G20.md`` from every recorded result. ``METHOD`` is the config's prefix (e.g.
``gem_margin0`` for the margin-0 ablation).

Usage (from the repository root):
    python benchmarks/g20.py METHOD SCENARIO [--seed 0]      # SCENARIO: permuted | rotated
    python benchmarks/g20.py --table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist"
RESULTS = REPO / "benchmarks" / "results" / "g20"
TABLE = RESULTS / "G20.md"
SCENARIOS = ("permuted", "rotated")
TABLE_START, TABLE_END = "<!-- g20-table:start -->", "<!-- g20-table:end -->"
HEADER = """# G20 — GEM's MNIST protocols (domain-incremental, 20 tasks)

Protocol (`../shared/PROTOCOLS.md`, G20): 20 tasks of permuted or rotated MNIST, 1,000 training
samples per task, the 10,000 test images per task, MLP 784-100-100-10, SGD lr 0.1 without momentum,
batch 10, one epoch per task, raw [0, 1] pixels; GEM and A-GEM keep 256 memories per task, GEM's
margin γ = 0.5. ACC = mean accuracy over all tasks after the last; BWT = mean over j < T of
R[T][j] − R[j][j]; FWT = mean over j ≥ 2 of R[j−1][j] − b_j (b = the untrained model's accuracy;
the paper divides by T − 1, GEM's code by T). Accuracies in %. Configs: `configs/reproduce/g20/`.
Rebuild the table with `python benchmarks/g20.py --table`; rerun a row with the command beside it.

"""


def run(method: str, scenario: str, seed: int) -> Path:
    import torch

    import libcontinual

    config = REPO / "configs" / "reproduce" / "g20" / f"{method}_{scenario}.yaml"
    if not config.exists():
        sys.exit(f"no G20 config {config.relative_to(REPO)}")
    if not MNIST.is_dir():
        sys.exit(f"G20 needs the MNIST IDX files in {MNIST}")
    os.chdir(REPO)
    result = libcontinual.run(config, data_root=str(MNIST), seed=seed)
    results = result.results
    summary = results["summary"]["cnn"]
    record = {
        "protocol": "G20",
        "method": method,
        "scenario": scenario,
        "seed": seed,
        "command": f"python benchmarks/g20.py {shlex.quote(method)} {scenario} --seed {seed}",
        "config": str(config.relative_to(REPO)),
        "run_dir": os.path.relpath(result.run_dir, REPO),
        "acc": summary["acc"],
        "bwt": summary["bwt"],
        "fwt": summary["fwt"],
        "accuracy_matrix": results["accuracy_matrix"]["cnn"],
        "random_init_accuracy": results["random_init_accuracy"]["cnn"],
        "wall_time_s": results["wall_time_s"],
        "task_wall_time_s": results["task_wall_time_s"],
        "peak_rss_mb": results["peak_rss_mb"],
        "machine": {
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": results["config"]["num_threads"],
            "platform": platform.platform(),
        },
        "provenance": results["provenance"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{method}-{scenario}-seed{seed}.json"
    out.write_text(json.dumps(record, indent=2) + "\n")
    return out


def table() -> str:
    """The results table (rows: scenario, method, seed) and the machines that measured them."""
    lines = [
        "| scenario | method | ACC | BWT | FWT | wall time (s) | seed | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    records = [json.loads(path.read_text()) for path in sorted(RESULTS.glob("*.json"))]
    order = {"finetune": 0, "ewc": 1, "agem": 2, "gem_margin0": 3, "gem": 4}
    records.sort(key=lambda r: (SCENARIOS.index(r["scenario"]), order.get(r["method"], 9), r["seed"]))
    for r in records:
        lines.append(
            f"| {r['scenario']} | {r['method']} | {r['acc']:.2f} | {r['bwt']:.2f} | {r['fwt']:.2f} | "
            f"{r['wall_time_s']:.0f} | {r['seed']} | `{r['command']}` |"
        )
    machines = sorted({(m["cpus"], m["torch"], m["threads"]) for m in (r["machine"] for r in records)})
    described = [f"{cpus} CPU cores, torch {torch}, {threads} thread(s)" for cpus, torch, threads in machines]
    if described:
        lines += ["", f"Machine: {'; '.join(described)}."]
    return "\n".join(lines)


def write_table() -> None:
    """Replace the table between the markers of G20.md (created with the protocol header if missing)."""
    if not TABLE.exists():
        TABLE.write_text(HEADER + TABLE_START + "\n" + TABLE_END + "\n")
    text = TABLE.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    TABLE.write_text(text[:start] + "\n" + table() + "\n" + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method", nargs="?")
    parser.add_argument("scenario", nargs="?", choices=SCENARIOS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", action="store_true", help="rewrite benchmarks/results/g20/G20.md")
    args = parser.parse_args()
    if args.method:
        if args.scenario is None:
            parser.error("give the scenario too: permuted or rotated")
        print(f"recorded {run(args.method, args.scenario, args.seed)}")
    if args.table or args.method:
        RESULTS.mkdir(parents=True, exist_ok=True)
        write_table()


if __name__ == "__main__":
    main()
