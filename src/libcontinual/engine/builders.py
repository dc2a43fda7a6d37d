"""Build components from config entries, checking names and keyword arguments before any work starts."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from libcontinual.config import ComponentConfig
from libcontinual.errors import ConfigError
from libcontinual.registry import nearest

# Arguments the library passes itself; a config must not set them.
INJECTED = {
    "backbone": {"in_channels"},
    "method": {"backbone", "feat_dim", "num_class"},
    "optimizer": {"params"},
    "lr_scheduler": {"optimizer"},
    "dataset": {"data_root", "image_size"},
    "buffer": set(),
    "scenario": {
        "data",
        "init_cls_num",
        "inc_cls_num",
        "task_num",
        "class_order",
        "order_seed",
        "val_ratio",
        "seed",
    },
}


def check_kwargs(factory: Callable[..., Any], kwargs: dict[str, Any], key: str, kind: str, name: str) -> None:
    """Every key of ``kwargs`` must be a keyword parameter of ``factory`` that the library does not inject."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    parameters = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    injected = INJECTED.get(kind, set())
    valid = [
        p
        for p, spec in parameters.items()
        if p not in injected and p != "self" and spec.kind is not inspect.Parameter.VAR_POSITIONAL
    ]
    for arg in kwargs:
        if arg in injected:
            raise ConfigError(
                f"Config key '{key}.kwargs.{arg}' is set by the library for every {kind}; remove it."
            )
        if arg not in valid:
            hint = nearest(arg, valid)
            suggestion = f" Did you mean '{hint}'?" if hint else ""
            raise ConfigError(
                f"Config key '{key}.kwargs.{arg}' is not a parameter of {kind} {name!r}.{suggestion} "
                f"Its parameters: {', '.join(valid) or '(none)'}."
            )
    missing = [
        p
        for p, spec in parameters.items()
        if p in valid
        and spec.default is inspect.Parameter.empty
        and p not in kwargs
        and spec.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    if missing:
        raise ConfigError(f"Config key '{key}.kwargs' must set {', '.join(missing)} for {kind} {name!r}.")


def call(factory: Callable[..., Any], key: str, *args: Any, **kwargs: Any) -> Any:
    """Call a constructor; a TypeError/ValueError from bad values becomes a ConfigError naming ``key``."""
    try:
        return factory(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Config key '{key}': {exc}") from exc


def _torch_classes(module: Any, base: type) -> dict[str, type]:
    return {
        name: obj
        for name, obj in vars(module).items()
        if inspect.isclass(obj) and issubclass(obj, base) and obj is not base and not name.startswith("_")
    }


def optimizer_class(component: ComponentConfig, key: str) -> type[torch.optim.Optimizer]:
    classes = _torch_classes(torch.optim, torch.optim.Optimizer)
    if component.name not in classes:
        hint = nearest(component.name, list(classes))
        suggestion = f" Did you mean {hint!r}?" if hint else ""
        raise ConfigError(
            f"Config key '{key}.name': {component.name!r} is not an optimizer in torch.optim.{suggestion}"
        )
    cls = classes[component.name]
    check_kwargs(cls, component.kwargs, key, "optimizer", component.name)
    return cls


def scheduler_class(component: ComponentConfig, key: str) -> type:
    classes = _torch_classes(torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler)
    classes.pop("ReduceLROnPlateau", None)
    if component.name not in classes:
        hint = nearest(component.name, list(classes))
        suggestion = f" Did you mean {hint!r}?" if hint else ""
        raise ConfigError(
            f"Config key '{key}.name': {component.name!r} is not an epoch-stepped scheduler in "
            f"torch.optim.lr_scheduler.{suggestion}"
        )
    cls = classes[component.name]
    check_kwargs(cls, component.kwargs, key, "lr_scheduler", component.name)
    return cls


def build_optimizer(
    component: ComponentConfig, params: Any, key: str, fused: bool = False
) -> torch.optim.Optimizer:
    """The optimizer; ``fused`` asks for the fused CUDA kernel when available and not set by the config."""
    cls = optimizer_class(component, key)
    kwargs = dict(component.kwargs)
    if fused and "fused" in inspect.signature(cls.__init__).parameters:
        kwargs.setdefault("fused", True)
    return call(cls, key, params, **kwargs)


def build_scheduler(component: ComponentConfig | None, optimizer: torch.optim.Optimizer, key: str) -> Any:
    if component is None:
        return None
    return call(scheduler_class(component, key), key, optimizer, **component.kwargs)


def resolve_plugins(plugins: list[str], config_dir: Path | None) -> list[str]:
    """Plugin files as absolute paths (relative ones are relative to the config file), modules unchanged."""
    resolved = []
    for plugin in plugins:
        if (
            (plugin.endswith(".py") or "/" in plugin)
            and not Path(plugin).is_absolute()
            and config_dir is not None
        ):
            plugin = str((config_dir / plugin).resolve())
        resolved.append(plugin)
    return resolved


def load_plugins(plugins: list[str], config_dir: Path | None) -> None:
    """Import user files or modules so that their ``@register_*`` decorators run."""
    for index, plugin in enumerate(plugins):
        key = f"plugins.{index}"
        if plugin.endswith(".py") or "/" in plugin:
            path = Path(plugin)
            if not path.is_absolute() and config_dir is not None:
                path = config_dir / path
            if not path.is_file():
                raise ConfigError(f"Config key '{key}': plugin file {path} does not exist.")
            module_name = f"libcontinual_plugin_{path.stem}"
            if module_name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(module_name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[module_name]
                raise plugin_error(key, f"plugin file {path}", exc, path) from None
        else:
            try:
                importlib.import_module(plugin)
            except Exception as exc:
                raise plugin_error(key, f"plugin module {plugin!r}", exc, None) from None


def plugin_error(key: str, what: str, exc: Exception, path: Path | None) -> ConfigError:
    """One message for a plugin that fails to import: the config key, the file and line, the error."""
    import traceback

    if isinstance(exc, SyntaxError):
        where = f"{exc.filename}, line {exc.lineno}"
        detail = f"SyntaxError: {exc.msg}"
    else:
        frames = traceback.extract_tb(exc.__traceback__)
        inside = [f for f in frames if path is not None and Path(f.filename) == path] or frames[-1:]
        where = f"{inside[-1].filename}, line {inside[-1].lineno}" if inside else ""
        detail = f"{type(exc).__name__}: {exc}"
    hint = ""
    if isinstance(exc, ModuleNotFoundError):
        hint = f" Install the module {exc.name!r} or fix the name." if exc.name else ""
    at = f" (at {where})" if where else ""
    return ConfigError(f"Config key '{key}': {what} cannot be imported{at}: {detail}.{hint}")
