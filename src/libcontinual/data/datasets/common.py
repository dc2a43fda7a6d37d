"""Argument checks shared by the loaders, so every dataset rejects bad kwargs with the same words."""

from __future__ import annotations

from pathlib import Path

from libcontinual.errors import ConfigError, DataError

CHANNEL_MODES = {1: "L", 3: "RGB"}


def require_data_root(data_root: str | None, dataset: str) -> Path:
    """``data_root`` as a Path; None is a ConfigError telling the user which key to set."""
    if data_root is None or str(data_root).strip() == "":
        raise ConfigError(
            f"dataset {dataset!r} needs a data_root: set the top-level data_root key in the config "
            f"(or data_root= in Python) to the folder that holds its files."
        )
    return Path(data_root).expanduser()


ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz", ".zip")


def require_folder(root: Path, dataset: str, layout: str) -> None:
    """``data_root`` must be a folder for ``dataset``: an archive gets the command that extracts it and
    the data_root to set afterwards, another file the folder it is in."""
    if not root.is_file():
        return
    name = root.name.lower()
    suffix = next((s for s in ARCHIVE_SUFFIXES if name.endswith(s)), None)
    if suffix is None:
        raise DataError(
            f"data_root {root} is a file, but dataset {dataset!r} reads a folder that holds {layout}. "
            f"Set data_root to the folder (e.g. {root.parent})."
        )
    top = archive_top_folder(root)
    target = Path("data")
    inside = target / top if top else target
    command = f"unzip {root} -d {target}" if suffix == ".zip" else f"tar xf {root} -C {target}"
    raise DataError(
        f"data_root {root} is an archive; dataset {dataset!r} reads a folder that holds {layout}. "
        f"Extract it once (mkdir -p {target} && {command}) and set data_root: {inside}"
    )


def archive_top_folder(path: Path) -> str | None:
    """The single top-level folder of a tar or zip archive (from its first entries), or None."""
    import tarfile
    import zipfile

    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()[:50]
        else:
            with tarfile.open(path) as archive:
                names = []
                for member in archive:
                    names.append(member.name)
                    if len(names) >= 50:
                        break
    except (OSError, tarfile.TarError, zipfile.BadZipFile):
        return None
    tops = {name.strip("./").split("/")[0] for name in names if name.strip("./")}
    return tops.pop() if len(tops) == 1 else None


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
