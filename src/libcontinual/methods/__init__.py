"""Continual-learning methods, one file each; importing this package registers them all."""

from libcontinual.methods import (  # noqa: F401
    agem,
    base,
    bic,
    e2e,
    ewc,
    gem,
    icarl,
    joint,
    lucir,
    lwf,
    replay,
    wa,
)
from libcontinual.methods.base import Finetune, Method

__all__ = ["Finetune", "Method"]
