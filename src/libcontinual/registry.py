"""Name -> class registries for datasets, backbones, methods and buffers (timm-style)."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from libcontinual.errors import ConfigError


def nearest(name: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """The closest valid spelling of ``name`` among ``choices`` (ignoring case), or None."""
    by_lower = {choice.lower(): choice for choice in choices}
    matches = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.5)
    return by_lower[matches[0]] if matches else None


class Registry:
    """A named table of constructors; unknown names give an error with the nearest valid name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(obj: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str, where: str = "") -> Callable[..., Any]:
        if name not in self._entries:
            hint = nearest(name, self.names())
            suggestion = f" Did you mean {hint!r}?" if hint else ""
            location = f" ({where})" if where else ""
            raise ConfigError(
                f"Unknown {self.kind} {name!r}{location}.{suggestion} "
                f"Known {self.kind}s: {', '.join(self.names())}."
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries


DATASETS = Registry("dataset")
BACKBONES = Registry("backbone")
METHODS = Registry("method")
BUFFERS = Registry("buffer")
SCENARIOS = Registry("scenario")

register_dataset = DATASETS.register
register_backbone = BACKBONES.register
register_method = METHODS.register
register_buffer = BUFFERS.register
register_scenario = SCENARIOS.register
