"""How long the image_folder loader takes on the complete CIFAR-10 JPEG copy (60,000 images).

Extracts ``../shared/data/cifar10-jpg.tar.gz`` into a temporary folder (or uses ``--root``), then
times: the first load (decode every JPEG with Pillow on the loader's thread pool and write the
cache), cached reloads, and for reference a plain single-thread Pillow loop over the same files.
Prints the numbers and writes them to ``benchmarks/results/dataset_load.md``.

Usage (from the repository root):
    python benchmarks/dataset_load.py [--root /tmp/data/cifar10-jpg] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image

from libcontinual.data.datasets.image_folder import image_folder
from libcontinual.data.datasets.imaging import worker_count

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
RESULTS = REPO / "benchmarks" / "results" / "dataset_load.md"


def timed(action):
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def plain_pillow_loop(root: Path) -> int:
    """The reference: decode every file one after another, as a per-sample Dataset would."""
    count = 0
    for path in sorted(root.glob("*/*/*.jpg")):
        np.asarray(Image.open(path).convert("RGB"))
        count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, help="an extracted cifar10-jpg folder (skips extraction)")
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--repeats", type=int, default=5, help="cached reloads to time")
    parser.add_argument("--skip-baseline", action="store_true", help="skip the single-thread Pillow loop")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="libcontinual-bench-") as scratch:
        extract_s = None
        root = args.root
        if root is None:
            if not args.archive.is_file():
                sys.exit(f"{args.archive} not found (see ../shared/data/README.md), or pass --root")
            with tarfile.open(args.archive) as tar:
                extract_s, _ = timed(lambda: tar.extractall(scratch, filter="data"))
            root = Path(scratch) / "cifar10-jpg"
        cache_dir = str(Path(scratch) / "cache")
        load_avg = os.getloadavg()
        first_s, data = timed(lambda: image_folder(str(root), cache_dir=cache_dir))
        cached = [timed(lambda: image_folder(str(root), cache_dir=cache_dir))[0] for _ in range(args.repeats)]
        touch_s, _ = timed(lambda: int(image_folder(str(root), cache_dir=cache_dir).train_images.sum()))
        baseline_s = None if args.skip_baseline else timed(lambda: plain_pillow_loop(root))[0]
        cache_mb = sum(path.stat().st_size for path in Path(cache_dir).iterdir()) / 2**20

    count = len(data.train_labels) + len(data.test_labels)
    rows = [
        ("extract the .tar.gz", extract_s),
        (f"first load: decode {count:,} JPEGs on {worker_count()} threads + write cache", first_s),
        (f"cached reload (median of {args.repeats})", statistics.median(cached)),
        (f"cached reload (best of {args.repeats})", min(cached)),
        ("cached reload + read every pixel (sum of train images)", touch_s),
        ("reference: plain single-thread Pillow loop over the same files", baseline_s),
    ]
    table = "\n".join(f"| {what} | {'-' if s is None else f'{s:.2f}'} |" for what, s in rows)
    report = f"""# Dataset loading: CIFAR-10 as JPEG image folders

Recorded {datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")} with
`python {" ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`.

Data: `{args.archive.name if args.root is None else args.root}` — {len(data.train_labels):,} train and
{len(data.test_labels):,} test images, {data.image_shape} uint8, {data.num_classes} classes.
Cache on disk: {cache_mb:.0f} MiB (`.npy`, memory-mapped on reload).

| step | seconds |
|---|---|
{table}

Machine: {cpu_model()}, {os.cpu_count()} logical CPUs ({worker_count()} usable), {platform.system()}
{platform.release()}; Python {platform.python_version()}, torch {torch.__version__}, numpy
{np.__version__}, Pillow {PIL.__version__}. Load average when the timing started:
{", ".join(f"{value:.2f}" for value in load_avg)} (the machine is shared, so expect some noise).

A cached reload lists the folders and stats every file (the cache key covers each file's name,
size and modification time), then memory-maps the arrays: pixels are read from disk when first
touched, which the "read every pixel" row includes.
"""
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
