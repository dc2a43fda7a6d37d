"""Speed of the data-free generator step: does it run at the speed of the model?

Measured side by side in one process, on the R5-DF setting (ResNet-32 teacher with 2 classes, 32x32x3
images, batch 128):
1. model limit: forward of the frozen teacher + backward to its input (what a generator step cannot avoid);
2. the generator step of ``libcontinual.generative.Dreamer.fit``: generator forward, teacher forward with the
   BatchNorm-statistics hooks, the four losses, backward through teacher and generator, Adam step;
3. replay sampling: one batch of synthetic images + the teacher's labels, as every later training step draws.

Writes ``benchmarks/results/generator_speed-<device>.json``; prints one JSON line.
Usage (repository root): python benchmarks/generator_speed.py [--device cpu|cuda] [--steps 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from libcontinual.backbones import build_backbone
from libcontinual.generative import Dreamer, GeneratorSettings
from libcontinual.methods.base import frozen_copy

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step, steps: int, device: torch.device, warmup: int = 2) -> float:
    """Steps per second of ``step()`` over ``steps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    backbone = build_backbone("resnet32")
    backbone.head.expand(2)
    teacher = frozen_copy(backbone).to(device)
    settings = GeneratorSettings(batch_size=args.batch_size)
    dreamer = Dreamer((3, 32, 32), seed=0, settings=settings).to(device)
    fixed = torch.randn(args.batch_size, 3, 32, 32, device=device)

    def teacher_step() -> None:
        images = fixed.clone().requires_grad_(True)
        teacher(images).sum().backward()

    def generator_step() -> None:
        dreamer.fit(teacher, num_classes=2, steps=1)

    def replay_step() -> None:
        dreamer.sample(teacher, args.batch_size, 2)

    limit = timed(teacher_step, args.steps, device)
    generator = timed(generator_step, args.steps, device)
    replay = timed(replay_step, args.steps, device)
    limit = max(limit, timed(teacher_step, args.steps, device))  # the higher of before and after
    record = {
        "setting": f"ResNet-32 teacher (2 classes), 32x32x3, batch {args.batch_size}, z {settings.z_dim}",
        "teacher_forward_backward_to_input_per_s": limit,
        "generator_steps_per_s": generator,
        "generator_step_vs_model_limit": generator / limit,
        "replay_batches_per_s": replay,
        "seconds_per_1000_generator_steps": 1000 / generator,
        "generator_parameters": sum(p.numel() for p in dreamer.generator.parameters()),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "load_average_1min_at_end": os.getloadavg()[0],  # other processes on the same cores slow every number
        "steps": args.steps,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": f"python benchmarks/generator_speed.py --device {args.device} --steps {args.steps} "
        f"--threads {args.threads}",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"generator_speed-{device.type}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
