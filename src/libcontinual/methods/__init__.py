"""Continual-learning methods, one file each; importing this package registers them all."""

from libcontinual.methods import (  # noqa: F401
    abd,
    agem,
    base,
    bic,
    cpg,
    deepinversion,
    e2e,
    ewc,
    finetune,
    gem,
    icarl,
    individual,
    joint,
    lucir,
    lwf,
    lwf_mc,
    packnet,
    piggyback,
    replay,
    wa,
)
from libcontinual.methods.base import Finetune, Method

__all__ = ["Finetune", "Method"]
