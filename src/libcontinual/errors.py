"""Errors a user can act on: each message names the file, key or path and what to do."""

from __future__ import annotations


class LibContinualError(Exception):
    """Base class: an error caused by input the user controls (config, data, paths)."""


class ConfigError(LibContinualError):
    """A configuration value is unknown, mistyped or impossible."""


class DataError(LibContinualError):
    """A dataset is missing, corrupt or inconsistent."""


class TrainingError(LibContinualError):
    """Training cannot go on (e.g. a non-finite loss)."""
