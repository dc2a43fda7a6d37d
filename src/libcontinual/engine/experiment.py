"""From a validated config to a finished run: check, load data, build the scenario and model, train, save."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from libcontinual import distributed
from libcontinual.backbones.base import COMMON_BACKBONE_KWARGS
from libcontinual.config import ExperimentConfig, load_config, save_config
from libcontinual.data.augment import BatchAugment, Normalize
from libcontinual.data.defaults import dataset_defaults
from libcontinual.data.scenario import Scenario
from libcontinual.data.types import ClassificationData
from libcontinual.engine import builders
from libcontinual.engine.checkpoint import CheckpointStore, run_identity
from libcontinual.engine.loggers import logger_callbacks
from libcontinual.engine.run_dir import LOG_FORMAT, EarlyRecords, RunDirectory, provenance, reset_peak_memory
from libcontinual.engine.trainer import Callback, RunInterrupted, Trainer
from libcontinual.errors import ConfigError, LibContinualError, TrainingError
from libcontinual.methods.base import refuse_buffer
from libcontinual.registry import BACKBONES, BUFFERS, DATASETS, METHODS, SCENARIOS

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What ``libcontinual.run`` returns: the results dict (as in results.json) and the run directory."""

    run_dir: Path
    results: dict[str, Any]

    @property
    def accuracy_matrix(self) -> dict[str, list[list[float]]]:
        """Per-classifier accuracy matrices of one run; a multi-seed aggregate keeps them in seed-<s>/."""
        if "accuracy_matrix" not in self.results:
            raise ValueError(
                f"{self.run_dir} is a multi-seed aggregate: read each seed's matrix from "
                f"{self.run_dir}/seed-<s>/results.json, or use .summary for mean ± std"
            )
        return self.results["accuracy_matrix"]

    @property
    def summary(self) -> dict[str, dict[str, Any]]:
        return self.results["summary"]


def register_everything() -> None:
    """Import the built-in datasets, backbones, methods and buffers so that their registries are full."""
    import libcontinual.backbones
    import libcontinual.buffers
    import libcontinual.data.datasets
    import libcontinual.data.domain_scenarios
    import libcontinual.methods  # noqa: F401


def check_components(config: ExperimentConfig) -> None:
    """Fail before any work: every name exists and every kwarg is a parameter of its component."""
    builders.check_kwargs(
        DATASETS.get(config.dataset.name, "key 'dataset'"),
        config.dataset.kwargs,
        "dataset",
        "dataset",
        config.dataset.name,
    )
    builders.check_kwargs(
        SCENARIOS.get(config.scenario.name, "key 'scenario.name'"),
        config.scenario.kwargs,
        "scenario",
        "scenario",
        config.scenario.name,
    )
    builders.check_kwargs(
        BACKBONES.get(config.backbone.name, "key 'backbone.name'"),
        {k: v for k, v in config.backbone.kwargs.items() if k not in COMMON_BACKBONE_KWARGS},
        "backbone",
        "backbone",
        config.backbone.name,
    )
    method_class = METHODS.get(config.method.name, "key 'method.name'")
    builders.check_kwargs(method_class, config.method.kwargs, "method", "method", config.method.name)
    if method_class.exemplar_free:
        refuse_buffer(config.buffer, config.method.name)
    if config.buffer is not None:
        builders.check_kwargs(
            BUFFERS.get(config.buffer.name, "key 'buffer.name'"),
            config.buffer.kwargs,
            "buffer",
            "buffer",
            config.buffer.name,
        )
    elif method_class.requires_buffer:
        raise ConfigError(
            f"Method {config.method.name!r} needs exemplars: set 'buffer' (e.g. "
            "buffer: {name: linear, kwargs: {buffer_size: 2000, strategy: herding}})."
        )
    builders.optimizer_class(config.optimizer, "optimizer")
    if config.init_optimizer is not None:
        builders.optimizer_class(config.init_optimizer, "init_optimizer")
    for key in ("lr_scheduler", "init_lr_scheduler"):
        component = getattr(config, key)
        if component is not None:
            builders.scheduler_class(component, key)
    check_optimization_values(config)
    for key in ("lr_scheduler", "init_lr_scheduler"):
        component = getattr(config, key)
        if component is not None:
            builders.check_scheduler(component, key, max(config.epoch, config.first_task_epochs))


