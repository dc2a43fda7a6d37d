"""The run directory: resolved config, log, per-epoch metrics, results — everything beside its provenance."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from libcontinual.errors import ConfigError, TrainingError
from libcontinual.files import atomic_write_json, with_filename

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not guarded against a second process
    fcntl = None  # type: ignore[assignment]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
logger = logging.getLogger(__name__)


class EarlyRecords(logging.Handler):
    """Holds a run's log records from before its log.txt exists (loading and decoding the dataset, a
    skip_bad_images warning); ``attach_log`` writes them there first. At most ``limit`` are kept."""

    def __init__(self, limit: int = 10_000) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.limit = limit

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < self.limit:
            self.records.append(record)

    def replay(self, handler: logging.Handler) -> None:
        for record in self.records:
            if record.levelno >= handler.level:
                handler.handle(record)
        self.records.clear()

    @classmethod
    @contextlib.contextmanager
    def capture(cls) -> Iterator[None]:
        """Collect the library's records inside the block (at INFO, as log.txt does)."""
        logger = logging.getLogger("libcontinual")
        early = cls()
        logger.addHandler(early)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        try:
            yield
        finally:
            logger.removeHandler(early)


class RunDirectory:
    """``save_path/<name>-<YYYYmmdd-HHMMSS>/`` with config.yaml, log.txt, metrics.jsonl, results.json."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._log_handler: logging.Handler | None = None
        self._lock_file: Any = None

    @classmethod
    def create(cls, save_path: str | Path, name: str) -> RunDirectory:
        root = Path(save_path)
        root.mkdir(parents=True, exist_ok=True)  # created now, when a run directory is made in it
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for attempt in range(1000):
            path = root / (f"{name}-{stamp}" if attempt == 0 else f"{name}-{stamp}-{attempt}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return cls(path)
        raise ConfigError(f"Config key 'save_path': could not create a new run folder in {root}.")

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def log_path(self) -> Path:
        return self.path / "log.txt"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    @property
    def lock_path(self) -> Path:
        return self.path / ".lock"

    @property
    def identity_path(self) -> Path:
        return self.path / "run.json"

    def run_id(self) -> str:
        """This run's id (``run.json``; created on first use): every checkpoint records it, so that a
        checkpoint copied from another run directory is refused on resume."""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            return str(json.loads(self.identity_path.read_text(encoding="utf-8"))["run_id"])
        run_id = uuid.uuid4().hex
        atomic_write_json(self.identity_path, {"run_id": run_id})
        return run_id

    def lock(self) -> None:
        """Claim the run for this process until ``unlock`` (or exit): a second process that tries to run
        or resume it at the same time fails instead of interleaving checkpoints and metrics."""
        if fcntl is None:
            return
        while True:
            handle = self.lock_path.open("a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                owner = handle.read().strip() or "unknown"
                handle.close()
                raise TrainingError(
                    f"Run directory {self.path} is in use by another process (pid {owner}); wait for it to "
                    "finish or stop it before running or resuming this run."
                ) from None
            if self._holds_current_file(handle):
                break
            handle.close()  # the owner removed this .lock as it ended: lock the new one
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_file = handle

    def _holds_current_file(self, handle: Any) -> bool:
        """Whether the locked file is still the one at ``.lock`` (not one an ending owner removed)."""
        try:
            return os.stat(self.lock_path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            return False

    def unlock(self) -> None:
        """Release the claim and remove ``.lock`` (while still holding it: a process that opened the old
        file meanwhile sees it is no longer at the path and locks a new one, so two never both hold)."""
        if self._lock_file is not None:
            with contextlib.suppress(OSError):
                self.lock_path.unlink()
            self._lock_file.close()
            self._lock_file = None

    def attach_log(self) -> None:
        """Copy the library's log records into log.txt."""
        handler = _QuietFileHandler(self.log_path, encoding="utf-8")
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        logger = logging.getLogger("libcontinual")
        for early in [h for h in logger.handlers if isinstance(h, EarlyRecords)]:
            early.replay(handler)
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        self._log_handler = handler

    def detach_log(self) -> None:
        if self._log_handler is not None:
            logging.getLogger("libcontinual").removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def append_metrics(self, record: dict[str, Any]) -> None:
        try:
            with self.metrics_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise with_filename(exc, self.metrics_path) from None

    def metrics_size(self) -> int:
        """Bytes of metrics.jsonl written so far, flushed to disk first: a checkpoint records this offset,
        and it is fsynced itself, so the lines it counts must be on disk too."""
        if not self.metrics_path.exists():
            return 0
        try:
            with self.metrics_path.open("rb+") as handle:
                os.fsync(handle.fileno())
                return os.fstat(handle.fileno()).st_size
        except OSError as exc:
            raise with_filename(exc, self.metrics_path) from None

    def truncate_metrics(self, size: int) -> None:
        """Drop metrics lines written after a checkpoint, so a resumed run does not repeat them.

        A file shorter than ``size`` (lines lost, e.g. a crash of the machine before they reached the disk)
        is never padded: it is cut back to its last complete line and a warning says records are missing.
        """
        if not self.metrics_path.exists():
            if size:
                logger.warning("%s is missing; the records before the checkpoint are lost", self.metrics_path)
            return
        with self.metrics_path.open("r+b") as handle:
            length = os.fstat(handle.fileno()).st_size
            if length < size:
                logger.warning(
                    "%s has %d bytes but the checkpoint counted %d: records before the checkpoint are lost; "
                    "the resumed run appends after the last complete line",
                    self.metrics_path,
                    length,
                    size,
                )
                handle.seek(0)
                size = handle.read().rfind(b"\n") + 1
            handle.truncate(size)
            os.fsync(handle.fileno())

    @property
    def processes_path(self) -> Path:
        return self.path / "processes.json"

    def record_process(self, resumed: bool) -> list[dict[str, Any]]:
        """Append this process's provenance (commit, versions, machine, start time) to processes.json and
        return the list: a run resumed from another commit or machine says so in its results, instead of
        naming only the process that finished it."""
        processes: list[dict[str, Any]] = []
        if self.processes_path.exists():
            try:
                processes = json.loads(self.processes_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"Cannot read {self.processes_path}: {exc}") from None
            if not isinstance(processes, list) or not all(isinstance(p, dict) for p in processes):
                raise ConfigError(f"{self.processes_path} is not a list of process records.")
        processes.append(
            {
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "resumed": resumed,
                **provenance(),
            }
        )
        atomic_write_json(self.processes_path, processes)
        return processes

    def write_results(self, results: dict[str, Any]) -> None:
        atomic_write_json(self.results_path, results)


