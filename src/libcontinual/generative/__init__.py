"""Data-free replay: a generator trained against a frozen teacher, reusable by any generative-replay method.

``CifarGenerator`` (the ABD code's generator), ``BNStatisticsHooks`` / ``bn_statistics_loss`` (the
BatchNorm-statistics loss on a teacher), the loss terms in ``losses``, ``Dreamer`` (generator + Adam +
RNG: training and sampling), ``GenerativeReplay`` (the method base class: no exemplars, generator training
after each task, pictures) and ``pictures`` (PNG grids of synthetic images per class).
"""

from libcontinual.generative.bn_statistics import BNStatisticsHooks, bn_statistics_loss
from libcontinual.generative.dreamer import Dreamer, GeneratorReport, GeneratorSettings
from libcontinual.generative.generator import CifarGenerator
from libcontinual.generative.replay import GenerativeReplay, refuse_buffer

__all__ = [
    "BNStatisticsHooks",
    "CifarGenerator",
    "Dreamer",
    "GenerativeReplay",
    "GeneratorReport",
    "GeneratorSettings",
    "bn_statistics_loss",
    "refuse_buffer",
]
