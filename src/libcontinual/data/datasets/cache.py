"""Atomic cache files: a reader never sees a half-written file, and a damaged one is rebuilt.

A file is written under a hidden temporary name in its final folder, fsynced and renamed into
place (``os.replace`` is atomic on POSIX and Windows). A cache entry is a set of ``.npy`` files
for its large arrays, memory-mapped when loaded, plus an index ``.npz`` of small arrays written
last: the index's presence commits the entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO

import numpy as np

logger = logging.getLogger(__name__)

FILE_MODE = 0o644  # mkstemp creates 0o600; caches and downloads are readable like any data file


def user_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/libcontinual``, by default ``~/.cache/libcontinual``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(base).expanduser() / "libcontinual"


def fingerprint(parts: Iterable[str]) -> str:
    """A short stable hash of ``parts`` (in order), for naming cache entries."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a no-op where directories cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Yield a binary file that becomes ``path`` only if the ``with`` block succeeds.

    The temporary file (``.<name>.<random>.part`` beside ``path``) is deleted on any error, so
    ``path`` either keeps its old content or gets the complete new one.
    """
    target = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        os.chmod(temporary, FILE_MODE)
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_dir(target.parent)


def _creation_error(folder: Path) -> OSError | None:
    """None if a file can be created in ``folder`` (made if missing), else the error."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as error:
        return error


def writable_cache_dir(preferred: Path, explicit: bool) -> Path | None:
    """``preferred`` if a file can be created there, else the user cache folder (logged), else None.

    ``explicit`` says the user chose ``preferred``, so falling back from it is a warning, not a note.
    """
    error = _creation_error(preferred)
    if error is None:
        return preferred
    fallback = user_cache_dir()
    if fallback == preferred or _creation_error(fallback) is not None:
        logger.warning(
            "Cache folder %s is not writable (%s) and neither is %s; decoded images will not be cached.",
            preferred,
            error,
            fallback,
        )
        return None
    log = logger.warning if explicit else logger.info
    log("Cache folder %s is not writable (%s); caching in %s instead.", preferred, error, fallback)
    return fallback


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` atomically as one uncompressed .npz (raises OSError)."""
    with atomic_write(path) as handle:
        np.savez(handle, **arrays)


def save_array(path: Path, array: np.ndarray) -> None:
    """Write one array atomically as a .npy (raises OSError)."""
    with atomic_write(path) as handle:
        np.save(handle, array)


def entry_files(stem: Path, large: Iterable[str]) -> list[Path]:
    """The files of the cache entry ``stem``: ``<stem>.npz`` (the index), then ``<stem>.<name>.npy``."""
    arrays = [stem.with_name(f"{stem.name}.{name}.npy") for name in large]
    return [stem.with_name(f"{stem.name}.npz"), *arrays]


def save_entry(stem: Path, large: Mapping[str, np.ndarray], small: Mapping[str, np.ndarray]) -> bool:
    """Cache ``large`` arrays as memory-mappable .npy files and ``small`` ones in an index .npz.

    The index is written last, so its presence commits the entry. Returns False (logged) when the
    entry could not be written; the caller goes on without a cache.
    """
    index, *arrays = entry_files(stem, large)
    try:
        for path, array in zip(arrays, large.values(), strict=True):
            save_array(path, array)
        save_arrays(index, small)
    except OSError as error:
        logger.warning("Could not write cache %s (%s); continuing without it.", index, error)
        return False
    return True


def discard_entry(stem: Path, large: Iterable[str], reason: str) -> None:
    """Warn that the cache entry ``stem`` is unusable and delete its files so it is rebuilt."""
    index, *arrays = entry_files(stem, large)
    logger.warning("Ignoring corrupt cache %s (%s); rebuilding it.", index, reason)
    for path in (index, *arrays):
        with contextlib.suppress(OSError):
            path.unlink()


def prune_entries(folder: Path, prefix: str, keep: Path, large: Iterable[str]) -> list[Path]:
    """Delete every committed entry in ``folder`` whose name starts with ``prefix``, except ``keep``.

    Used for entries made stale by a newer one of the same source (its files changed). Returns the
    index files removed; a file that cannot be removed is left for the next prune.
    """
    large = list(large)
    removed = []
    for index in sorted(folder.glob(f"{prefix}*.npz")):
        stem = index.with_suffix("")
        if stem == keep:
            continue
        for path in entry_files(stem, large):
            with contextlib.suppress(OSError):
                path.unlink()
        removed.append(index)
    return removed


def load_entry(stem: Path, large: Iterable[str], small: Iterable[str]) -> dict[str, np.ndarray] | None:
    """The arrays of the cache entry ``stem``, or None when it is absent or damaged (then discarded).

    Large arrays are memory-mapped copy-on-write: loading costs no reading, pages arrive when first
    touched, and writes stay private to the process.
    """
    large = list(large)
    index, *paths = entry_files(stem, large)
    if not index.is_file():
        return None
    try:
        with np.load(index, allow_pickle=False) as archive:
            missing = sorted(set(small) - set(archive.files))
            if missing:
                raise ValueError(f"missing arrays {missing}")
            arrays = {key: archive[key] for key in archive.files}
        for name, path in zip(large, paths, strict=True):
            arrays[name] = np.asarray(np.load(path, mmap_mode="c", allow_pickle=False))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        discard_entry(stem, large, f"{type(error).__name__}: {error}")
        return None
    return arrays
