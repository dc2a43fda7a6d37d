"""PyCIL under protocol R5, run by ``side_by_side.py`` with the Python of PyCIL's own virtual environment.

PyCIL (G-U-N/PyCIL) is not a package: this runner puts a checkout on ``sys.path``, feeds its ``cifar10``
dataset from R5's image folders (the same JPEG copy of CIFAR-10 libcontinual reads; PyCIL's loader would
download the python archive, which this machine cannot), sets the epoch and milestone constants that the
method's module defines to R5's (5 epochs per task, milestones scaled as PROTOCOLS.md), and runs PyCIL's
own task loop (``incremental_train``, ``eval_task``, ``after_task``) timing each task. Everything else is
PyCIL's: its network, optimizer, learning rate, memory handling, augmentation and normalisation.

Writes one JSON record (per-task seconds and accuracies, wall time) to ``--out``.
Usage: PYCIL_PYTHON benchmarks/pycil_r5.py --pycil PATH --data-root ROOT --method icarl --seed 1993 --out F
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

# R5's epochs and multi-step milestones per method (PROTOCOLS.md: m' = floor(m * 5 / E + 0.5)); only the
# names a PyCIL method module defines are set, the rest of its constants stay as published.
R5_CONSTANTS = {
    "finetune": {"init_epoch": 5, "epochs": 5, "init_milestones": [2, 3, 4], "milestones": [3, 4]},
    "icarl": {"init_epoch": 5, "epochs": 5, "init_milestones": [2, 3, 4], "milestones": [2, 4]},
}


def read_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, 32, 32, 3) images and labels of ``root/<split>/<class>/*.jpg`` (classes in sorted order)."""
    images, labels = [], []
    for label, folder in enumerate(sorted(p for p in (root / split).iterdir() if p.is_dir())):
        for path in sorted(folder.glob("*.jpg")):
            images.append(np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8))
            labels.append(label)
    return np.stack(images), np.asarray(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pycil", type=Path, required=True, help="a PyCIL checkout (has main.py, utils/)")
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--method", choices=sorted(R5_CONSTANTS), required=True)
    parser.add_argument("--seed", type=int, default=1993)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    sys.path.insert(0, str(args.pycil.resolve()))
    import torch

    torch.set_num_threads(args.threads)
    data = importlib.import_module("utils.data")
    data_manager = importlib.import_module("utils.data_manager")
    factory = importlib.import_module("utils.factory")
    module = importlib.import_module(f"models.{args.method}")

    def from_image_folders(self) -> None:
        self.train_data, self.train_targets = read_split(args.data_root, "train")
        self.test_data, self.test_targets = read_split(args.data_root, "test")

    data.iCIFAR10.download_data = from_image_folders
    constants = {k: v for k, v in R5_CONSTANTS[args.method].items() if hasattr(module, k)}
    for name, value in constants.items():
        setattr(module, name, value)
    config = {
        "prefix": "r5",
        "dataset": "cifar10",
        "memory_size": 2000,
        "memory_per_class": 20,
        "fixed_memory": False,
        "shuffle": True,
        "init_cls": 2,
        "increment": 2,
        "model_name": args.method,
        "convnet_type": "resnet32",
        "backbone_type": "resnet32",
        "device": [torch.device("cpu")],
        "seed": args.seed,
    }
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    manager = data_manager.DataManager("cifar10", True, args.seed, 2, 2)
    model = factory.get_model(args.method, config)
    tasks = []
    for _ in range(manager.nb_tasks):
        task_start = time.perf_counter()
        model.incremental_train(manager)
        accuracy = model.eval_task()
        model.after_task()
        cnn, nme = accuracy if isinstance(accuracy, tuple) else (accuracy, None)
        tasks.append(
            {
                "seconds": time.perf_counter() - task_start,
                "cnn": cnn.get("top1", cnn.get("total")),
                "nme": None if nme is None else nme.get("top1", nme.get("total")),
            }
        )
        print(json.dumps(tasks[-1]), flush=True)
    record = {
        "library": "PyCIL",
        "checkout": str(args.pycil),
        "method": args.method,
        "seed": args.seed,
        "r5_constants_set": constants,
        "wall_time_s": time.perf_counter() - start,
        "tasks": tasks,
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
