"""One process or two (torchrun, gloo): R5's first task (finetune, ResNet-32, real CIFAR-10, 2 classes,
10,000 images) for ``--epochs`` epochs, the same global batch of 128, alternating the two settings
``--repeats`` times. One process uses ``--threads`` threads; each of the two uses ``threads / 2``.

Records images/s of the training epochs (from each run's metrics.jsonl), the whole command's wall time
(process start-up and torchrun's rendezvous included) and the first-task accuracy into
``benchmarks/results/distributed-<device>.json`` and the "torch.distributed" table of BENCHMARKS.md.

Usage (repository root): python benchmarks/distributed_speed.py [--epochs 1] [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from r5 import REPO, ensure_data, replace_section  # noqa: E402

CONFIG = REPO / "configs" / "reproduce" / "r5" / "finetune.yaml"
RESULTS = REPO / "benchmarks" / "results"


def one_run(processes: int, epochs: int, threads: int, data_root: Path, save_path: Path) -> dict:
    per_process = max(1, threads // processes)
    overrides = [
        "task_num=1",
        f"init_epoch={epochs}",
        f"data_root={data_root}",
        f"save_path={save_path}",
        f"num_threads={per_process}",
        "checkpoint_every=0",
    ]
    command = [sys.executable, "-m", "libcontinual", "run", str(CONFIG), *overrides]
    if processes > 1:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
            "-m",
            "libcontinual",
            "run",
            str(CONFIG),
            *overrides,
        ]
    env = {**os.environ, "OMP_NUM_THREADS": str(per_process)}
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (run_dir,) = [p for p in save_path.iterdir() if p.is_dir()]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs_seen = [r for r in records if r["event"] == "epoch"]
    results = json.loads((run_dir / "results.json").read_text())
    return {
        "processes": processes,
        "threads_per_process": per_process,
        "images_per_second": statistics.mean(r["images_per_second"] for r in epochs_seen),
        "command_wall_s": wall,
        "accuracy": results["accuracy_matrix"]["cnn"][0][0],
    }


def table(record: dict) -> str:
    rows = [
        "| processes × threads | training images/s (median) | whole command, s (median) "
        "| first-task accuracy |",
        "|---|---|---|---|",
    ]
    for processes in (1, 2):
        runs = [r for r in record["runs"] if r["processes"] == processes]
        rows.append(
            f"| {processes} × {runs[0]['threads_per_process']} "
            f"| {statistics.median(r['images_per_second'] for r in runs):.0f} "
            f"| {statistics.median(r['command_wall_s'] for r in runs):.0f} "
            f"| {', '.join(format(r['accuracy'], '.2f') for r in runs)} |"
        )
    return "\n".join(rows) + f"\n\n{record['conditions']} Command: `{record['command']}`."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--conditions", default="", help="how loaded the machine was, for the table")
    args = parser.parse_args()
    data_root = ensure_data()
    runs = []
    for repeat in range(args.repeats):
        for processes in (1, 2):
            with tempfile.TemporaryDirectory() as folder:
                runs.append(one_run(processes, args.epochs, args.threads, data_root, Path(folder)))
            print(repeat, runs[-1], flush=True)
    record = {
        "protocol": f"R5 first task, finetune, {args.epochs} epoch(s), global batch 128",
        "command": f"python benchmarks/distributed_speed.py --epochs {args.epochs} --repeats {args.repeats} "
        f"--threads {args.threads}",
        "conditions": args.conditions,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "distributed-cpu.json").write_text(json.dumps(record, indent=2) + "\n")
    replace_section("distributed", table(record))


if __name__ == "__main__":
    main()
