"""torch.distributed (torchrun, gloo on CPU, 2 processes): a 2-rank run equals a 1-process run with the
same global batch, rank 0 alone writes, every rank holds the same state between tasks, a killed rank
fails the run clearly and resume continues exactly; a bad environment is one clear error."""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import libcontinual
from conftest import TINY_CONFIG
from libcontinual import distributed
from libcontinual.cli import main as cli_main
from libcontinual.cli import plain_console, setup_logging
from libcontinual.errors import ConfigError

TESTS = Path(__file__).resolve().parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

# No BatchNorm (an MLP): each rank's shard then computes exactly what its rows of one process's batch
# compute, and only the order of the gradient sum differs. Batch 7 over 50 (or 60 with exemplars)
# samples gives shards of 4 and 3 and, at the end of an exemplar-free task, a last batch of 1 sample,
# which leaves rank 1 with an empty shard.
BASE = {
    **{key: value for key, value in TINY_CONFIG.items() if key != "method"},
    "dataset": {
        "name": "synthetic",
        "kwargs": {"num_classes": 6, "train_per_class": 25, "test_per_class": 9},
    },
    "batch_size": 7,
    "backbone": {"name": "mlp", "kwargs": {"input_size": 64, "hidden_sizes": [32]}},
}
METHODS = {
    "finetune": {"method": {"name": "finetune", "kwargs": {"ce_classes": "seen"}}},
    "replay": {
        "method": {"name": "replay"},
        "buffer": {"name": "linear", "kwargs": {"buffer_size": 10, "strategy": "herding"}},
    },
    "lwf": {"method": {"name": "lwf"}},
    "ewc": {
        "method": {"name": "ewc", "kwargs": {"lamda": 1000.0}}
    },  # the penalty in the all-reduced gradient
    "icarl": {  # herding on normalised features and NME class means, computed by rank 0 and sent
        "method": {"name": "icarl"},
        "buffer": {
            "name": "linear",
            "kwargs": {"buffer_size": 12, "strategy": "herding", "normalize_features": True},
        },
    },
    "packnet": {  # gradient masks and pruning act on the all-reduced gradient, identically on every rank
        "method": {"name": "packnet", "kwargs": {"train_epochs": 1.5, "retrain_epochs": 0.5}},
        "protocol": "task_il",
    },
}
METHODS["abd"] = {"method": {"name": "abd", "kwargs": {"generator_steps": 5}}}
if importlib.util.find_spec("quadprog") is not None:  # GEM's QP solver (the gem extra)
    METHODS["gem"] = {"method": {"name": "gem", "kwargs": {"n_memories": 20}}}


# Run on two ranks only (BatchNorm: not the computation of one process): CPG on a 1/16-width VGG16-BN,
# compacting and picking without goals (growth inside a task is refused under torchrun).
TWO_RANKS_ONLY = {
    "cpg": {
        "image_size": 32,
        "backbone": {"name": "vgg16_bn", "kwargs": {"width": 0.0625, "fc_features": 256}},
        "method": {
            "name": "cpg",
            "kwargs": {},
        },
        "optimizer": {"name": "SGD", "kwargs": {"lr": 0.1, "momentum": 0.9}},
        "protocol": "task_il",
    }
}

# Epoch losses agree to float rounding (the gradient summed in another order), except ABD's: the teacher
# of task 0 differs from one process's by 9e-8, and Adam, which divides each gradient by its running
# size, turns such noise in near-zero gradients of the generator into steps of its learning rate (the
# generator after task 0 differs by 3e-3, measured); its synthetic images then differ a little.
LOSS_TOLERANCE = {"abd": 5e-2}


def config_for(name: str, save_path: Path) -> dict:
    settings = METHODS[name] if name in METHODS else TWO_RANKS_ONLY[name]
    return {**copy.deepcopy(BASE), **copy.deepcopy(settings), "save_path": str(save_path)}


