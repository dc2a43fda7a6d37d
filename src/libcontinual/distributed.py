"""Several processes, one experiment: torch.distributed as launched by ``torchrun``.

Without torchrun's environment (``WORLD_SIZE`` unset) nothing here changes a run: :data:`SINGLE` is
one process of rank 0, and every collective below is the identity. Under torchrun each process is
one rank; :func:`setup` joins the process group and returns its :class:`Ranks`.

The layout every rank agrees on without talking: a global batch of ``b`` samples is split into
``world_size`` contiguous shards by :func:`shard_sizes` (sizes differ by at most one, rank order), so
concatenating the shards in rank order gives the batch back (:func:`gather_rows`).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from libcontinual.errors import ConfigError, TrainingError

RENDEZVOUS_KEYS = ("MASTER_ADDR", "MASTER_PORT")
BACKENDS = ("gloo", "nccl", "mpi")


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: its rank, the number of processes and its rank on this machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the run directory, logs, metrics, checkpoints and results."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


SINGLE = Ranks()


def environment_ranks(environ: Mapping[str, str] = os.environ) -> Ranks:
    """The ranks torchrun's environment describes (``SINGLE`` without one), or a ConfigError naming
    what is missing or wrong."""
    if "WORLD_SIZE" not in environ:
        return SINGLE
    try:
        world_size = int(environ["WORLD_SIZE"])
        rank = int(environ.get("RANK", "0"))
        local_rank = int(environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        values = {key: environ.get(key) for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
        raise ConfigError(
            f"torch.distributed environment: WORLD_SIZE, RANK and LOCAL_RANK must be integers, got {values}."
        ) from None
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ConfigError(
            f"torch.distributed environment: RANK={rank} is not in [0, WORLD_SIZE={world_size}) "
            f"(LOCAL_RANK={local_rank})."
        )
    missing = [key for key in RENDEZVOUS_KEYS if not environ.get(key)]
    if world_size > 1 and missing:
        raise ConfigError(
            f"torch.distributed environment: WORLD_SIZE={world_size} is set but {' and '.join(missing)} "
            "is not, so the processes cannot meet. Launch with torchrun (it sets them): "
            "torchrun --nproc_per_node N -m libcontinual run CONFIG"
        )
    return Ranks(rank, world_size, local_rank)


def launched_as_main(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process is rank 0 (or alone) by torchrun's environment, before any group exists:
    the command line prints results and draws progress bars there only."""
    return environ.get("RANK", "0") == "0"


def check_devices(ranks: Ranks, device: torch.device, cuda_devices: int) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` on CUDA (one GPU per process), else ``device``."""
    if not ranks.active or device.type != "cuda":
        return device
    if ranks.local_rank >= cuda_devices:
        raise ConfigError(
            f"torchrun started more processes on this machine than it has CUDA devices: LOCAL_RANK="
            f"{ranks.local_rank} needs cuda:{ranks.local_rank} but there are {cuda_devices}. Use "
            f"--nproc_per_node {cuda_devices} or fewer."
        )
    return torch.device("cuda", ranks.local_rank)


def backend_for(device: torch.device, configured: str | None) -> str:
    """``distributed.backend`` from the config; null = nccl on CUDA, gloo elsewhere."""
    if configured is None:
        return "nccl" if device.type == "cuda" else "gloo"
    if configured not in BACKENDS:
        raise ConfigError(
            f"Config key 'distributed.backend' is {configured!r}; choose one of "
            f"{', '.join(BACKENDS)} or null."
        )
    if configured == "nccl" and device.type != "cuda":
        raise ConfigError(
            f"Config key 'distributed.backend' is 'nccl' but the device is {device}; nccl needs CUDA. "
            "Use gloo (or null)."
        )
    return configured


@contextmanager
def process_group(
    ranks: Ranks, device: torch.device, backend: str | None, timeout_minutes: float
) -> Iterator[None]:
    """Join torchrun's process group for the run and leave it afterwards; a group that already exists
    (a script that called init_process_group itself) is used and left alone."""
    if not ranks.active or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend_for(device, backend),
        rank=ranks.rank,
        world_size=ranks.world_size,
        timeout=datetime.timedelta(minutes=timeout_minutes),
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def current() -> Ranks:
    """The ranks of the process group in use, or ``SINGLE``."""
    if not dist.is_available() or not dist.is_initialized():
        return SINGLE
    rank = dist.get_rank()
    return Ranks(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", str(rank))))


# --------------------------------------------------------------------------- the batch layout
def shard_sizes(global_size: int, world_size: int) -> list[int]:
    """Contiguous shard sizes of a global batch, rank order; the first ``global_size % world_size``
    ranks hold one sample more."""
    base, extra = divmod(global_size, world_size)
    return [base + (1 if rank < extra else 0) for rank in range(world_size)]


def shard_bounds(global_size: int, ranks: Ranks) -> tuple[int, int]:
    """[start, stop) of this rank's shard within a global batch."""
    sizes = shard_sizes(global_size, ranks.world_size)
    start = sum(sizes[: ranks.rank])
    return start, start + sizes[ranks.rank]


def gather_rows(local: torch.Tensor, global_size: int) -> torch.Tensor:
    """The global batch from each rank's shard of it (rows in the order one process would have them);
    ``local`` itself when running alone. A rank with an empty shard passes zero rows."""
    ranks = current()
    if not ranks.active:
        return local
    sizes = shard_sizes(global_size, ranks.world_size)
    padded = torch.zeros((max(sizes), *local.shape[1:]), dtype=local.dtype, device=local.device)
    padded[: local.shape[0]] = local
    pieces = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(pieces, padded)
    return torch.cat([piece[:size] for piece, size in zip(pieces, sizes, strict=True)])


def whole_batch(batch: Mapping[str, Any], key: str) -> torch.Tensor:
    """``batch[key]`` of the global batch: under torch.distributed, gathered from every rank's shard
    (for a method that records what it trains on, such as GEM's episodic memory)."""
    if "global_size" not in batch:
        return batch[key]
    return gather_rows(batch[key][: batch["shard_size"]], batch["global_size"])


# --------------------------------------------------------------------------- collectives
def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place (identity alone)."""
    if current().active:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    if current().active:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_gather_pairs(index: torch.Tensor, value: torch.Tensor) -> list[tuple[int, float]]:
    """Every rank's (index, value) pair of scalars, rank order."""
    local = torch.stack([index.double(), value.double()])
    pieces = [torch.empty_like(local) for _ in range(current().world_size)]
    dist.all_gather(pieces, local)
    return [(int(piece[0]), float(piece[1])) for piece in pieces]


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (pickled between this run's own processes, never read from a
    file)."""
    if not current().active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if current().active:
        dist.barrier()


PEER_FAILURE_TEXT = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Gloo", "NCCL")


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed (another rank died), not an error of this rank."""
    return isinstance(exc, dist.DistError) or any(text in str(exc) for text in PEER_FAILURE_TEXT)


def lost_peer(exc: BaseException) -> TrainingError:
    """A collective failed because another process of the run stopped (killed, crashed, out of memory)."""
    return TrainingError(
        f"Another process of this distributed run stopped, so this one cannot go on ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else 'no message'}). The last checkpoint is intact; continue "
        "with the same torchrun command and 'libcontinual resume RUN_DIR'."
    )
