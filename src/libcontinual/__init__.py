"""libcontinual: continual learning for PyTorch.

``libcontinual.run(config, **overrides)`` runs one experiment and returns its ``RunResult``; a method
is a subclass of ``Method`` registered with ``@register_method("name")``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("libcontinual")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

from libcontinual.config import ExperimentConfig, load_config  # noqa: E402
from libcontinual.engine.entry import run  # noqa: E402
from libcontinual.engine.experiment import RunResult  # noqa: E402
from libcontinual.methods.base import Finetune, Method  # noqa: E402
from libcontinual.registry import (  # noqa: E402
    register_backbone,
    register_buffer,
    register_dataset,
    register_method,
    register_scenario,
)

__all__ = [
    "ExperimentConfig",
    "Finetune",
    "Method",
    "RunResult",
    "__version__",
    "load_config",
    "register_backbone",
    "register_buffer",
    "register_dataset",
    "register_method",
    "register_scenario",
    "run",
]
