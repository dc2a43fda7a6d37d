"""Checkpoints: one file per save, checksummed, written atomically, the last K kept, safe to load.

File layout: a magic line, the SHA-256 of the payload, then the ``torch.save`` payload. A truncated or
corrupt file fails its checksum and the previous checkpoint is used instead, with a warning.

Loading never runs code: the payload is read with ``torch.load(weights_only=True)``, so it may hold only
tensors and plain values (see :data:`STORABLE`) in dicts, lists and tuples; :func:`encode` refuses
anything else and names where it sits. The SHA-256 line guards against corruption, not against a forged
file. Each checkpoint also records which run wrote it (run id and the hash of its resolved config), so a
checkpoint copied from another run, or a config.yaml edited after the run started, is refused.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from libcontinual.errors import TrainingError
from libcontinual.files import atomic_write_bytes

logger = logging.getLogger(__name__)

MAGIC = b"LIBCONTINUAL-CHECKPOINT 2\n"
LEGACY_MAGIC = b"LIBCONTINUAL-CHECKPOINT 1\n"
NAME = re.compile(r"checkpoint-(\d{6})\.pt$")
TEMPORARY = ".checkpoint-*.tmp"

STORABLE = (str, bytes, bool, int, float, complex, type(None), torch.dtype, torch.device)
"""Leaf types a checkpoint may hold besides tensors (exact types: a numpy float is not a float here),
inside dicts, OrderedDicts, Counters, lists, tuples and sets."""
PLAIN_CONTAINERS = (dict, collections.OrderedDict, collections.Counter, list, tuple, set, torch.Size)

# Config keys that may change between a run and its resume: where it is saved and how it is logged.
RESUMABLE_KEYS = ("resume", "save_path", "name", "logger", "keep_checkpoints", "checkpoint_every")


class CheckpointError(Exception):
    """A checkpoint file is unreadable, truncated or fails its checksum."""


class CheckpointMismatch(TrainingError):
    """A valid checkpoint that belongs to another run, another config or an unsafe older format."""


def check_storable(value: Any, where: str = "checkpoint") -> None:
    """Raise TypeError naming the first value that ``torch.load(weights_only=True)`` would refuse.

    Method, buffer and scheduler states must be nested dicts/lists/tuples of tensors and plain values:
    store a numpy array as a tensor, a dataclass as a dict, a generator's state as its state tensor.
    """
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if type(item) in STORABLE or isinstance(item, torch.Tensor):
            continue
        if type(item) not in PLAIN_CONTAINERS:
            raise TypeError(
                f"{path} is a {type(item).__module__}.{type(item).__qualname__}, which a checkpoint cannot "
                "hold: checkpoints are loaded with torch.load(weights_only=True) and may contain only "
                "tensors, numbers, strings, None and dicts/lists/tuples of them (a numpy array: "
                "torch.from_numpy(x); a dataclass: dataclasses.asdict(x))."
            )
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, (str, int)):
                    raise TypeError(f"{path} has a key {key!r} of type {type(key).__name__}: use str or int.")
                stack.append((child, f"{path}.{key}"))
        else:
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(item))


def encode(payload: dict[str, Any]) -> bytes:
    check_storable(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    return MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def decode(data: bytes, path: Path, trust: bool = False) -> dict[str, Any]:
    """The payload of a checkpoint file; ``trust`` also reads the older pickle format (it can run code)."""
    legacy = data.startswith(LEGACY_MAGIC)
    if legacy and not trust:
        raise CheckpointMismatch(
            f"{path} was written by an older libcontinual in a format whose loading can run arbitrary "
            "code, so it is not loaded. If you created this run yourself, resume it with "
            "'libcontinual resume --trust RUN_DIR'; otherwise start the run again."
        )
    if not (legacy or data.startswith(MAGIC)):
        raise CheckpointError(f"{path} is not a libcontinual checkpoint (bad header)")
    header_end = data.find(b"\n", len(MAGIC))
    if header_end < 0:
        raise CheckpointError(f"{path} is truncated (no checksum line)")
    expected = data[len(MAGIC) : header_end].decode(errors="replace")
    body = data[header_end + 1 :]
    if hashlib.sha256(body).hexdigest() != expected:
        raise CheckpointError(f"{path} fails its checksum (truncated or corrupt)")
    try:
        return torch.load(io.BytesIO(body), map_location="cpu", weights_only=not legacy)
    except Exception as exc:  # the unpickler's refusal of a forbidden global is a plain UnpicklingError
        raise CheckpointError(
            f"{path} holds objects a safe load refuses: {str(exc).splitlines()[0]}"
        ) from None


def config_identity(config_dict: dict[str, Any]) -> dict[str, Any]:
    """The resolved config without the keys a resume may change (:data:`RESUMABLE_KEYS`)."""
    return {key: value for key, value in config_dict.items() if key not in RESUMABLE_KEYS}


def config_hash(config_dict: dict[str, Any]) -> str:
    text = json.dumps(config_identity(config_dict), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def run_identity(run_id: str, config_dict: dict[str, Any]) -> dict[str, Any]:
    """What every checkpoint of a run records about the run: its id and its resolved config (and hash)."""
    identity = config_identity(config_dict)
    return {"run_id": run_id, "config_sha256": config_hash(config_dict), "config": identity}


def _differences(saved: Any, current: Any, path: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(saved) | set(current), key=str):
            found += _differences(saved.get(key), current.get(key), f"{path}.{key}" if path else str(key))
        return found
    return [] if saved == current else [f"{path or 'config'}: {saved!r} in the checkpoint, {current!r} now"]


class CheckpointStore:
    """The ``checkpoints/`` folder of a run directory.

    With ``identity`` (from :func:`run_identity`), every saved checkpoint records it and
    :meth:`load_latest` refuses a checkpoint whose identity differs.
    """

    def __init__(
        self, folder: Path, keep: int = 2, identity: dict[str, Any] | None = None, trust: bool = False
    ) -> None:
        self.folder = Path(folder)
        self.keep = keep
        self.identity = identity
        self.trust = trust
        self._cleaned = False

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first (anything else under a checkpoint's name is ignored)."""
        return [path for path in self._named() if path.is_file() and not path.is_symlink()]

    def _named(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if NAME.match(p.name))

    def save(self, payload: dict[str, Any]) -> Path:
        if self.folder.exists() and not self.folder.is_dir():
            raise TrainingError(
                f"{self.folder} is not a folder, so no checkpoint can be written there: move it away "
                "and resume the run."
            )
        if not self._cleaned:
            self.remove_temporaries()
        if self.identity is not None:
            payload = {**payload, "identity": self.identity}
        named = self._named()
        number = int(NAME.match(named[-1].name).group(1)) + 1 if named else 1
        path = self.folder / f"checkpoint-{number:06d}.pt"
        atomic_write_bytes(path, encode(payload))
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def remove_temporaries(self) -> None:
        """Delete half-written files a killed process left behind (the caller holds the run's lock)."""
        self._cleaned = True
        if self.folder.is_dir():
            for stale in self.folder.glob(TEMPORARY):
                if stale.is_file():
                    stale.unlink(missing_ok=True)
                    logger.info("removed %s, a half-written checkpoint of a killed process", stale.name)

    def load_latest(self) -> tuple[dict[str, Any], Path] | None:
        """The newest checkpoint that passes its checksum; older ones are tried when newer ones are bad.

        A checkpoint of another run or config is not skipped but refused (:class:`CheckpointMismatch`).
        """
        for path in reversed(self.paths()):
            try:
                payload = decode(path.read_bytes(), path, self.trust)
            except (CheckpointError, OSError, EOFError, RuntimeError) as exc:
                logger.warning("skipping checkpoint %s: %s; trying the previous one", path.name, exc)
                continue
            self.check_identity(payload, path)
            return payload, path
        return None

    def check_identity(self, payload: dict[str, Any], path: Path) -> None:
        if self.identity is None:
            return
        saved = payload.get("identity")
        if saved is None:
            if self.trust:
                return
            raise CheckpointMismatch(f"{path} does not record which run wrote it; it is not loaded.")
        if saved["config_sha256"] != self.identity["config_sha256"]:
            changes = _differences(saved["config"], self.identity["config"])
            raise CheckpointMismatch(
                f"{path} was written with another config than this run's: "
                f"{'; '.join(changes[:5]) or 'the configs differ'}"
                f"{' ...' if len(changes) > 5 else ''}. Resuming would mix two experiments. Undo the "
                "change to config.yaml, or start a new run with the new config."
            )
        if saved["run_id"] != self.identity["run_id"]:
            raise CheckpointMismatch(
                f"{path} belongs to run {saved['run_id']}, not to this run directory's run "
                f"{self.identity['run_id']} (run.json): it was copied from another run directory. Remove it, "
                "or resume the run it came from."
            )


def rng_state() -> dict[str, Any]:
    """Every global random state the run draws from, as tensors and plain values."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        keys = numpy_state["keys"].numpy().astype(np.uint32)
        np.random.set_state(
            (
                numpy_state["kind"],
                keys,
                numpy_state["position"],
                numpy_state["has_gauss"],
                numpy_state["cached_gaussian"],
            )
        )
    else:  # a trusted checkpoint of the older format
        np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
