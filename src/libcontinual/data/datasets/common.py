"""Argument checks shared by the loaders, so every dataset rejects bad kwargs with the same words."""

from __future__ import annotations

from pathlib import Path

from libcontinual.errors import ConfigError

CHANNEL_MODES = {1: "L", 3: "RGB"}


def require_data_root(data_root: str | None, dataset: str) -> Path:
    """``data_root`` as a Path; None is a ConfigError telling the user which key to set."""
    if data_root is None or str(data_root).strip() == "":
        raise ConfigError(
            f"dataset {dataset!r} needs a data_root: set the top-level data_root key in the config "
            f"(or data_root= in Python) to the folder that holds its files."
        )
    return Path(data_root).expanduser()


def check_image_size(image_size: int | None, dataset: str) -> None:
    """Reject an image_size that is not None or a positive int."""
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ConfigError(
            f"dataset {dataset!r}: image_size must be a positive integer or null, got {image_size!r}"
        )


def channel_mode(channels: int, dataset: str) -> str:
    """The Pillow mode for ``channels`` (1 -> "L", 3 -> "RGB"); anything else is a ConfigError."""
    if isinstance(channels, bool) or channels not in CHANNEL_MODES:
        raise ConfigError(f"dataset {dataset!r}: channels must be 1 or 3, got {channels!r}")
    return CHANNEL_MODES[channels]
