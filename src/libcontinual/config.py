"""Experiment configuration: YAML files with ``includes``, command-line overrides, typed validation.

The vocabulary is LibContinual's (``init_cls_num``, ``inc_cls_num``, ``task_num``, ``backbone``,
``optimizer``, ``classifier`` ...), so its users can bring their configs. Every error names the file
(or command-line override) that set the offending key, the key, and the fix.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from libcontinual.errors import ConfigError
from libcontinual.registry import nearest
from libcontinual.shipped import shipped_config

OVERRIDE_SOURCE = "command-line override"
LOGGERS = ("tensorboard", "csv")
PROTOCOLS = ("class_il", "task_il")


MAX_VALUES = 200_000  # values a config may expand to (YAML aliases can multiply a short file)
MAX_DEPTH = 50  # nesting levels of mappings and lists
MAX_IMAGE_SIZE = 4096


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``) and refuses a key
    given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice (first at line {first.line + 1}); keep one",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_yaml_value(text: str) -> Any:
    """Parse one scalar or flow value the way a config file would (``0.1``, ``[1, 2]``, ``true``)."""
    return yaml.load(text, Loader=_Loader)


def _doc(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"doc": text})
    if default is not dataclasses.MISSING:
        return field(default=default, metadata={"doc": text})
    return field(metadata={"doc": text})


@dataclass
class ComponentConfig:
    """A registered component chosen by name, with its constructor's keyword arguments."""

    name: str = _doc("Registered name of the component.")
    kwargs: dict[str, Any] = _doc("Keyword arguments passed to its constructor.", factory=dict)


@dataclass
class AugmentConfig:
    """Training augmentation applied on the device; ``null`` keeps the dataset's default."""

    crop_padding: int | None = _doc("Zero padding before the random crop back to the image size.", None)
    horizontal_flip: bool | None = _doc("Flip each image horizontally with probability 0.5.", None)
    brightness: float | None = _doc("Brightness jitter: factor drawn from [1-b, 1+b].", None)
    contrast: float | None = _doc("Contrast jitter: factor drawn from [1-c, 1+c].", None)


@dataclass
class DistributedConfig:
    """Runs launched by torchrun (docs/distributed.md); without torchrun these keys change nothing."""

    backend: str | None = _doc("torch.distributed backend; null = nccl on CUDA, gloo on CPU.", None)
    sync_batchnorm: bool = _doc(
        "Convert the backbone's BatchNorm layers to SyncBatchNorm (statistics of the global batch, as "
        "one process computes them; CUDA only). false = each rank normalises by its own shard.",
        False,
    )
    find_unused_parameters: bool = _doc(
        "DistributedDataParallel's find_unused_parameters: true lets a step leave trained parameters "
        "unused (per-task heads, masks); false is a little faster when every step uses all of them.",
        True,
    )
    timeout_minutes: float = _doc(
        "How long a rank waits for the others at one collective before the run fails; it covers rank "
        "0's between-task work (herding, a generator's training), which the other ranks wait for.",
        360.0,
    )


@dataclass
class NormalizeConfig:
    """Per-channel normalisation statistics (on images scaled to [0, 1])."""

    mean: list[float] = _doc("Per-channel mean.")
    std: list[float] = _doc("Per-channel standard deviation.")