def check_optimization_values(config: ExperimentConfig) -> None:
    """Build each optimizer and scheduler once on a dummy parameter, so that a value torch rejects
    (``lr: -0.1``, ``momentum: abc``) fails before any folder or data exists, naming its key."""
    pairs = [("optimizer", config.optimizer, "lr_scheduler", config.lr_scheduler)]
    if config.init_optimizer is not None or config.init_lr_scheduler is not None:
        pairs.append(
            (
                "init_optimizer" if config.init_optimizer is not None else "optimizer",
                config.init_optimizer or config.optimizer,
                "init_lr_scheduler" if config.init_lr_scheduler is not None else "lr_scheduler",
                config.init_lr_scheduler or config.lr_scheduler,
            )
        )
    for optimizer_key, optimizer_config, scheduler_key, scheduler_config in pairs:
        optimizer = _built(optimizer_key, optimizer_config, builders.build_optimizer, [dummy_parameter()])
        if scheduler_config is not None:
            _built(scheduler_key, scheduler_config, builders.build_scheduler, optimizer)


def dummy_parameter() -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.zeros(1))


def _built(key: str, component: Any, build: Any, target: Any) -> Any:
    """``build(component, target, key)``; a value of the wrong kind (TypeError from inside torch, e.g.
    comparing a string with a number) becomes an error naming each value of ``key.kwargs``."""
    try:
        return build(component, target, key)
    except ConfigError as exc:
        if not isinstance(exc.__cause__, TypeError):
            raise
        values = ", ".join(f"{key}.kwargs.{k}={v!r}" for k, v in component.kwargs.items())
        raise ConfigError(
            f"Config key '{key}': {component.name} rejects its arguments ({exc.__cause__}); check the "
            f"type of each value: {values or '(none set)'}."
        ) from None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"Config key 'device' is {name!r} but CUDA is not available here. Use device: cpu or auto."
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"Config key 'device' is {name!r} but this machine has {torch.cuda.device_count()} CUDA "
            "device(s), numbered from 0."
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"Config key 'device' is {name!r} but Apple's MPS backend is not available here. "
            "Use device: cpu or auto."
        )
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_dataset(config: ExperimentConfig) -> ClassificationData:
    loader = DATASETS.get(config.dataset.name, "key 'dataset'")
    data = builders.call(
        loader, "dataset", data_root=config.data_root, image_size=config.image_size, **config.dataset.kwargs
    )
    data.validate()
    return data


def build_scenario(config: ExperimentConfig, data: ClassificationData) -> Scenario:
    factory = SCENARIOS.get(config.scenario.name, "key 'scenario.name'")
    return factory(
        data,
        init_cls_num=config.init_cls_num,
        inc_cls_num=config.inc_cls_num,
        task_num=config.task_num,
        class_order=config.class_order,
        order_seed=config.order_seed,
        val_ratio=config.val_ratio,
        seed=config.seed,
        **config.scenario.kwargs,
    )


def build_transforms(config: ExperimentConfig, data: ClassificationData) -> tuple[BatchAugment, Normalize]:
    """Dataset defaults, overridden by the config's ``augment`` and ``normalize``."""
    defaults = dataset_defaults(data.name)
    if config.normalize is not None:
        mean, std = config.normalize.mean, config.normalize.std
    elif "mean" in defaults:
        mean, std = defaults["mean"], defaults["std"]
    else:
        pixels = data.train_images.reshape(-1, data.train_images.shape[-1]).astype(np.float64) / 255.0
        mean, std = pixels.mean(axis=0).tolist(), pixels.std(axis=0).tolist()
    channels = data.image_shape[2]
    if len(mean) not in (1, channels):
        raise ConfigError(f"Config key 'normalize' has {len(mean)} channels but the images have {channels}.")
    augment = dict(defaults["augment"])
    augment.update({k: v for k, v in vars(config.augment).items() if v is not None})
    largest_side = max(data.image_shape[:2])
    if augment.get("crop_padding", 0) > largest_side:
        raise ConfigError(
            f"Config key 'augment.crop_padding' is {augment['crop_padding']} but the images are "
            f"{data.image_shape[0]}x{data.image_shape[1]}: pad by at most {largest_side} pixels."
        )
    return BatchAugment(mean, std, **augment), Normalize(mean, std)


