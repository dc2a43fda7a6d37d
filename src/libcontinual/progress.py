"""Progress of long work (decoding images, evaluation, herding, a method's between-task work).

Library code never prints: it opens a ``track(description, total)`` and advances it. Whoever runs the work
decides whether anything is shown, by installing a ``Reporter`` for the duration (``reporting``): the CLI
installs rich progress bars when stderr is a terminal; without a reporter (scripts, notebooks, a CLI
whose stderr is a file or pipe) tracking costs nothing and shows nothing. The reporter lives in a context
variable, so nested work (herding inside ``after_task``) shows as nested bars and threads that a tracked
block starts report through the ``Bar`` they were handed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Reporter(Protocol):
    """Shows tracked work; ``total`` None is work of unknown length (a spinner)."""

    def start(self, description: str, total: int | None) -> Any: ...

    def advance(self, handle: Any, amount: int) -> None: ...

    def finish(self, handle: Any) -> None: ...


_REPORTER: ContextVar[Reporter | None] = ContextVar("libcontinual_progress_reporter", default=None)


@contextlib.contextmanager
def reporting(reporter: Reporter | None) -> Iterator[None]:
    """Show every ``track`` inside this block through ``reporter`` (None: show nothing)."""
    token = _REPORTER.set(reporter)
    try:
        yield
    finally:
        _REPORTER.reset(token)


class Bar:
    """One tracked piece of work; ``advance`` is safe to call from worker threads (rich locks)."""

    def __init__(self, reporter: Reporter | None, handle: Any) -> None:
        self._reporter = reporter
        self._handle = handle

    def advance(self, amount: int = 1) -> None:
        if self._reporter is not None:
            self._reporter.advance(self._handle, amount)


@contextlib.contextmanager
def track(description: str, total: int | None = None) -> Iterator[Bar]:
    """A bar for the work inside the block (removed when the block ends, also on error)."""
    reporter = _REPORTER.get()
    if reporter is None:
        yield Bar(None, None)
        return
    handle = reporter.start(description, total)
    try:
        yield Bar(reporter, handle)
    finally:
        reporter.finish(handle)


def iterate(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """``items``, advancing a bar by one per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with track(description, total) as bar:
        for item in items:
            yield item
            bar.advance()
