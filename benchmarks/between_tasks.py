"""What runs between two R5 tasks, piece by piece, on real CIFAR-10 (issue 22).

For each R5 task of an exemplar method (``replay`` or ``icarl``; 2000 exemplars, herding) the pieces the
trainer runs around the training epochs are timed: ``before_task`` (teacher copy, exemplar merge), the
buffer update (herding features of the task's 10,000 images and the greedy choice), the NME class means
(features of every exemplar and of its flip), the evaluation of every seen test set (both classifiers,
one backbone pass per batch) and the checkpoint write. Training itself is skipped: the pieces cost the
same with trained or untrained weights (same shapes, same operations), so the network keeps its
initial weights. For the evaluation, the form the library had before issue 22 (one pass over the test
sets per classifier, ``torch.no_grad``) is timed right after it for comparison.

Each task is run with the model in each of ``--formats`` (channels_last, plain: contiguous) in turn, from
the same state (the last format's state carries on to the next task).

Writes ``benchmarks/results/between_tasks-<method>.json``.
Usage (repository root): python benchmarks/between_tasks.py [--method replay|icarl] [--tasks 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from r5 import REPO, ensure_data  # noqa: E402

from libcontinual.config import load_config  # noqa: E402
from libcontinual.data.loader import DeviceLoader  # noqa: E402
from libcontinual.engine import experiment  # noqa: E402
from libcontinual.engine.checkpoint import CheckpointStore  # noqa: E402
from libcontinual.engine.evaluation import evaluate  # noqa: E402
from libcontinual.methods.base import predict  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
FORMATS = {"channels_last": torch.channels_last, "plain": torch.contiguous_format}


def timed(work: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    work(*args)
    return time.perf_counter() - start


@torch.no_grad()
def evaluate_per_classifier(method, loaders: list[DeviceLoader]) -> None:
    """The evaluation's cost before issue 22: every classifier ran its own pass over every test set."""
    method.eval()
    for classifier in method.classifiers:
        for loader in loaders:
            for batch in loader:
                predict(method.scores(batch["image"], None, classifier)).eq(batch["label"]).sum()


def between(method, buffer, task, train_loader, test_loaders, infos, folder: Path) -> dict[str, float]:
    """The between-task pieces of one task (its ``before_task`` already ran), in the trainer's order."""
    seconds = {
        "buffer_update_s": timed(buffer.update, method, train_loader),
        "class_means_s": timed(method.update_class_means, task.info, buffer, train_loader),
    }
    method.teacher = None
    seconds["evaluation_s"] = timed(evaluate, method, test_loaders, infos)
    seconds["evaluation_per_classifier_s"] = timed(evaluate_per_classifier, method, test_loaders)
    payload = {"method": method.state_dict(), "buffer": buffer.state_dict()}
    seconds["checkpoint_s"] = timed(CheckpointStore(folder).save, payload)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="replay", choices=("replay", "icarl"))
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--formats", nargs="+", choices=FORMATS, default=list(FORMATS), help="memory formats, in this order"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config_path = REPO / "configs" / "reproduce" / "r5" / f"{args.method}.yaml"
    config, _ = load_config(config_path, extra={"data_root": str(ensure_data()), "device": "cpu"})
    experiment.register_everything()
    data = experiment.load_dataset(config)
    scenario = experiment.build_scenario(config, data)
    train_transform, test_transform = experiment.build_transforms(config, data)
    torch.manual_seed(config.seed)
    method = experiment.build_method(config, scenario, data.image_shape[2])
    buffer = experiment.build_buffer(config)
    generator = torch.Generator().manual_seed(config.seed)
    test_loaders = [
        DeviceLoader(t.test_images, t.test_labels, config.eval_batch_size, test_transform)
        for t in scenario.tasks
    ]
    tasks = []
    with tempfile.TemporaryDirectory() as folder:
        for task in scenario.tasks[: args.tasks]:
            index = task.info.index
            loader = DeviceLoader(
                task.train_images,
                task.train_labels,
                config.batch_size,
                train_transform,
                shuffle=True,
                generator=generator,
            )
            before = timed(method.before_task, task.info, buffer, loader, test_loaders[: index + 1])
            record = {"task": index, "train_images": loader.num_samples, "before_task_s": before}
            infos = [t.info for t in scenario.tasks[: index + 1]]
            for name in args.formats:
                last = name == args.formats[-1]
                run_method, run_buffer = (method, buffer) if last else copy.deepcopy((method, buffer))
                run_method.to(memory_format=FORMATS[name])
                state = generator.get_state()
                record[name] = between(
                    run_method,
                    run_buffer,
                    task,
                    loader,
                    test_loaders[: index + 1],
                    infos,
                    Path(folder) / name,
                )
                generator.set_state(state)
                record[name]["total_s"] = before + sum(
                    v for k, v in record[name].items() if k != "evaluation_per_classifier_s"
                )
            print(json.dumps(record), flush=True)
            tasks.append(record)
            write(args, config_path, tasks)


def write(args: argparse.Namespace, config_path: Path, tasks: list[dict]) -> None:
    """The record so far (rewritten after every task, so a stopped run keeps its finished tasks)."""
    out = {
        "command": "python benchmarks/between_tasks.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "config": str(config_path.relative_to(REPO)),
        "threads": args.threads,
        "load_average": os.getloadavg(),
        "tasks": tasks,
        "median_total_s": {
            name: statistics.median(t[name]["total_s"] for t in tasks) for name in args.formats
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"between_tasks-{args.method}.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