def build_method(config: ExperimentConfig, scenario: Scenario, in_channels: int) -> Any:
    from libcontinual.backbones import build_backbone

    backbone = builders.call(
        build_backbone, "backbone", config.backbone.name, in_channels=in_channels, **config.backbone.kwargs
    )
    method_class = METHODS.get(config.method.name, "key 'method.name'")
    return builders.call(
        method_class,
        "method",
        backbone=backbone,
        feat_dim=backbone.num_features,
        num_class=scenario.num_classes,
        **config.method.kwargs,
    )


def build_buffer(config: ExperimentConfig) -> Any:
    if config.buffer is None:
        return None
    return builders.call(
        BUFFERS.get(config.buffer.name, "key 'buffer.name'"), "buffer", **config.buffer.kwargs
    )


def run_experiment(
    config: ExperimentConfig,
    config_path: Path | None = None,
    callbacks: Sequence[Callback] = (),
    resume_dir: Path | None = None,
    run_path: Path | None = None,
    trust: bool = False,
) -> RunResult:
    """Run one experiment end to end and write its run directory.

    With ``resume_dir`` (or ``config.resume``), continue that run from its newest valid checkpoint.
    ``run_path`` names the new run directory exactly (multi-seed runs use ``seed-<s>``). ``trust`` also
    loads checkpoints of the older format, whose loading can run code (see :func:`resume`). Under
    torchrun every process calls this; rank 0 alone writes (``callbacks`` run on rank 0 only).
    """
    config_dir = config_path.parent if config_path is not None else None
    register_everything()
    config = dataclasses.replace(config, plugins=builders.resolve_plugins(config.plugins, config_dir))
    builders.load_plugins(config.plugins, None)
    check_components(config)
    with distributed_session(config) as device, torch_settings(config), EarlyRecords.capture():
        return _run(config, callbacks, resume_dir, run_path, device, trust)


@contextlib.contextmanager
def distributed_session(config: ExperimentConfig) -> Iterator[torch.device]:
    """The device of this process; under torchrun, inside the process group (joined here unless an
    outer session, e.g. of a multi-seed run, already has it). A collective that fails because another
    rank stopped becomes one clear error."""
    ranks = distributed.environment_ranks()
    device = distributed.check_devices(ranks, resolve_device(config.device), torch.cuda.device_count())
    distributed.backend_for(device, config.distributed.backend)  # a wrong backend fails before any work
    settings = config.distributed
    if settings.timeout_minutes <= 0:
        raise ConfigError(
            f"Config key 'distributed.timeout_minutes' is {settings.timeout_minutes}; it must be positive."
        )
    with distributed.process_group(ranks, device, settings.backend, settings.timeout_minutes):
        try:
            yield device
        except (RuntimeError, OSError) as exc:
            if ranks.active and distributed.is_peer_failure(exc):
                raise distributed.lost_peer(exc) from None
            raise


