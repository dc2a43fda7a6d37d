"""Launched by tests/test_distributed.py as ``torchrun --nproc_per_node 2 tests/distributed_worker.py OUT
CONFIG.json ...``: runs each config once in the same process group and reports, per rank, into OUT
(the test harness writes there; the library writes only under each config's save_path):

- ``rank-<r>.json``: for each config, a digest of the method's and the buffer's state after the run
  (exemplars, class means, teachers: identical on every rank or the digests differ), and every file
  write, folder creation, rename or deletion this rank made under the save_path (seen by an audit hook).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

import libcontinual
from libcontinual.engine.trainer import Trainer

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PATH_EVENTS = ("os.mkdir", "os.rename", "os.remove", "os.rmdir", "os.truncate", "shutil.rmtree")


def digest(state: Any, hasher: Any) -> None:
    """Every tensor and value of a (nested) state dict, in key order, into ``hasher``."""
    if isinstance(state, torch.Tensor):
        hasher.update(state.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    elif isinstance(state, dict):
        for key in sorted(state, key=str):
            hasher.update(str(key).encode())
            digest(state[key], hasher)
    elif isinstance(state, (list, tuple)):
        for item in state:
            digest(item, hasher)
    else:
        hasher.update(repr(state).encode())


def main() -> None:
    out, config_files = Path(sys.argv[1]), sys.argv[2:]
    configs = [json.loads(Path(name).read_text()) for name in config_files]
    roots = [str(Path(config["save_path"]).resolve()) for config in configs]
    writes: list[str] = []

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & WRITE_FLAGS
            )
        else:
            path, writing = args[0] if args else "", event in PATH_EVENTS
        if writing and isinstance(path, (str, os.PathLike)):
            resolved = os.path.abspath(os.fspath(path))
            if any(resolved.startswith(root) for root in roots):
                writes.append(f"{event} {resolved}")

    states: dict[str, str] = {}
    finished = Trainer.results

    def results_with_digest(self: Trainer, wall_seconds: float) -> dict[str, Any]:
        hasher = hashlib.sha256()
        digest(self.method.state_dict(), hasher)
        digest(self.buffer.state_dict() if self.buffer is not None else None, hasher)
        states[self.config.method.name] = hasher.hexdigest()
        return finished(self, wall_seconds)

    Trainer.results = results_with_digest
    sys.addaudithook(audit)
    dist.init_process_group("gloo")
    for config in configs:
        libcontinual.run(config)
    rank = dist.get_rank()
    (out / f"rank-{rank}.json").write_text(json.dumps({"states": states, "writes": writes}))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
