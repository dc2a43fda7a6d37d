"""Speed: does the training loop run at the speed of the model? Measured side by side in one process.

1. model limit: forward + backward + SGD step of the backbone on pre-made device tensors, measured
   before and after the loop (the higher kept);
2. our loop: the real trainer on real CIFAR-10 (2 tasks of protocol R5 with ``replay``: augmentation,
   the exemplar merge and logging included), images/s over whole epochs;
3. a per-image baseline written the way most libraries feed data: a ``torch.utils.data.Dataset``
   applying Pillow crop/flip/brightness per image, ``DataLoader`` with workers, same model and step;
4. evaluation throughput, herding over 5,000 images, and the between-task overhead (seconds, and per task
   between-task seconds / the task's training-epoch seconds).

Writes ``benchmarks/results/speed-<device>.json`` and the speed table in ``benchmarks/BENCHMARKS.md``.
Usage (repository root): python benchmarks/speed.py [--device cpu|cuda] [--batch-size 128] [--fast-path]
``--fast-path``: the library's default fast path for the device (channels_last, and bf16 autocast on a GPU);
without it everything is plain fp32 in contiguous memory format.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from r5 import ensure_data, replace_section  # noqa: E402

import libcontinual  # noqa: E402
from libcontinual.backbones import build_backbone  # noqa: E402
from libcontinual.buffers.strategies import herding_order  # noqa: E402
from libcontinual.data.augment import Normalize  # noqa: E402
from libcontinual.data.datasets.image_folder import image_folder  # noqa: E402
from libcontinual.data.scenario import to_tensor_images  # noqa: E402
from libcontinual.engine.evaluation import evaluate  # noqa: E402

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
RESULTS = REPO / "benchmarks" / "results"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_model(device: torch.device, channels_last: bool) -> torch.nn.Module:
    model = build_backbone("resnet32")
    model.head.expand(10)
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def model_limit(device: torch.device, batch: int, steps: int, channels_last: bool, bf16: bool) -> float:
    """Images/s of forward + backward + step on fixed device tensors: the ceiling for any loop."""
    model = make_model(device, channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    images = torch.randn(batch, 3, 32, 32, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * batch / (time.perf_counter() - start)


class PerImageDataset(torch.utils.data.Dataset):
    """The usual way: Pillow transforms one image at a time in DataLoader workers."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = ImageOps.expand(Image.fromarray(self.images[index]), border=4, fill=0)
        top, left = random.randint(0, 8), random.randint(0, 8)
        image = image.crop((left, top, left + 32, top + 32))
        if random.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image = ImageEnhance.Brightness(image).enhance(random.uniform(1 - 63 / 255, 1 + 63 / 255))
        array = np.asarray(image, dtype=np.float32) / 255.0
        array = (array - np.asarray(MEAN, dtype=np.float32)) / np.asarray(STD, dtype=np.float32)
        return torch.from_numpy(array.transpose(2, 0, 1).copy()), int(self.labels[index])


