"""Downloads that never leave a file which looks complete but is not.

Bytes stream into a hidden ``.part`` file beside the destination; it is renamed onto the
destination only after the length and MD5 match (see ``cache.atomic_write``).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from libcontinual.data.datasets.cache import atomic_write
from libcontinual.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
USER_AGENT = "libcontinual (dataset download)"


class _TransferFailed(Exception):
    """One attempt failed in a way another attempt may fix."""


def download_file(
    url: str,
    destination: str | os.PathLike,
    md5: str,
    retries: int = 3,
    timeout: float = 60.0,
    backoff: float = 1.0,
) -> Path:
    """Download ``url`` to ``destination`` and verify its MD5; return the destination.

    A failed attempt (network error, truncated body, wrong checksum) is retried up to ``retries``
    attempts in all, waiting ``backoff * attempt`` seconds between them; ``timeout`` bounds each
    socket operation. An HTTP 4xx answer is not retried. Raises DataError naming the URL, the
    expected MD5 and what was received.
    """
    if retries < 1:
        raise ConfigError(f"download retries must be at least 1, got {retries}")
    target = Path(destination)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create folder {target.parent} for {url}: {error}") from error
    expected = md5.lower()
    last_problem = ""
    for attempt in range(1, retries + 1):
        logger.info("Downloading %s to %s (attempt %d of %d).", url, target, attempt, retries)
        try:
            _fetch(url, target, expected, timeout)
        except _TransferFailed as problem:
            last_problem = str(problem)
            logger.warning("Download of %s failed (attempt %d of %d): %s", url, attempt, retries, problem)
            if attempt < retries:
                time.sleep(backoff * attempt)
            continue
        logger.info("Downloaded %s (MD5 %s).", target, expected)
        return target
    raise DataError(
        f"could not download {url} to {target} after {retries} attempts: expected MD5 {expected}, "
        f"got {last_problem}. Check the network and the URL (pass url=... to use a mirror), "
        f"or put the file at {target} yourself."
    )


def _fetch(url: str, target: Path, expected_md5: str, timeout: float) -> None:
    """One attempt: stream to a temporary file, check length and MD5, then move it onto ``target``."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, atomic_write(target) as handle:
            announced = response.headers.get("Content-Length")
            while chunk := response.read(CHUNK_BYTES):
                digest.update(chunk)
                handle.write(chunk)
                received += len(chunk)
            if announced is not None and announced.isdigit() and received != int(announced):
                raise _TransferFailed(f"a truncated transfer ({received} of {announced} bytes)")
            if digest.hexdigest() != expected_md5:
                raise _TransferFailed(f"MD5 {digest.hexdigest()} ({received} bytes)")
    except urllib.error.HTTPError as error:
        if 400 <= error.code < 500:
            raise DataError(
                f"could not download {url}: HTTP {error.code} {error.reason}. Check the URL "
                f"(pass url=... to use a mirror) or put the file at {target} yourself."
            ) from error
        raise _TransferFailed(f"HTTP {error.code} {error.reason}") from error
    except (OSError, http.client.HTTPException) as error:
        raise _TransferFailed(f"{type(error).__name__}: {error} after {received} bytes") from error