def _run(
    config: ExperimentConfig,
    callbacks: Sequence[Callback],
    resume_dir: Path | None,
    run_path: Path | None,
    device: torch.device,
    trust: bool = False,
) -> RunResult:
    ranks = distributed.current()
    if resume_dir is None and config.resume:
        resume_dir = find_unfinished_run(config)
    reset_peak_memory()  # the recorded peak is this run's, not an earlier run's in the same process
    if resume_dir is None and ranks.is_main:
        check_save_path(config.save_path)
    data = load_dataset(config)
    scenario = build_scenario(config, data)
    seed_everything(config.seed)
    method = build_method(config, scenario, data.image_shape[2])
    check_backbone_accepts(method.backbone, config, data)
    buffer = build_buffer(config)
    train_transform, test_transform = build_transforms(config, data)
    check_disk_space(config.save_path, method, scenario)
    if not ranks.is_main:
        return _run_other_rank(config, scenario, method, buffer, train_transform, test_transform, device)

    if resume_dir is None:
        if run_path is None:
            Path(config.save_path).mkdir(parents=True, exist_ok=True)
            run_dir = RunDirectory.create(config.save_path, config.name or config.method.name)
        else:
            run_path.mkdir(parents=True)
            run_dir = RunDirectory(run_path)
        save_config(config, run_dir.config_path)
    else:
        run_dir = RunDirectory(resume_dir)
    run_dir.lock()
    if resume_dir is not None and run_dir.results_path.exists():  # checked again under the lock
        run_dir.unlock()
        raise ConfigError(
            f"Run {run_dir.path} has already finished (results.json exists); nothing to resume."
        )
    try:
        identity = run_identity(run_dir.run_id(), config.to_dict())
    except OSError as exc:
        run_dir.unlock()
        raise ConfigError(f"Cannot write the run id into {run_dir.identity_path}: {exc}") from None
    store = CheckpointStore(
        run_dir.path / "checkpoints", keep=config.keep_checkpoints, identity=identity, trust=trust
    )
    run_dir.attach_log()
    try:
        checkpoint = None
        if resume_dir is not None:
            checkpoint = load_for_resume(store, run_dir)
        processes = run_dir.record_process(resumed=resume_dir is not None)
        distributed.broadcast_object((str(run_dir.path), checkpoint))
        logger.info("run directory %s", run_dir.path)
        logger.info(
            "this process: git commit %s (process %d of the run)", processes[-1]["git_commit"], len(processes)
        )
        logger.info(
            "dataset %s: %d classes, %d train / %d test images of %s; %d tasks, class order %s",
            data.name,
            data.num_classes,
            len(data.train_labels),
            len(data.test_labels),
            "x".join(map(str, data.image_shape)),
            len(scenario.tasks),
            scenario.class_order,
        )
        if ranks.active:
            logger.info(
                "torch.distributed: %d processes (%s); global batch %d, %s per rank",
                ranks.world_size,
                distributed.backend_for(device, config.distributed.backend),
                config.batch_size,
                "/".join(map(str, distributed.shard_sizes(config.batch_size, ranks.world_size))),
            )
        trainer = Trainer(
            config,
            scenario,
            method,
            buffer,
            train_transform,
            test_transform,
            device,
            [
                MetricsFile(run_dir),
                MethodArtifacts(run_dir),
                *logger_callbacks(config, run_dir.path),
                *callbacks,
            ],
            checkpoints=store,
            metrics_offset=run_dir.metrics_size,
        )
        with stop_on_signals(trainer):
            results = trainer.fit(checkpoint)
        results = {
            "config": config.to_dict(),
            "protocol": protocol(config, data, scenario),
            "test_sizes": trainer.test_sizes(),
            **results,
            "processes": ranks.world_size,
            "fast_path": trainer.fast.describe(),
            "provenance": provenance(),
            "process_provenance": processes,
        }
        run_dir.write_results(results)
        logger.info("results written to %s", run_dir.results_path)
        distributed.barrier()
    except RunInterrupted as stop:
        logger.warning(
            "stopped by %s after writing a checkpoint; continue with: libcontinual resume %s",
            stop,
            run_dir.path,
        )
        raise
    except OSError as exc:
        peer_failed = ranks.active and distributed.is_peer_failure(exc)
        error = distributed.lost_peer(exc) if peer_failed else storage_error(exc, run_dir, store)
        run_dir.detach_log()
        log_failure(run_dir.log_path, error)
        raise error from None
    except BaseException as exc:
        run_dir.detach_log()
        peer_failed = ranks.active and isinstance(exc, RuntimeError) and distributed.is_peer_failure(exc)
        log_failure(run_dir.log_path, distributed.lost_peer(exc) if peer_failed else exc)
        raise
    finally:
        run_dir.detach_log()
        run_dir.unlock()
    return RunResult(run_dir=run_dir.path, results=results)