def per_image_baseline(
    images: np.ndarray,
    labels: np.ndarray,
    device: torch.device,
    batch: int,
    workers: int,
    channels_last: bool,
) -> float:
    model = make_model(device, channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(
        PerImageDataset(images, labels),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=workers > 0,
    )
    seen, start = 0, time.perf_counter()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    sync(device)
    return seen / (time.perf_counter() - start)


def our_loop(data_root: Path, device: torch.device, batch: int, epochs: int, fast_path: bool) -> dict:
    """Two R5 tasks with replay (2000 exemplars, herding): the trainer as researchers run it."""
    overrides = {
        "data_root": str(data_root),
        "task_num": 2,
        "init_epoch": epochs,
        "epoch": epochs,
        "batch_size": batch,
        "device": device.type,
        "save_path": str(REPO / "benchmarks" / "runs" / "speed"),
        "num_threads": torch.get_num_threads(),
    }
    if not fast_path:
        overrides.update(channels_last=False, bf16=False)
    result = libcontinual.run(REPO / "configs" / "reproduce" / "r5" / "replay.yaml", **overrides)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs_done = [r for r in records if r["event"] == "epoch"]
    images = sum(r["images_per_second"] * r["seconds"] for r in epochs_done)
    seconds = sum(r["seconds"] for r in epochs_done)
    task_seconds = result.results["task_wall_time_s"]
    epoch_seconds = [sum(r["seconds"] for r in epochs_done if r["task"] == t) for t in range(2)]
    between = [t - e for t, e in zip(task_seconds, epoch_seconds, strict=True)]
    return {
        "images_per_second": images / seconds,
        "per_epoch_images_per_second": [r["images_per_second"] for r in epochs_done],
        "between_task_seconds": between,
        "between_over_training": [b / e for b, e in zip(between, epoch_seconds, strict=True)],
        "run_dir": str(result.run_dir),
    }


def evaluation_and_herding(data, device: torch.device) -> dict:
    model = make_model(device, False).eval()
    normalize = Normalize(MEAN, STD)
    test = to_tensor_images(data.test_images[:2000])
    loader = libcontinual.data.loader.DeviceLoader(
        test, torch.from_numpy(data.test_labels[:2000]), 512, normalize, device=device
    )
    method = libcontinual.Method(model, model.num_features, 10)
    method.seen_tasks.append(libcontinual.data.scenario.TaskInfo(0, 1, tuple(range(10)), 0, 10))
    evaluate(method, [loader], method.seen_tasks)
    sync(device)
    start = time.perf_counter()
    evaluate(method, [loader], method.seen_tasks)
    sync(device)
    evaluation = 2000 / (time.perf_counter() - start)
    one_class = to_tensor_images(data.train_images[data.train_labels == 0][:5000]).to(device)
    start = time.perf_counter()
    with torch.no_grad():
        features = torch.cat([model.forward_features(normalize(chunk)) for chunk in one_class.split(512)])
        herding_order(features, 200)
    sync(device)
    return {"evaluation_images_per_second": evaluation, "herding_5000_seconds": time.perf_counter() - start}


def machine(device: torch.device) -> dict:
    return {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per task of our loop")
    parser.add_argument("--steps", type=int, default=60, help="timed steps of the model limit")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the baseline")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fast-path", action="store_true", help="channels_last + bf16 autocast (GPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    fast = args.fast_path
    data = image_folder(str(ensure_data()))
    # The limit is measured before and after the loop and the higher one kept: a machine that slows
    # down during the run (thermal, a neighbour) cannot make the loop look closer to the limit.
    bf16 = fast and device.type == "cuda"  # the library's bf16 default: CUDA only
    limit_before = model_limit(device, args.batch_size, args.steps, fast, bf16)
    loop = our_loop(ensure_data(), device, args.batch_size, args.epochs, fast)
    limit_after = model_limit(device, args.batch_size, args.steps, fast, bf16)
    limit = max(limit_before, limit_after)
    mask = data.train_labels < 2
    baseline = per_image_baseline(
        data.train_images[mask], data.train_labels[mask], device, args.batch_size, args.workers, fast
    )
    extra = evaluation_and_herding(data, device)
    record = {
        "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:]),
        "machine": machine(device),
        "batch_size": args.batch_size,
        "fast_path": fast,
        "model_limit_images_per_second": limit,
        "model_limit_before_and_after_loop": [limit_before, limit_after],
        "loop": loop,
        "baseline_images_per_second": baseline,
        **extra,
        "loop_over_limit": loop["images_per_second"] / limit,
        "loop_over_baseline": loop["images_per_second"] / baseline,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = f"speed-{device.type}-b{args.batch_size}{'-fast' if fast else ''}.json"
    (RESULTS / name).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    write_table()


def write_table() -> None:
    rows = [
        "| device | batch | fast path | model limit (img/s) | our loop (img/s) | loop / limit | per-image "
        "baseline (img/s) | loop / baseline | eval (img/s) | herding 5,000 (s) | between tasks (s) | "
        "between / training |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(RESULTS.glob("speed-*.json")):
        r = json.loads(path.read_text())
        between = " / ".join(f"{s:.1f}" for s in r["loop"]["between_task_seconds"])
        ratio = " / ".join(f"{x:.1%}" for x in r["loop"].get("between_over_training", [])) or "-"
        rows.append(
            f"| {r['machine']['device']} ({r['machine']['torch_threads']} threads) | {r['batch_size']} | "
            f"{'on' if r['fast_path'] else 'off'} | {r['model_limit_images_per_second']:.0f} | "
            f"{r['loop']['images_per_second']:.0f} | {r['loop_over_limit']:.1%} | "
            f"{r['baseline_images_per_second']:.0f} | {r['loop_over_baseline']:.2f}x | "
            f"{r['evaluation_images_per_second']:.0f} | {r['herding_5000_seconds']:.2f} | {between} | "
            f"{ratio} |"
        )
    replace_section("speed", "\n".join(rows))


if __name__ == "__main__":
    main()