@dataclass
class ExperimentConfig:
    """One continual-learning experiment."""

    dataset: ComponentConfig = _doc(
        "Dataset by registered name; a plain string or {name, kwargs} (e.g. download, cache_dir)."
    )
    init_cls_num: int = _doc("Number of classes in the first task (the B in B/Inc).")
    inc_cls_num: int = _doc("Number of new classes in every later task.")
    task_num: int = _doc("Number of tasks.")
    epoch: int = _doc("Training epochs for every task after the first.")
    backbone: ComponentConfig = _doc("Network by registered name, e.g. resnet32.")
    method: ComponentConfig = _doc(
        "Continual-learning method by registered name; `classifier` is accepted as LibContinual's spelling."
    )
    optimizer: ComponentConfig = _doc("Optimizer class name in torch.optim with its kwargs.")
    data_root: str | None = _doc("Where the dataset lives (relative paths: to the working directory).", None)
    image_size: int | None = _doc("Resize images to this square size when loading; null keeps them.", None)
    class_order: list[int] | None = _doc(
        "Explicit class order; null draws np.random.seed(order_seed); permutation(n).", None
    )
    order_seed: int = _doc("Seed of the class-order permutation (1993 as iCaRL, PyCIL, FACIL).", 1993)
    scenario: ComponentConfig = _doc(
        "How tasks are made from the dataset (class_incremental by default).",
        factory=lambda: ComponentConfig(name="class_incremental"),
    )
    val_ratio: float = _doc("Fraction of each task's training data held out, class-balanced.", 0.0)
    augment: AugmentConfig = _doc("Training augmentation (defaults per dataset).", factory=AugmentConfig)
    normalize: NormalizeConfig | None = _doc("Normalisation statistics; null = dataset default.", None)
    init_epoch: int | None = _doc("Training epochs for the first task; null = epoch.", None)
    batch_size: int = _doc("Training batch size.", 128)
    eval_batch_size: int = _doc("Evaluation batch size.", 512)
    val_per_epoch: int = _doc("Evaluate seen tasks every N epochs inside a task (0 = only after it).", 0)
    protocol: str = _doc(
        "class_il: a test image is classified among every class seen so far; task_il: the task id is given "
        "at test time (multi-head), so only task-incremental accuracy (<classifier>_task_il) is evaluated.",
        "class_il",
    )
    full_accuracy_matrix: bool = _doc(
        "Evaluate every task (not only seen ones) after each task, and the untrained model on every task "
        "before training: needed for forward transfer (FWT).",
        False,
    )
    init_optimizer: ComponentConfig | None = _doc("Optimizer for the first task; null = optimizer.", None)
    lr_scheduler: ComponentConfig | None = _doc(
        "Scheduler class name in torch.optim.lr_scheduler, stepped once per epoch; null = constant.", None
    )
    init_lr_scheduler: ComponentConfig | None = _doc(
        "Scheduler for the first task; null = lr_scheduler.", None
    )
    buffer: ComponentConfig | None = _doc("Exemplar buffer by registered name; null = none.", None)
    checkpoint_every: int = _doc(
        "Also checkpoint every N epochs inside a task (0 = only at the end of each task).", 0
    )
    keep_checkpoints: int = _doc("How many of the newest checkpoints to keep.", 2)
    max_loss: float | None = _doc(
        "Stop the run when a training batch's loss exceeds this (the run diverged: lower the learning "
        "rate); null = stop only on a non-finite loss.",
        1.0e6,
    )
    resume: bool = _doc(
        "Continue the newest unfinished run of this config (same save_path and name) from its last "
        "valid checkpoint instead of starting a new run.",
        False,
    )
    seed: int = _doc("Seed of initialisation, batches and augmentation.", 1993)
    seeds: list[int] = _doc(
        "Run once per seed into seed-<s>/ sub-directories and aggregate mean ± std; each seed also fixes "
        "the class order (unless class_order is given).",
        factory=list,
    )
    repeat: int = _doc("Run seeds seed, seed+1, ... seed+repeat-1 (like seeds).", 1)
    deterministic: bool = _doc("Use PyTorch's deterministic algorithms.", False)
    device: str = _doc("auto (cuda when present, else cpu), cpu, cuda or cuda:N.", "auto")
    channels_last: bool | None = _doc(
        "Keep images and convolution weights in channels_last memory format; null = on with CUDA, off on "
        "CPU (true turns it on there; benchmarks/cpu_fast_path.py measures it). A run records what it "
        "used (FastPath.describe).",
        None,
    )
    bf16: bool | None = _doc(
        "bfloat16 autocast for forward passes (training and evaluation); null = on with CUDA when supported.",
        None,
    )
    compile: bool = _doc(
        "torch.compile the backbone in place (nn.Module.compile); GPU only in practice (on 2 CPU cores the "
        "ResNet-32 step compiled for minutes, benchmarks/BENCHMARKS.md).",
        False,
    )
    distributed: DistributedConfig = _doc(
        "Several processes under torchrun: backend, SyncBatchNorm, unused parameters. batch_size stays "
        "the global batch; each of N ranks trains on batch_size / N of it.",
        factory=DistributedConfig,
    )
    num_threads: int | None = _doc("torch.set_num_threads on CPU; null keeps PyTorch's default.", None)
    save_path: str = _doc("Folder that receives one run directory per run.", "runs")
    name: str | None = _doc("Run-directory prefix; null = the method's name.", None)
    logger: list[str] = _doc(
        "Extra run loggers: tensorboard (event files in the run directory's tensorboard/) and csv "
        "(metrics.csv, one row per epoch); metrics.jsonl is always written.",
        factory=list,
    )
    plugins: list[str] = _doc(
        "Python files (relative to the config file) or modules imported first, to register your own "
        "methods, backbones or datasets.",
        factory=list,
    )

    @property
    def seed_list(self) -> list[int]:
        """The seeds of a multi-seed run; empty for a single run."""
        if self.seeds:
            return list(self.seeds)
        return [self.seed + i for i in range(self.repeat)] if self.repeat > 1 else []

    @property
    def first_task_epochs(self) -> int:
        return self.epoch if self.init_epoch is None else self.init_epoch

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- loading

