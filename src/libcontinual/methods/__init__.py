"""Continual-learning methods, one file each; importing this package registers them all."""

from libcontinual.methods import base, joint  # noqa: F401
from libcontinual.methods.base import Finetune, Method

__all__ = ["Finetune", "Method"]