def torchrun(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS)}
    return subprocess.run(
        [*TORCHRUN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def only_run(save_path: Path) -> Path:
    (run_dir,) = [p for p in save_path.iterdir() if p.is_dir()]
    return run_dir


def epoch_losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["event"] == "epoch"]


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One torchrun job that runs every method's config (one process group, as a user's script would)."""
    root = tmp_path_factory.mktemp("distributed")
    files = []
    for name in [*METHODS, *TWO_RANKS_ONLY]:
        path = root / f"{name}.json"
        path.write_text(json.dumps(config_for(name, root / "two" / name)))
        files.append(str(path))
    job = torchrun(str(TESTS / "distributed_worker.py"), str(root), *files, cwd=root)
    assert job.returncode == 0, job.stderr[-4000:]
    return root, job


@pytest.mark.parametrize("name", list(METHODS))
def test_two_ranks_give_the_one_process_result(two_rank_runs, tmp_path, name):
    root, _ = two_rank_runs
    two = json.loads((only_run(root / "two" / name) / "results.json").read_text())
    one = libcontinual.run(config_for(name, tmp_path / "one")).results
    assert two["processes"] == 2 and one["processes"] == 1
    assert two["accuracy_matrix"] == one["accuracy_matrix"]
    assert epoch_losses(only_run(root / "two" / name)) == pytest.approx(
        epoch_losses(only_run(tmp_path / "one")), rel=LOSS_TOLERANCE.get(name, 1e-4), abs=1e-6
    )


def test_every_rank_ends_each_run_with_the_same_method_and_buffer_state(two_rank_runs):
    root, _ = two_rank_runs
    ranks = [json.loads((root / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert set(ranks[0]["states"]) == {*METHODS, *TWO_RANKS_ONLY}
    assert ranks[0]["states"] == ranks[1]["states"]  # exemplars, class means, teachers, GEM's memory


def test_cpg_forgets_nothing_on_two_ranks(two_rank_runs):
    root, _ = two_rank_runs
    results = json.loads((only_run(root / "two" / "cpg") / "results.json").read_text())
    assert results["summary"]["cnn_task_il"]["forgetting"] == 0.0
    matrix = results["accuracy_matrix"]["cnn_task_il"]
    assert all(matrix[i][j] == matrix[j][j] for i in range(3) for j in range(i + 1))


def test_only_rank_0_writes_into_the_run_directory(two_rank_runs):
    root, _ = two_rank_runs
    rank0, rank1 = (json.loads((root / f"rank-{r}.json").read_text())["writes"] for r in (0, 1))
    assert any("results.json" in write for write in rank0)  # the audit hook sees writes
    assert any("checkpoint-" in write for write in rank0)
    assert rank1 == []


@pytest.mark.parametrize("rank, level", [("0", logging.INFO), ("1", logging.WARNING)])
def test_the_command_line_logs_info_on_rank_0_only(monkeypatch, rank, level):
    monkeypatch.setenv("RANK", rank)
    logger = logging.getLogger("libcontinual")
    handlers, old_level = list(logger.handlers), logger.level
    try:
        setup_logging(plain_console(stderr=True), verbose=False)
        assert logger.level == level
    finally:
        logger.handlers[:], logger.level = handlers, old_level


# --------------------------------------------------------------------------- environment
def test_world_size_without_a_rendezvous_address_is_one_clear_error(monkeypatch, tmp_path, capsys):
    config = tmp_path / "run.json"
    config.write_text(json.dumps(config_for("finetune", tmp_path / "runs")))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    assert cli_main(["run", str(config)]) == 2
    message = capsys.readouterr().err
    assert "WORLD_SIZE=2" in message and "MASTER_ADDR" in message and "torchrun" in message
    assert "Traceback" not in message
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({"WORLD_SIZE": "two"}, "must be integers"),
        ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK=2 is not in"),
        ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "h"}, "MASTER_PORT is not"),
    ],
)
def test_bad_torchrun_environment_names_the_variable(environ, expected):
    with pytest.raises(ConfigError, match=expected):
        distributed.environment_ranks(environ)


def test_the_environment_of_torchrun_gives_the_ranks():
    environ = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    assert distributed.environment_ranks(environ) == distributed.Ranks(3, 4, 1)
    assert distributed.environment_ranks({}) == distributed.SINGLE


def test_more_processes_than_cuda_devices_is_one_clear_error():
    import torch

    ranks = distributed.Ranks(rank=2, world_size=3, local_rank=2)
    with pytest.raises(ConfigError, match="LOCAL_RANK=2 needs cuda:2 but there are 2"):
        distributed.check_devices(ranks, torch.device("cuda"), cuda_devices=2)
    assert distributed.check_devices(ranks, torch.device("cuda"), cuda_devices=4) == torch.device("cuda", 2)


def test_a_backend_that_cannot_run_here_names_the_key():
    import torch

    with pytest.raises(ConfigError, match="distributed.backend"):
        distributed.backend_for(torch.device("cpu"), "nccl")
    with pytest.raises(ConfigError, match="choose one of gloo, nccl, mpi"):
        distributed.backend_for(torch.device("cpu"), "tcp")
    assert distributed.backend_for(torch.device("cpu"), None) == "gloo"


def test_a_timeout_that_is_not_positive_names_the_key(tmp_path):
    config = {**config_for("finetune", tmp_path / "runs"), "distributed": {"timeout_minutes": 0}}
    with pytest.raises(ConfigError, match="distributed.timeout_minutes"):
        libcontinual.run(config)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("global_size, world", [(7, 2), (1, 2), (10, 3), (0, 2)])
def test_shards_are_disjoint_contiguous_and_cover_the_batch(global_size, world):
    bounds = [distributed.shard_bounds(global_size, distributed.Ranks(r, world)) for r in range(world)]
    covered = [i for start, stop in bounds for i in range(start, stop)]
    assert covered == list(range(global_size))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1


# --------------------------------------------------------------------------- a killed rank
def child_with_rank(parent: int, rank: int) -> int | None:
    """The pid of torchrun's worker with RANK=rank (torchrun's agent is ``parent``)."""
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(child)
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds torchrun's workers through /proc")
def test_a_killed_rank_fails_the_run_clearly_and_resume_continues_exactly(tmp_path):
    config = {**config_for("replay", tmp_path / "killed"), "epoch": 60, "checkpoint_every": 1}
    reference = {**config, "save_path": str(tmp_path / "whole")}
    (tmp_path / "killed.json").write_text(json.dumps(config))
    (tmp_path / "whole.json").write_text(json.dumps(reference))
    whole = torchrun("-m", "libcontinual", "run", "whole.json", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen(
        [*TORCHRUN, "-m", "libcontinual", "run", "killed.json"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    checkpoints = tmp_path / "killed"
    while time.monotonic() < deadline and not list(checkpoints.glob("*/checkpoints/checkpoint-*.pt"))[2:]:
        time.sleep(0.05)
    victim = child_with_rank(job.pid, 1)
    assert victim is not None, "rank 1 not found"
    os.kill(victim, signal.SIGKILL)
    _, stderr = job.communicate(timeout=240)
    assert job.returncode != 0
    assert "Another process of this distributed run stopped" in stderr
    run_dir = only_run(checkpoints)
    assert not (run_dir / "results.json").exists()

    resumed = torchrun("-m", "libcontinual", "resume", str(run_dir), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = json.loads((run_dir / "results.json").read_text())
    expected = json.loads((only_run(tmp_path / "whole") / "results.json").read_text())
    assert done["accuracy_matrix"] == expected["accuracy_matrix"]
    assert epoch_losses(run_dir) == epoch_losses(only_run(tmp_path / "whole"))


def test_cpg_growth_is_refused_under_torchrun_and_cpg_without_goals_is_not():
    from libcontinual.backbones import build_backbone
    from libcontinual.registry import METHODS as REGISTERED

    cpg = REGISTERED.get("cpg", "test")

    def method(**kwargs):
        backbone = build_backbone("vgg16_bn", width=0.0625, fc_features=256)
        return cpg(backbone=backbone, feat_dim=backbone.num_features, num_class=6, **kwargs)

    assert "torchrun" in method(goals=[50.0, 50.0, 50.0]).distributed_refusal()
    assert method().distributed_refusal() is None