RENAMED_KEYS = {"classifier": "method"}


class _Origins:
    """Which file (or override) set each key path, for error messages."""

    def __init__(self) -> None:
        self._by_path: dict[tuple[str, ...], str] = {}

    def record(self, data: Any, source: str, prefix: tuple[str, ...] = ()) -> None:
        if prefix:
            self._by_path[prefix] = source
        if isinstance(data, dict):
            for key, value in data.items():
                self.record(value, source, (*prefix, str(key)))

    def source(self, path: tuple[str, ...]) -> str:
        for end in range(len(path), 0, -1):
            if path[:end] in self._by_path:
                return self._by_path[path[:end]]
        return "the config"


def _read_yaml(path: Path, included_from: str | None) -> dict[str, Any]:
    if not path.is_file():
        where = f" (listed under 'includes' in {included_from})" if included_from else ""
        raise ConfigError(
            f"Config file {path} does not exist{where}, and no config shipped with libcontinual has that "
            "name. Check the path; `libcontinual list configs` shows the shipped ones (e.g. demo, icarl)."
        )
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"Config file {path} is not valid YAML{line}: {exc}") from None
    except RecursionError:
        raise ConfigError(
            f"Config file {path} nests lists or mappings too deeply to read (at most {MAX_DEPTH} levels)."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Config file {path} cannot be read: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"Config file {path} must be a mapping of keys to values, not a {type(data).__name__}."
        )
    check_shape(data, f"Config file {path}")
    return _rename_synonyms(data, str(path))


def check_shape(data: Any, source: str) -> None:
    """Refuse configs nested deeper than MAX_DEPTH or expanding to more than MAX_VALUES values.

    A YAML alias is a reference: ten lines of aliases to aliases expand to billions of values once the
    config is copied or saved ("billion laughs"), so the expanded size is counted, up to the limit.
    """
    count = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(
                f"{source} expands to more than {MAX_VALUES} values (YAML aliases of aliases?); "
                "write the values out or shorten them."
            )
        if depth > MAX_DEPTH:
            raise ConfigError(f"{source} nests lists or mappings more than {MAX_DEPTH} levels deep.")
        if isinstance(value, dict):
            stack.extend((child, depth + 1) for child in value.values())
            stack.extend((key, depth + 1) for key in value if not isinstance(key, str))
        elif isinstance(value, (list, tuple)):
            stack.extend((child, depth + 1) for child in value)


def _rename_synonyms(data: dict[str, Any], source: str) -> dict[str, Any]:
    data = dict(data)
    for old, new in RENAMED_KEYS.items():
        if old in data:
            if new in data:
                raise ConfigError(
                    f"{source} sets both '{old}' and '{new}', which mean the same thing. Keep one."
                )
            data[new] = data.pop(old)
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``; nested mappings merge, everything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _includes(data: dict[str, Any], source: str) -> list[str]:
    includes = data.pop("includes", None) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(item, str) for item in includes):
        raise ConfigError(f"{source}: 'includes' must be a list of file paths, got {includes!r}.")
    return includes


def locate(name: str, folder: Path | None = None) -> Path:
    """A config path (relative to ``folder``, else the working directory), or else the shipped config of
    that name (``demo``, ``headers/r5_cifar10.yaml``, ``configs/icarl.yaml``): it works after a plain
    ``pip install`` as from a clone. A path that is neither comes back unchanged for the error message."""
    path = Path(name) if folder is None else folder / name
    if path.is_file():
        return path
    return shipped_config(name) or path


def _load_with_includes(
    path: Path, origins: _Origins, stack: tuple[Path, ...], included_from: str | None = None
) -> dict[str, Any]:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise ConfigError(f"Config includes form a cycle: {chain}. Remove one of these includes.")
    data = _read_yaml(path, included_from)
    includes = _includes(data, str(path))
    merged: dict[str, Any] = {}
    for include in includes:
        child = _load_with_includes(locate(include, path.parent), origins, (*stack, path), str(path))
        merged = merge_config(merged, child)
    origins.record(data, str(path))
    return merge_config(merged, data)