def _run_other_rank(
    config: ExperimentConfig,
    scenario: Scenario,
    method: Any,
    buffer: Any,
    train_transform: BatchAugment,
    test_transform: Normalize,
    device: torch.device,
) -> RunResult:
    """A rank other than 0: the same training, nothing written. Rank 0 sends the run directory's path
    and, on resume, the checkpoint it loaded (so every rank continues from the same one)."""
    path, checkpoint = distributed.broadcast_object(None)
    trainer = Trainer(config, scenario, method, buffer, train_transform, test_transform, device)
    with stop_on_signals(trainer):
        results = trainer.fit(checkpoint)
    distributed.barrier()
    return RunResult(run_dir=Path(path), results=results)


def storage_error(exc: OSError, run_dir: RunDirectory, store: CheckpointStore) -> TrainingError:
    """A failed write (disk full, file-size limit, read-only folder) as one message: the file, the reason,
    the checkpoint that is intact (checkpoints are written atomically) and the command to continue."""
    path = exc.filename or "a file of the run directory"
    checkpoints = store.paths()
    intact = (
        f"the last checkpoint ({checkpoints[-1]}) is intact"
        if checkpoints
        else "no checkpoint was written yet, so the run will start again"
    )
    return TrainingError(
        f"Cannot write {path}: {exc.strerror or exc}. Training stopped; {intact}. Free space or make "
        f"the folder writable, then continue with: libcontinual resume {run_dir.path}"
    )


def log_failure(log_path: Path, exc: BaseException) -> None:
    """Write why a run ended into its log.txt (the console shows the same message once, from the CLI):
    the user's error as one line, anything else with its traceback."""
    if isinstance(exc, LibContinualError):
        record = logging.makeLogRecord({"levelname": "ERROR", "name": __name__, "msg": f"run failed: {exc}"})
    elif isinstance(exc, KeyboardInterrupt):
        record = logging.makeLogRecord({"levelname": "WARNING", "name": __name__, "msg": "run interrupted"})
    else:
        record = logging.makeLogRecord(
            {
                "levelname": "ERROR",
                "name": __name__,
                "msg": f"run failed: {type(exc).__name__}: {exc}",
                "exc_info": (type(exc), exc, exc.__traceback__),
            }
        )
    with contextlib.suppress(OSError), log_path.open("a", encoding="utf-8") as handle:
        handle.write(logging.Formatter(LOG_FORMAT).format(record) + "\n")


class UntrustedCode(ConfigError):
    """Resuming would import code named by a run directory's config.yaml (``plugins``)."""

    def __init__(self, run_dir: Path, plugins: list[str]) -> None:
        self.plugins = plugins
        super().__init__(
            f"Run {run_dir} lists plugins in its config.yaml ({', '.join(plugins)}); resuming imports them, "
            "which runs their code. If you trust this run directory, resume it with "
            f"'libcontinual resume --trust {run_dir}' (Python: resume(..., trust=True))."
        )


def run_plugins(run_dir: str | Path) -> list[str]:
    """The plugins a run directory's config.yaml would import on resume (no code runs)."""
    config, _ = load_config(Path(run_dir) / "config.yaml")
    return list(config.plugins)


def load_for_resume(store: CheckpointStore, run_dir: RunDirectory) -> dict[str, Any] | None:
    """The newest valid checkpoint, with metrics.jsonl cut back to what that checkpoint had seen."""
    loaded = store.load_latest()
    if loaded is None:
        logger.warning("no valid checkpoint in %s: starting the run again from the beginning", store.folder)
        run_dir.truncate_metrics(0)
        return None
    checkpoint, path = loaded
    logger.info("resuming from %s (task %d)", path.name, checkpoint["task"])
    run_dir.truncate_metrics(checkpoint["metrics_offset"])
    return checkpoint


def find_unfinished_run(config: ExperimentConfig) -> Path | None:
    """The newest run directory of this config's name under save_path without results.json."""
    root = Path(config.save_path)
    prefix = f"{config.name or config.method.name}-"
    candidates = [
        p
        for p in root.glob(f"{prefix}*")
        if p.is_dir() and (p / "config.yaml").exists() and not (p / "results.json").exists()
    ]
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None


