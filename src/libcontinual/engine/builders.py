"""Build components from config entries, checking names and keyword arguments before any work starts."""

from __future__ import annotations

import collections.abc
import contextlib
import importlib
import importlib.util
import inspect
import sys
import types
import typing
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Union

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
    parameters = _signature(target).parameters
    for arg, value in kwargs.items():
        if arg in parameters and value_matches(parameters[arg].annotation, value) is False:
            raise ConfigError(
                f"Config key '{key}.kwargs.{arg}' must be {describe_type(parameters[arg].annotation)} "
                f"for {kind} {name!r}, got {value!r}."
            )
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


def _signature(target: Callable[..., Any]) -> inspect.Signature:
    """The signature with string annotations evaluated where possible (the rest are left as strings,
    which :func:`value_matches` ignores)."""
    signature = inspect.signature(target)
    namespace = {
        **{name: getattr(typing, name) for name in typing.__all__},
        **{name: getattr(collections.abc, name) for name in collections.abc.__all__},
        "torch": torch,
        "Tensor": torch.Tensor,
        **getattr(inspect.unwrap(target), "__globals__", {}),
    }
    parameters = []
    for parameter in signature.parameters.values():
        if isinstance(parameter.annotation, str):
            with contextlib.suppress(Exception):  # a name only imported for type checkers stays a string
                parameter = parameter.replace(annotation=eval(parameter.annotation, namespace))
        parameters.append(parameter)
    return signature.replace(parameters=parameters)


SEQUENCES = (
    list,
    tuple,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Iterable,
    collections.abc.Collection,
)


def value_matches(annotation: Any, value: Any) -> bool | None:
    """Whether a config value (from YAML: None, bool, int, float, str, list, dict) fits a parameter's
    annotation; None when the annotation says nothing checkable. A string never passes for a sequence
    of numbers (``hidden_sizes: '16'`` would become [1, 6])."""
    if annotation in (inspect.Parameter.empty, Any) or isinstance(annotation, (str, typing.TypeVar)):
        return None
    if annotation is None or annotation is type(None):
        return value is None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        results = [value_matches(arg, value) for arg in args]
        return any(r is not False for r in results)
    if origin is typing.Literal:
        return value in args
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation is torch.Tensor:  # a config holds no tensors
        return False
    container = origin or annotation
    if container in SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                return False
            return all(value_matches(a, v) is not False for a, v in zip(args, value, strict=True))
        item = args[0] if args else Any
        return all(value_matches(item, v) is not False for v in value)
    if container in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            return False
        item = args[1] if len(args) == 2 else Any
        return all(value_matches(item, v) is not False for v in value.values())
    return None


def describe_type(annotation: Any) -> str:
    """``int`` -> "an integer", ``Sequence[int]`` -> "a list of integers", ``X | None`` -> "... or null"."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys(describe_type(arg) for arg in args if arg is not torch.Tensor))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if (origin or annotation) in SEQUENCES:
        items = [a for a in args if a is not Ellipsis]
        if not items:
            return "a list"
        return f"a list of {describe_type(items[0]).removeprefix('an ').removeprefix('a ')}s"
    if (origin or annotation) in (dict, collections.abc.Mapping):
        return "a mapping"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def call(factory: Callable[..., Any], key: str, *args: Any, **kwargs: Any) -> Any:
    """Call a constructor; a TypeError/ValueError from bad values becomes a ConfigError naming ``key``,
    and so does running out of memory (a size in the config too large for this machine)."""
    try:
        return factory(*args, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Config key '{key}': {exc}") from exc
    except (MemoryError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "alloc" not in str(exc):
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"Config key '{key}': not enough memory to build it ({reason}); check the sizes it asks for "
            "(num_classes, image_size, images per class, layer widths)."
        ) from None


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


def check_scheduler(component: ComponentConfig, key: str, epochs: int) -> None:
    """Step the scheduler through ``epochs`` epochs on a dummy optimizer, so that a value it cannot use
    (``step_size: 0``, ``T_max: 0``) fails now with the key's name instead of in the middle of a task."""
    cls = scheduler_class(component, key)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scheduler = cls(optimizer, **component.kwargs)
            for _ in range(epochs):
                optimizer.step()
                scheduler.step()
    except (ArithmeticError, TypeError, ValueError, KeyError, IndexError, RuntimeError) as exc:
        raise ConfigError(
            f"Config key '{key}': {component.name} with kwargs {component.kwargs} fails when stepped "
            f"({type(exc).__name__}: {exc}). Check its values (e.g. step_size and T_max must be at least 1)."
        ) from None


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
