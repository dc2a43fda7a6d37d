"""Checkpoints: one file per save, checksummed, written atomically, the last K kept.

File layout: a magic line, the SHA-256 of the payload, then the ``torch.save`` payload. A truncated or
corrupt file fails its checksum and the previous checkpoint is used instead, with a warning.
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from libcontinual.engine.files import atomic_write_bytes

logger = logging.getLogger(__name__)

MAGIC = b"LIBCONTINUAL-CHECKPOINT 1\n"
NAME = re.compile(r"checkpoint-(\d{6})\.pt$")


class CheckpointError(Exception):
    """A checkpoint file is unreadable, truncated or fails its checksum."""


def encode(payload: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    return MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def decode(data: bytes, path: Path) -> dict[str, Any]:
    if not data.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a libcontinual checkpoint (bad header)")
    header_end = data.find(b"\n", len(MAGIC))
    if header_end < 0:
        raise CheckpointError(f"{path} is truncated (no checksum line)")
    expected = data[len(MAGIC) : header_end].decode(errors="replace")
    body = data[header_end + 1 :]
    if hashlib.sha256(body).hexdigest() != expected:
        raise CheckpointError(f"{path} fails its checksum (truncated or corrupt)")
    return torch.load(io.BytesIO(body), map_location="cpu", weights_only=False)


class CheckpointStore:
    """The ``checkpoints/`` folder of a run directory."""

    def __init__(self, folder: Path, keep: int = 2) -> None:
        self.folder = Path(folder)
        self.keep = keep

    def paths(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if NAME.match(p.name))

    def save(self, payload: dict[str, Any]) -> Path:
        existing = self.paths()
        number = int(NAME.match(existing[-1].name).group(1)) + 1 if existing else 1
        path = self.folder / f"checkpoint-{number:06d}.pt"
        atomic_write_bytes(path, encode(payload))
        for old in self.paths()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def load_latest(self) -> tuple[dict[str, Any], Path] | None:
        """The newest checkpoint that passes its checksum; older ones are tried when newer ones are bad."""
        for path in reversed(self.paths()):
            try:
                return decode(path.read_bytes(), path), path
            except (CheckpointError, OSError, EOFError, RuntimeError) as exc:
                logger.warning("skipping checkpoint %s: %s; trying the previous one", path.name, exc)
        return None


def rng_state() -> dict[str, Any]:
    """Every global random state the run draws from."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