class _QuietFileHandler(logging.FileHandler):
    """log.txt: a record that cannot be written (disk full, read-only folder) is dropped instead of
    printing logging's own traceback; the run's error then says which file could not be written."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        pass


def provenance() -> dict[str, Any]:
    """Library version, git commit, and the machine: saved beside every result."""
    from libcontinual import __version__

    return {
        "libcontinual_version": __version__,
        "git_commit": _git_commit(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


PROC_STATUS = Path("/proc/self/status")
PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


def reset_peak_memory() -> None:
    """Start a new peak-memory window, so that a run's peak excludes earlier runs of the same process.

    Linux resets the resident-set high-water mark (``VmHWM``) when "5" is written to
    ``/proc/self/clear_refs``; CUDA's allocator peak is reset too. Without procfs nothing can be reset and
    :func:`peak_memory_mb` reports the process's lifetime peak.
    """
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with contextlib.suppress(OSError):
        PROC_CLEAR_REFS.write_text("5")


def _high_water_mark_kb() -> int | None:
    try:
        lines = PROC_STATUS.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def peak_memory_mb() -> dict[str, float | None]:
    """Peak resident memory and, on CUDA, peak allocated GPU memory (MiB) since :func:`reset_peak_memory`.

    Without procfs the RSS peak is the process's lifetime peak (``ru_maxrss``).
    """
    import resource

    rss_kb = _high_water_mark_kb()
    if rss_kb is None:
        rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":  # bytes there, kilobytes elsewhere
            rss_kb //= 1024
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"peak_rss_mb": rss_kb / 1024, "peak_gpu_mb": gpu}