def check_backbone_accepts(
    backbone: torch.nn.Module, config: ExperimentConfig, data: ClassificationData
) -> None:
    """One forward pass on blank images of the dataset's shape, so a mismatch fails before training."""
    height, width, channels = data.image_shape
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            backbone.forward_features(torch.zeros(2, channels, height, width))
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"Backbone {config.backbone.name!r} cannot take the images of dataset {data.name!r} "
            f"({channels}x{height}x{width}): {exc}. Adjust 'backbone.kwargs' or 'image_size'."
        ) from None
    finally:
        backbone.train(was_training)


def existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest existing parent folder."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_save_path(save_path: str) -> None:
    """save_path must be (or be creatable as) a writable folder. Nothing is created here: a run that
    fails before training (missing data, bad values) leaves no empty save_path behind."""
    root = Path(save_path)
    existing = existing_ancestor(root)
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "not a folder", str(existing))
        if existing == root.absolute():
            with tempfile.NamedTemporaryFile(dir=root, prefix=".write-test-"):
                pass
        elif not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(13, "permission denied", str(existing))
    except OSError as exc:
        raise ConfigError(
            f"Config key 'save_path': cannot write in {root} ({exc.strerror or exc}). "
            "Choose a writable folder."
        ) from None


def check_disk_space(save_path: str, method: torch.nn.Module, scenario: Scenario) -> None:
    """Refuse to start when save_path cannot hold a checkpoint (model, optimizer state and task data)."""
    parameter_bytes = sum(p.numel() * p.element_size() for p in method.parameters())
    largest_task = max(task.train_images.numel() for task in scenario.tasks)
    needed = 4 * parameter_bytes + 2 * largest_task + 16 * 2**20
    free = shutil.disk_usage(existing_ancestor(Path(save_path))).free
    if free < needed:
        raise ConfigError(
            f"Config key 'save_path': {save_path} has {free / 2**20:.0f} MiB free but a checkpoint "
            f"of this run needs about {needed / 2**20:.0f} MiB. Free some space or choose another save_path."
        )


@contextlib.contextmanager
def torch_settings(config: ExperimentConfig) -> Iterator[None]:
    """Thread count and deterministic algorithms for the run; the caller's settings come back afterwards."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


@contextlib.contextmanager
def stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """SIGINT/SIGTERM ask the trainer to checkpoint and stop after the current batch (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum: int, frame: Any) -> None:
        trainer.request_stop(signal.Signals(signum).name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def protocol(config: ExperimentConfig, data: ClassificationData, scenario: Scenario) -> dict[str, Any]:
    """The facts two runs must share to be compared."""
    return {
        "dataset": data.name,
        "image_shape": list(data.image_shape),
        "init_cls_num": config.init_cls_num,
        "inc_cls_num": config.inc_cls_num,
        "task_num": config.task_num,
        "evaluation": config.protocol,
        "backbone": config.backbone.name,
        "backbone_kwargs": config.backbone.kwargs,
        **scenario.describe(),
    }


class MetricsFile(Callback):
    """Appends one JSON line per epoch, evaluation and task to metrics.jsonl and logs a summary line."""

    def __init__(self, run_dir: RunDirectory) -> None:
        self.run_dir = run_dir

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.run_dir.append_metrics(record)
        logger.info(
            "task %d epoch %d: loss %.4f, train acc %.2f%%, %.0f img/s",
            record["task"],
            record["epoch"],
            record["loss"],
            record["train_accuracy"],
            record["images_per_second"] or 0.0,
        )

    def on_evaluation(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.run_dir.append_metrics(record)

    def on_task_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.run_dir.append_metrics(record)
        for name, value in record["accuracy_after_task"].items():
            logger.info("after task %d: %s accuracy %.2f%%", record["task"], name, value)


class MethodArtifacts(Callback):
    """After each task, the method's ``write_artifacts(folder, task_index)`` writes its own files into the
    run directory (e.g. ABD's grid of synthetic images in ``dreams/``)."""

    def __init__(self, run_dir: RunDirectory) -> None:
        self.run_dir = run_dir

    def on_task_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        trainer.method.write_artifacts(self.run_dir.path, record["task"])
