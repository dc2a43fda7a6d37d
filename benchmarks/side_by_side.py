"""Whole R5 runs side by side: libcontinual and PyCIL, alternating on the same machine (issue 22).

Each round runs one R5 method (``finetune`` or ``icarl``, seed 1993 unless given) of ours in a fresh
process (``libcontinual run`` on ``configs/reproduce/r5/<method>.yaml``), then, when a PyCIL checkout and
the Python of PyCIL's own virtual environment are given, the same protocol in PyCIL
(``benchmarks/pycil_r5.py``); ``--rounds`` alternates them again. Wall time is the whole process (start-up,
data loading and every task). Without PyCIL the script runs ours and says why PyCIL was skipped.

Writes ``benchmarks/results/side_by_side/<method>-seed<seed>.json`` and the table in BENCHMARKS.md.
Usage (repository root):
    python benchmarks/side_by_side.py icarl [--seed 1993] [--rounds 1] \
        [--pycil PATH_TO_PYCIL_CHECKOUT --pycil-python /work/pycil-venv/bin/python]
    python benchmarks/side_by_side.py --table
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from r5 import REPO, ensure_data, replace_section  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "side_by_side"
METHODS = ("finetune", "icarl")


def run_ours(method: str, seed: int, data_root: Path, save_path: Path) -> dict:
    command = [
        sys.executable, "-m", "libcontinual.cli", "run",
        str(REPO / "configs" / "reproduce" / "r5" / f"{method}.yaml"),
        f"data_root={data_root}", f"seed={seed}", f"save_path={save_path}", "num_threads=2",
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    wall = time.perf_counter() - start
    run_dir = max(save_path.iterdir(), key=lambda p: p.stat().st_mtime)
    results = json.loads((run_dir / "results.json").read_text())
    curves = {name: s["accuracy_curve"] for name, s in results["summary"].items() if "_task_il" not in name}
    return {
        "process_wall_time_s": wall,
        "wall_time_s": results["wall_time_s"],
        "task_seconds": results["task_wall_time_s"],
        "accuracy_curve": curves,
        "run_dir": str(run_dir),
    }


def run_pycil(method: str, seed: int, data_root: Path, pycil: Path, python: Path) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "pycil.json"
        command = [
            str(python), str(REPO / "benchmarks" / "pycil_r5.py"), "--pycil", str(pycil),
            "--data-root", str(data_root), "--method", method, "--seed", str(seed), "--out", str(out),
        ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=pycil)
        wall = time.perf_counter() - start
        record = json.loads(out.read_text())
    curves = {"cnn": [t["cnn"] for t in record["tasks"]]}
    if all(t["nme"] is not None for t in record["tasks"]):
        curves["nme"] = [t["nme"] for t in record["tasks"]]
    return {
        "process_wall_time_s": wall,
        "wall_time_s": record["wall_time_s"],
        "task_seconds": [t["seconds"] for t in record["tasks"]],
        "accuracy_curve": curves,
        "r5_constants_set": record["r5_constants_set"],
    }


def pycil_missing(pycil: Path | None, python: Path | None) -> str | None:
    """Why PyCIL cannot run here, or None."""
    if pycil is None or python is None:
        return "no --pycil checkout and --pycil-python given"
    if not (pycil / "utils" / "data_manager.py").is_file():
        return f"{pycil} is not a PyCIL checkout (no utils/data_manager.py)"
    if not python.is_file():
        return f"{python} does not exist (PyCIL's virtual environment with torch and torchvision)"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("method", nargs="?", choices=METHODS)
    parser.add_argument("--seed", type=int, default=1993)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--pycil", type=Path)
    parser.add_argument("--pycil-python", type=Path)
    parser.add_argument("--table", action="store_true", help="only rewrite the table in BENCHMARKS.md")
    args = parser.parse_args()
    if args.table:
        write_table()
        return
    if args.method is None:
        parser.error("give a method (finetune or icarl) or --table")
    data_root = ensure_data()
    skipped = pycil_missing(args.pycil, args.pycil_python)
    if skipped:
        print(f"PyCIL skipped: {skipped}; running libcontinual only.", file=sys.stderr)
    save_path = REPO / "benchmarks" / "runs" / "side_by_side"
    save_path.mkdir(parents=True, exist_ok=True)
    rounds = []
    for _ in range(args.rounds):
        entry = {"libcontinual": run_ours(args.method, args.seed, data_root, save_path)}
        if not skipped:
            entry["pycil"] = run_pycil(args.method, args.seed, data_root, args.pycil, args.pycil_python)
        rounds.append(entry)
    record = {
        "protocol": "R5 (PROTOCOLS.md), whole runs",
        "method": args.method,
        "seed": args.seed,
        "command": "python benchmarks/side_by_side.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "pycil_skipped": skipped,
        "rounds": rounds,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.method}-seed{args.seed}.json").write_text(json.dumps(record, indent=2) + "\n")
    write_table()


def write_table() -> None:
    rows = [
        "| method | seed | rounds | libcontinual wall (min) | PyCIL wall (min) | ours / PyCIL | "
        "libcontinual last acc. | PyCIL last acc. |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(RESULTS.glob("*.json")):
        record = json.loads(path.read_text())
        ours = [r["libcontinual"] for r in record["rounds"]]
        peer = [r["pycil"] for r in record["rounds"] if "pycil" in r]
        wall = statistics.median(r["process_wall_time_s"] for r in ours) / 60

        def last(runs: list[dict]) -> str:
            return ", ".join(f"{name} {curve[-1]:.2f}" for name, curve in runs[-1]["accuracy_curve"].items())

        if peer:
            peer_wall = statistics.median(r["process_wall_time_s"] for r in peer) / 60
            peer_cells = f"{peer_wall:.1f} | {wall / peer_wall:.2f} | {last(ours)} | {last(peer)}"
        else:
            peer_cells = f"not run ({record['pycil_skipped']}) | - | {last(ours)} | -"
        rows.append(f"| {record['method']} | {record['seed']} | {len(ours)} | {wall:.1f} | {peer_cells} |")
    replace_section("side-by-side", "\n".join(rows))


if __name__ == "__main__":
    main()
