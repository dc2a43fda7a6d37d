"""What ``libcontinual datasets`` shows: every registered dataset, where it looks by default, and
whether it is there."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from libcontinual.registry import DATASETS

Loader = TypeVar("Loader", bound=Callable[..., Any])


def default_location(path: str, found: Callable[[Path], bool] | None = None) -> Callable[[Loader], Loader]:
    """Mark a loader as reading ``path`` when ``data_root`` is None.

    ``found(path)`` says whether the data is really there (default: the path exists).
    """

    def mark(loader: Loader) -> Loader:
        loader.default_location = path  # type: ignore[attr-defined]
        loader.found_at_default = found or Path.exists  # type: ignore[attr-defined]
        return loader

    return mark


def describe_datasets() -> list[dict[str, Any]]:
    """One dict per registered dataset, sorted by name.

    Keys: ``name``; ``description`` (the loader's first docstring line); ``options`` (its keyword
    arguments and their defaults); ``default_location`` (the path read when ``data_root`` is None,
    or None when a data_root is required); ``found`` (whether the data is at that location; None
    when there is no default location).
    """
    rows = []
    for name in DATASETS.names():
        loader = DATASETS.get(name)
        location = getattr(loader, "default_location", None)
        found = bool(loader.found_at_default(Path(location))) if location is not None else None
        parameters = inspect.signature(loader).parameters.values()
        rows.append(
            {
                "name": name,
                "description": (inspect.getdoc(loader) or "").split("\n")[0],
                "options": {
                    p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY
                },
                "default_location": location,
                "found": found,
            }
        )
    return rows
