"""Exemplar buffers and update strategies; importing this package registers ``linear`` and ``online``."""

from libcontinual.buffers import base, features, linear, online, strategies  # noqa: F401
from libcontinual.buffers.base import ExemplarBuffer
from libcontinual.buffers.features import extract_features
from libcontinual.buffers.linear import LinearBuffer
from libcontinual.buffers.online import OnlineBuffer

__all__ = ["ExemplarBuffer", "LinearBuffer", "OnlineBuffer", "extract_features"]
