"""CPU fast path: which ResNet-32 training step is fastest on this CPU? Measured in one process, interleaved.

Variants of the step (forward + backward + SGD with momentum, ``resnet32`` with a 10-class head, batch 128,
32x32 on fixed tensors): memory format (contiguous NCHW / channels_last) x ``torch.compile`` (off / inductor)
x ``torch.set_num_threads``. Every round times every variant once, in the same order, so a neighbour that
loads the machine slows all variants alike; the table reports the median over rounds. Inductor bakes the
thread count into the kernels it generates, so compiled variants are compiled and timed at the largest
thread count only; their compile time (the warm-up steps) is recorded. The eval-mode forward (batch 512,
inference mode) is timed the same way for both memory formats: evaluation and feature extraction run it.

Writes ``benchmarks/results/cpu_fast_path.json`` (``cpu_fast_path-compile.json`` with ``--compile``) and
the table of both in ``benchmarks/BENCHMARKS.md``.
``--demo-seeds S ...`` instead checks accuracy: the demo config (``libcontinual run demo``) per seed with
channels_last off and on, alternating, into ``cpu_fast_path-demo.json`` and its own table.

Usage (repository root): python benchmarks/cpu_fast_path.py [--rounds 5] [--steps 8] [--threads 1 2]
    [--compile]
    python benchmarks/cpu_fast_path.py --demo-seeds 1993 1994 1995 [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from libcontinual.backbones import build_backbone

sys.path.insert(0, str(Path(__file__).resolve().parent))
from r5 import REPO, replace_section  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


@dataclass
class Variant:
    """One way to run the step: its model, optimizer and input, and the images/s of each round."""

    name: str
    channels_last: bool
    compiled: bool
    threads: int
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    images: torch.Tensor
    labels: torch.Tensor
    warmup_seconds: float = 0.0
    error: str | None = None
    samples: list[float] = field(default_factory=list)

    def step(self) -> None:
        loss = F.cross_entropy(self.model(self.images), self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def resnet32(channels_last: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_backbone("resnet32")
    model.head.expand(10)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def make_variant(channels_last: bool, compiled: bool, threads: int, batch: int, warmup: int) -> Variant:
    model = resnet32(channels_last)
    if compiled:
        model.compile()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 32, 32, generator=generator)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), generator=generator)
    name = " + ".join(
        [part for part, on in (("channels_last", channels_last), ("compile", compiled)) if on] or ["fp32"]
    )
    variant = Variant(name, channels_last, compiled, threads, model, optimizer, images, labels)
    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        for _ in range(warmup):
            variant.step()
    except Exception as exc:  # a compiler failure is a result to record, not a crash of the benchmark
        variant.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    variant.warmup_seconds = time.perf_counter() - start
    return variant


def time_steps(variant: Variant, steps: int) -> float:
    torch.set_num_threads(variant.threads)
    start = time.perf_counter()
    for _ in range(steps):
        variant.step()
    return steps * variant.images.shape[0] / (time.perf_counter() - start)


def inference_speed(channels_last: bool, threads: int, batch: int, rounds: int, steps: int) -> list[float]:
    """Eval-mode ``forward_features`` images/s (what evaluation, herding and class means run)."""
    model = resnet32(channels_last).eval()
    images = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.set_num_threads(threads)
    samples = []
    with torch.inference_mode():
        model.forward_features(images)
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(steps):
                model.forward_features(images)
            samples.append(steps * batch / (time.perf_counter() - start))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant and round")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (minutes to compile)")
    parser.add_argument("--compile-warmup", type=int, default=5, help="steps before timing compiled")
    parser.add_argument("--demo-seeds", type=int, nargs="+", help="accuracy check on the demo instead")
    args = parser.parse_args()
    if args.demo_seeds:
        demo_accuracy(args.demo_seeds, max(args.threads))
        return
    top = max(args.threads)
    variants = [
        make_variant(channels_last, False, threads, args.batch_size, warmup=2)
        for threads in args.threads
        for channels_last in (False, True)
    ]
    if args.compile:
        variants += [
            make_variant(channels_last, True, top, args.batch_size, warmup=args.compile_warmup)
            for channels_last in (False, True)
        ]
    working = [v for v in variants if v.error is None]
    inference: dict[str, list[float]] = {"fp32": [], "channels_last": []}
    for _ in range(args.rounds):
        for variant in working:
            variant.samples.append(time_steps(variant, args.steps))
        for channels_last, name in ((False, "fp32"), (True, "channels_last")):
            inference[name] += inference_speed(channels_last, top, 512, 1, 2)
    baseline = next(v for v in variants if v.name == "fp32" and v.threads == top)
    record = {
        "command": "python benchmarks/cpu_fast_path.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpu": platform.processor() or "cpu",
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
        },
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "train_step": [
            {
                "variant": v.name,
                "threads": v.threads,
                "channels_last": v.channels_last,
                "compile": v.compiled,
                "warmup_seconds": v.warmup_seconds,
                "error": v.error,
                "images_per_second": v.samples,
                "median_images_per_second": statistics.median(v.samples) if v.samples else None,
                "vs_fp32": (
                    statistics.median(v.samples) / statistics.median(baseline.samples) if v.samples else None
                ),
            }
            for v in variants
        ],
        "inference_batch_512_threads": top,
        "inference_images_per_second": inference,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "cpu_fast_path-compile.json" if args.compile else "cpu_fast_path.json"
    (RESULTS / name).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    write_table()


def demo_accuracy(seeds: list[int], threads: int) -> None:
    """The demo's accuracy matrix per seed with channels_last off and on (everything else the default but
    ``num_threads``)."""
    import libcontinual

    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in seeds:
            for channels_last in (False, True):
                start = time.perf_counter()
                result = libcontinual.run(
                    "demo", seed=seed, channels_last=channels_last, num_threads=threads, save_path=folder
                )
                summary = result.summary["cnn"]
                runs.append(
                    {
                        "seed": seed,
                        "channels_last": channels_last,
                        "num_threads": threads,
                        "accuracy_matrix": result.accuracy_matrix["cnn"],
                        "last_accuracy": summary["last_accuracy"],
                        "average_incremental_accuracy": summary["average_incremental_accuracy"],
                        "wall_time_s": time.perf_counter() - start,
                    }
                )
                print(json.dumps(runs[-1]), flush=True)
    record = {
        "command": "python benchmarks/cpu_fast_path.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average_at_end": os.getloadavg(),
        "runs": runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cpu_fast_path-demo.json").write_text(json.dumps(record, indent=2) + "\n")
    write_table()


def demo_rows(record: dict) -> list[str]:
    rows = [
        f"`{record['command']}` ({record['date']}): the demo (finetune, 5 tasks, CNN accuracy):",
        "",
        "| channels_last | last accuracy per seed | mean | avg. incremental per seed | mean | "
        "wall (s) per seed |",
        "|---|---|---|---|---|---|",
    ]
    for channels_last in (False, True):
        runs = [r for r in record["runs"] if r["channels_last"] == channels_last]
        last = [r["last_accuracy"] for r in runs]
        walls = " / ".join(f"{r['wall_time_s']:.0f}" for r in runs)
        average = [r["average_incremental_accuracy"] for r in runs]
        rows.append(
            f"| {'on' if channels_last else 'off'} | {' / '.join(f'{v:.2f}' for v in last)} | "
            f"{statistics.mean(last):.2f} | {' / '.join(f'{v:.2f}' for v in average)} | "
            f"{statistics.mean(average):.2f} | {walls} |"
        )
    return [*rows, ""]


def write_table() -> None:
    """One table per results file (each file's rounds were interleaved with each other, not across files)."""
    rows = []
    for path in sorted(RESULTS.glob("cpu_fast_path*.json")):
        record = json.loads(path.read_text())
        if "runs" in record:
            rows += demo_rows(record)
            continue
        rows += [
            f"`{record['command']}` ({record['date']}, {record['rounds']} rounds of "
            f"{record['steps_per_round']} steps, batch {record['batch_size']}):",
            "",
            "| step variant | threads | median img/s | vs fp32 at the most threads | per round (img/s) | "
            "warm-up (s) |",
            "|---|---|---|---|---|---|",
        ]
        for r in record["train_step"]:
            if r["error"]:
                failed = f"failed: {r['error']}"
                rows.append(f"| {r['variant']} | {r['threads']} | {failed} | | | {r['warmup_seconds']:.0f} |")
                continue
            rounds = " / ".join(f"{s:.0f}" for s in r["images_per_second"])
            rows.append(
                f"| {r['variant']} | {r['threads']} | {r['median_images_per_second']:.0f} | "
                f"{r['vs_fp32']:.2f}x | {rounds} | {r['warmup_seconds']:.1f} |"
            )
        fp32 = statistics.median(record["inference_images_per_second"]["fp32"])
        cl = statistics.median(record["inference_images_per_second"]["channels_last"])
        rows += [
            "",
            "Eval-mode forward (batch 512, inference mode, "
            f"{record['inference_batch_512_threads']} threads), median img/s: "
            f"fp32 {fp32:.0f}, channels_last {cl:.0f} ({cl / fp32:.2f}x).",
            "",
        ]
    replace_section("cpu-fast-path", "\n".join(rows))


if __name__ == "__main__":
    main()