def component_keys() -> list[str]:
    """Top-level keys that hold a ``{name, kwargs}`` component (dataset, backbone, method, optimizer ...)."""
    hints = typing.get_type_hints(ExperimentConfig)
    return [
        key
        for key, hint in hints.items()
        if hint is ComponentConfig or ComponentConfig in typing.get_args(hint)
    ]


def merge_config(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``deep_merge``, except that a component given another name does not inherit the kwargs of the one it
    replaces (``dataset: {name: image_folder}`` over an included cifar100 with ``download: true``)."""
    base = dict(base)
    for key in component_keys():
        new, old = override.get(key), base.get(key)
        if (
            isinstance(new, dict)
            and isinstance(old, dict)
            and new.get("name", old.get("name")) != old.get("name")
        ):
            base[key] = {k: v for k, v in old.items() if k != "kwargs"}
    return deep_merge(base, override)


def _missing_prefixes(data: dict[str, Any], parts: list[str]) -> list[tuple[str, ...]]:
    """The key paths above ``parts`` that ``data`` does not have yet (an override will create them)."""
    missing, node = [], data
    for depth in range(1, len(parts)):
        node = node.get(parts[depth - 1]) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            missing.extend(tuple(parts[:end]) for end in range(depth, len(parts)))
            break
    return missing


def _drop_kwargs_on_rename(data: dict[str, Any], parts: list[str], value: Any, origins: _Origins) -> None:
    """``dataset.name=cifar10`` replaces the component: kwargs from the files belong to the old one and
    go (kwargs set by earlier overrides stay)."""
    if len(parts) != 2 or parts[1] != "name" or parts[0] not in component_keys():
        return
    node = data.get(parts[0])
    if not isinstance(node, dict) or node.get("name") == value or not isinstance(node.get("kwargs"), dict):
        return
    node["kwargs"] = {
        key: item
        for key, item in node["kwargs"].items()
        if origins.source((parts[0], "kwargs", str(key))).startswith(OVERRIDE_SOURCE)
    }


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into (["a", "b"], parsed value)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"Command-line override {text!r} must look like key=value or key.sub=value "
            "(e.g. epoch=5, optimizer.kwargs.lr=0.01)."
        )
    try:
        parsed = parse_yaml_value(value)
    except yaml.YAMLError as exc:
        raise ConfigError(f"Command-line override {text!r}: the value is not valid YAML ({exc}).") from None
    parts = key.split(".")
    parts[0] = RENAMED_KEYS.get(parts[0], parts[0])
    return parts, parsed


def _apply_override(data: dict[str, Any], parts: list[str], value: Any, text: str) -> None:
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if isinstance(child, str) and depth == 0 and parts[1] in ("name", "kwargs"):
            child = node[part] = {"name": child}
        if not isinstance(child, dict):
            raise ConfigError(
                f"Command-line override {text!r}: '{'.'.join(parts[: depth + 1])}' is a "
                f"{type(child).__name__}, not a mapping, so it has no key '{parts[depth + 1]}'."
            )
        node = child
    node[parts[-1]] = value


def load_config(
    source: str | Path | dict[str, Any],
    overrides: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[ExperimentConfig, Path | None]:
    """Load, merge and validate a config.

    ``source`` is a YAML path or a dict (a dict may still use ``includes``, resolved against the
    working directory). ``overrides`` are ``key.sub=value`` strings; ``extra`` is a nested dict merged
    last (the Python API's keyword overrides). Returns the typed config and the config file's path.
    """
    origins = _Origins()
    config_path: Path | None = None
    if isinstance(source, dict):
        check_shape(source, "The config dict")
        data = _rename_synonyms(source, "the config dict")
        merged: dict[str, Any] = {}
        for include in _includes(data, "the config dict"):
            merged = deep_merge(merged, _load_with_includes(locate(include), origins, (), "the config dict"))
        origins.record(data, "the config dict")
        data = merge_config(merged, data)
    else:
        config_path = locate(str(source)).resolve()
        data = _load_with_includes(config_path, origins, ())
    for text in overrides or []:
        parts, value = parse_override(text)
        source = f"{OVERRIDE_SOURCE} {text!r}"
        created = _missing_prefixes(data, parts)
        _drop_kwargs_on_rename(data, parts, value, origins)
        _apply_override(data, parts, value, text)
        origins.record(value, source, tuple(parts))
        for prefix in created:  # a key the override made up (a typo) is the override's, not the file's
            origins.record(None, source, prefix)
    if extra:
        check_shape(extra, "The keyword overrides")
        extra = _rename_synonyms(extra, "the keyword overrides")
        data = merge_config(data, extra)
        origins.record(extra, "the keyword overrides")
    config = _build(ExperimentConfig, data, (), origins)
    check_values(config, origins)
    return config, config_path


# --------------------------------------------------------------------------- validation


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if origin is list:
        item = typing.get_args(annotation)[0]
        plural = {int: "integers", float: "numbers", str: "strings", bool: "booleans"}
        return f"a list of {plural.get(item, _type_name(item))}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(annotation):
        if annotation is ComponentConfig:
            return "a mapping {name, kwargs} or a name"
        return "a mapping"
    if annotation is type(None):
        return "null"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        annotation, str(annotation)
    )


def _error(path: tuple[str, ...], origins: _Origins, message: str) -> ConfigError:
    key = ".".join(path) if path else "the top level"
    return ConfigError(f"Config error in {origins.source(path)}: key '{key}' {message}")


def _convert(annotation: Any, value: Any, path: tuple[str, ...], origins: _Origins) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None:
            if type(None) in options:
                return None
            raise _error(path, origins, f"must be {_type_name(annotation)}, not null.")
        non_null = [opt for opt in options if opt is not type(None)]
        return _convert(non_null[0], value, path, origins)
    if dataclasses.is_dataclass(annotation):
        if annotation is ComponentConfig and isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            raise _error(path, origins, f"must be {_type_name(annotation)}, got {value!r}.")
        return _build(annotation, value, path, origins)
    if origin is list:
        if not isinstance(value, list):
            raise _error(path, origins, f"must be {_type_name(annotation)}, got {value!r}.")
        (item_type,) = typing.get_args(annotation)
        return [_convert(item_type, item, (*path, str(i)), origins) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _error(path, origins, f"must be a mapping, got {value!r}.")
        return {str(k): v for k, v in value.items()}
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif annotation is Any:
        return value
    raise _error(path, origins, f"must be {_type_name(annotation)}, got {value!r}.")


def _build(cls: type, data: dict[str, Any], path: tuple[str, ...], origins: _Origins) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            hint = nearest(str(key), list(fields))
            suggestion = f" Did you mean '{'.'.join((*path, hint))}'?" if hint else ""
            raise _error(
                (*path, str(key)),
                origins,
                f"is not a valid key.{suggestion} Valid keys here: {', '.join(fields)}.",
            )
    values = {}
    for name, spec in fields.items():
        if name in data:
            values[name] = _convert(hints[name], data[name], (*path, name), origins)
        elif spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
            raise _error(
                (*path, name), origins, f"is required ({spec.metadata.get('doc', '')}) but is missing."
            )
    return cls(**values)


def check_values(config: ExperimentConfig, origins: _Origins | None = None) -> None:
    """Reject impossible values that types alone cannot catch."""
    origins = origins or _Origins()
    positive = ["init_cls_num", "task_num", "epoch", "batch_size", "eval_batch_size", "keep_checkpoints"]
    for key in positive:
        if getattr(config, key) < 1:
            raise _error((key,), origins, f"must be at least 1, got {getattr(config, key)}.")
    if config.task_num > 1 and config.inc_cls_num < 1:
        raise _error(
            ("inc_cls_num",), origins, f"must be at least 1 when task_num > 1, got {config.inc_cls_num}."
        )
    if config.inc_cls_num < 0:
        raise _error(("inc_cls_num",), origins, f"must not be negative, got {config.inc_cls_num}.")
    if config.init_epoch is not None and config.init_epoch < 1:
        raise _error(("init_epoch",), origins, f"must be at least 1, got {config.init_epoch}.")
    for key in ("seed", "order_seed"):
        if not 0 <= getattr(config, key) < 2**32:
            raise _error((key,), origins, f"must lie in [0, 2**32), got {getattr(config, key)}.")
    if config.repeat < 1:
        raise _error(("repeat",), origins, f"must be at least 1, got {config.repeat}.")
    if config.seeds and config.repeat > 1:
        raise _error(("repeat",), origins, "cannot be combined with 'seeds'; use one of them.")
    if len(set(config.seeds)) != len(config.seeds):
        raise _error(("seeds",), origins, "lists a seed more than once.")
    for index, value in enumerate(config.seeds):
        if not 0 <= value < 2**32:
            raise _error(("seeds", str(index)), origins, f"must lie in [0, 2**32), got {value}.")
    if config.checkpoint_every < 0:
        raise _error(
            ("checkpoint_every",), origins, f"must be 0 (off) or positive, got {config.checkpoint_every}."
        )
    if config.val_per_epoch < 0:
        raise _error(("val_per_epoch",), origins, f"must be 0 (off) or positive, got {config.val_per_epoch}.")
    if not 0.0 <= config.val_ratio < 1.0:
        raise _error(("val_ratio",), origins, f"must lie in [0, 1), got {config.val_ratio}.")
    if config.max_loss is not None and not config.max_loss > 0:
        raise _error(("max_loss",), origins, f"must be positive or null, got {config.max_loss}.")
    if config.image_size is not None and not 1 <= config.image_size <= MAX_IMAGE_SIZE:
        raise _error(("image_size",), origins, f"must lie in [1, {MAX_IMAGE_SIZE}], got {config.image_size}.")
    if config.name is not None:
        check_run_name(config.name, origins)
    for index, plugin in enumerate(config.plugins):
        if not plugin.strip():
            raise _error(("plugins", str(index)), origins, "is empty: name a Python file or module.")
    if config.protocol not in PROTOCOLS:
        hint = nearest(config.protocol, PROTOCOLS)
        suggestion = f" Did you mean {hint!r}?" if hint else ""
        valid = ", ".join(PROTOCOLS)
        raise _error(("protocol",), origins, f"is {config.protocol!r}, not one of {valid}.{suggestion}")
    if config.num_threads is not None and config.num_threads < 1:
        raise _error(("num_threads",), origins, f"must be at least 1, got {config.num_threads}.")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", config.device):
        raise _error(("device",), origins, f"must be auto, cpu, cuda, cuda:N or mps, got {config.device!r}.")
    for key in ("crop_padding",):
        value = getattr(config.augment, key)
        if value is not None and value < 0:
            raise _error(("augment", key), origins, f"must not be negative, got {value}.")
    for key in ("brightness", "contrast"):
        value = getattr(config.augment, key)
        if value is not None and not 0.0 <= value <= 1.0:
            raise _error(("augment", key), origins, f"must lie in [0, 1], got {value}.")
    if config.normalize is not None:
        if len(config.normalize.mean) != len(config.normalize.std) or not config.normalize.mean:
            raise _error(("normalize",), origins, "needs mean and std lists of the same, non-zero length.")
        if any(s <= 0 for s in config.normalize.std):
            raise _error(("normalize", "std"), origins, f"must be positive, got {config.normalize.std}.")
    if config.class_order is not None and len(set(config.class_order)) != len(config.class_order):
        raise _error(("class_order",), origins, "lists a class more than once.")
    for index, name in enumerate(config.logger):
        if name not in LOGGERS:
            hint = nearest(name, LOGGERS)
            suggestion = f" Did you mean {hint!r}?" if hint else ""
            valid = ", ".join(LOGGERS)
            raise _error(("logger", str(index)), origins, f"is {name!r}, not one of {valid}.{suggestion}")
    if len(set(config.logger)) != len(config.logger):
        raise _error(("logger",), origins, "lists a logger more than once.")
    if "tensorboard" in config.logger and importlib.util.find_spec("tensorboard") is None:
        raise _error(
            ("logger",),
            origins,
            "lists tensorboard, which is not installed: pip install 'libcontinual[tensorboard]'.",
        )


def check_run_name(name: str, origins: _Origins) -> None:
    """A run's name is one path component: it cannot place the run directory outside save_path."""
    if not name or name in (".", "..") or any(char in name for char in "/\\\0") or len(name) > 200:
        raise _error(
            ("name",),
            origins,
            f"must be one folder name (no '/', '\\', '..', at most 200 characters), got {name!r}: "
            "the run directory is save_path/<name>-<time>; set save_path to choose where it goes.",
        )


def classes_needed(config: ExperimentConfig) -> int:
    return config.init_cls_num + config.inc_cls_num * (config.task_num - 1)


def save_config(config: ExperimentConfig, path: Path) -> None:
    """Write the resolved config as YAML (it loads back into the same config)."""
    from libcontinual.files import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
