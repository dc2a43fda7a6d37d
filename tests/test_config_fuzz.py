"""Property: whatever a config says, a run either succeeds or stops with a clear user error.

Generated configs are mostly plausible (a valid alternative value per key, sometimes junk), so that most
of them pass validation and reach the builders, where the interesting failures are; the malformed inputs
of issue 20 are fixed examples below.
"""

import copy
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import libcontinual
from libcontinual.engine import experiment
from libcontinual.errors import LibContinualError

VALID = {
    "dataset": {"name": "synthetic", "kwargs": {"num_classes": 4, "train_per_class": 6, "test_per_class": 3}},
    "image_size": 8,
    "init_cls_num": 2,
    "inc_cls_num": 2,
    "task_num": 2,
    "epoch": 1,
    "batch_size": 8,
    "backbone": {"name": "mlp", "kwargs": {"input_size": 64, "hidden_sizes": [8]}},
    "method": {"name": "finetune"},
    "optimizer": {"name": "SGD", "kwargs": {"lr": 0.1}},
    "device": "cpu",
}

PATHS = [
    ("dataset",),
    ("dataset", "name"),
    ("dataset", "kwargs"),
    ("dataset", "kwargs", "num_classes"),
    ("dataset", "kwargs", "train_per_class"),
    ("image_size",),
    ("init_cls_num",),
    ("inc_cls_num",),
    ("task_num",),
    ("epoch",),
    ("init_epoch",),
    ("batch_size",),
    ("eval_batch_size",),
    ("backbone",),
    ("backbone", "name"),
    ("backbone", "kwargs"),
    ("backbone", "kwargs", "hidden_sizes"),
    ("backbone", "kwargs", "input_size"),
    ("method",),
    ("method", "name"),
    ("method", "kwargs"),
    ("optimizer",),
    ("optimizer", "name"),
    ("optimizer", "kwargs", "lr"),
    ("optimizer", "kwargs", "momentum"),
    ("lr_scheduler",),
    ("class_order",),
    ("order_seed",),
    ("seed",),
    ("device",),
    ("data_root",),
    ("plugins",),
    ("normalize",),
    ("augment",),
    ("augment", "crop_padding"),
    ("val_ratio",),
    ("val_per_epoch",),
    ("checkpoint_every",),
    ("keep_checkpoints",),
    ("buffer",),
    ("num_threads",),
    ("unknown_key",),
    ("optimizer", "unknown"),
    ("scenario",),
    ("includes",),
    ("classifier",),
]

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(
        [
            "resnet32",
            "SGD",
            "cpu",
            "cuda",
            "missing/file.yaml",
            "plugin.py",
            "MultiStepLR",
            "image_folder",
            "cifar10",
            "mnist",
            "joint",
        ]
    ),
    st.lists(st.integers(min_value=-2, max_value=6), max_size=5),
    st.dictionaries(
        st.sampled_from(["name", "kwargs", "lr", "mean", "std", "milestones", "x"]),
        st.one_of(st.integers(-1, 3), st.text(max_size=4), st.lists(st.floats(0, 1), max_size=3)),
        max_size=3,
    ),
)


def mutate(config: dict, path: tuple[str, ...], value, delete: bool) -> dict:
    config = copy.deepcopy(config)
    node = config
    for key in path[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    if delete:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return config


# Valid alternatives per key: most mutations keep the config meaningful, so validation passes and the
# run reaches the builders (dataset, scenario, backbone, method, buffer, optimizer, scheduler).
PLAUSIBLE = {
    ("dataset", "kwargs", "num_classes"): [4, 6, 3],
    ("dataset", "kwargs", "train_per_class"): [4, 6, 10],
    ("image_size",): [8, 8, 4, None],
    ("init_cls_num",): [1, 2, 3],
    ("inc_cls_num",): [1, 2],
    ("task_num",): [1, 2, 3],
    ("epoch",): [1, 2],
    ("init_epoch",): [None, 1, 2],
    ("batch_size",): [4, 8, 16],
    ("eval_batch_size",): [4, 64],
    ("backbone", "kwargs", "hidden_sizes"): [[8], [4, 4], [16]],
    ("backbone",): [{"name": "resnet8"}, {"name": "mlp", "kwargs": {"input_size": 64, "hidden_sizes": [6]}}],
    ("method",): [{"name": "finetune"}, {"name": "lwf"}, {"name": "ewc"}, {"name": "joint"}],
    ("optimizer",): [
        {"name": "SGD", "kwargs": {"lr": 0.05, "momentum": 0.9}},
        {"name": "Adam", "kwargs": {"lr": 0.001, "betas": [0.9, 0.99]}},
    ],
    ("optimizer", "kwargs", "lr"): [0.01, 0.1, 1],
    ("lr_scheduler",): [
        None,
        {"name": "StepLR", "kwargs": {"step_size": 1}},
        {"name": "MultiStepLR", "kwargs": {"milestones": [1], "gamma": 0.5}},
        {"name": "CosineAnnealingLR", "kwargs": {"T_max": 2}},
    ],
    ("class_order",): [None, [3, 2, 1, 0], [0, 1, 2, 3]],
    ("order_seed",): [0, 1993],
    ("seed",): [0, 7, 123],
    ("augment",): [{"crop_padding": 1, "horizontal_flip": True}, {"brightness": 0.2}, {}],
    ("normalize",): [None, {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}],
    ("val_ratio",): [0.0, 0.25],
    ("val_per_epoch",): [0, 1],
    ("checkpoint_every",): [0, 1],
    ("keep_checkpoints",): [1, 2],
    ("buffer",): [None, {"name": "linear", "kwargs": {"buffer_size": 8, "strategy": "random"}}],
    ("name",): ["fuzz", "a-b_c"],
    ("max_loss",): [None, 1.0e6],
}
JUNK = [
    None,
    True,
    -3,
    0,
    10**12,
    float("nan"),
    "",
    "16",
    "[/x]",
    "../x",
    [],
    ["a", "b"],
    {"name": "x"},
    {"kwargs": {}},
]


def generate(rng: random.Random, save_path: str) -> dict:
    """VALID with one to three keys changed: three times in four a valid alternative, else junk."""
    config = dict(VALID, save_path=save_path)
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.75:
            path = rng.choice(list(PLAUSIBLE))
            config = mutate(config, path, copy.deepcopy(rng.choice(PLAUSIBLE[path])), delete=False)
        else:
            path = rng.choice(PATHS)
            config = mutate(config, path, copy.deepcopy(rng.choice(JUNK)), delete=rng.random() < 0.2)
    return config


def outcome(config: dict) -> str:
    """'ok', or 'error' with a clear user error; anything else fails the test."""
    try:
        result = libcontinual.run(config)
    except LibContinualError as exc:
        message = str(exc)
        assert message and "Traceback" not in message
        return "error"
    assert result.results["accuracy_matrix"]
    return "ok"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rng=st.randoms(use_true_random=False))
def test_any_config_gives_a_run_or_a_clear_error(tmp_path, rng):
    outcome(generate(rng, str(tmp_path / "runs")))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.tuples(st.sampled_from(PATHS), VALUES, st.booleans()), min_size=1, max_size=3))
def test_any_junk_gives_a_run_or_a_clear_error(tmp_path, mutations):
    config = dict(VALID, save_path=str(tmp_path / "runs"))
    for path, value, delete in mutations:
        config = mutate(config, path, value, delete)
    outcome(config)


class Reached(Exception):
    """Raised where the run starts to build its dataset: validation passed."""


def test_most_generated_configs_pass_validation_and_reach_the_builders(tmp_path, monkeypatch):
    def reached(config):
        raise Reached

    monkeypatch.setattr(experiment, "load_dataset", reached)
    counts = {"reached": 0, "rejected": 0}
    for seed in range(60):
        config = generate(random.Random(seed), str(tmp_path / "runs"))
        try:
            libcontinual.run(config)
        except Reached:
            counts["reached"] += 1
        except LibContinualError:
            counts["rejected"] += 1
    assert counts["reached"] >= 0.6 * 60, counts


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("backbone", "kwargs", "hidden_sizes"), [-3]),
        (("dataset", "kwargs", "num_classes"), 0),
        (("optimizer", "kwargs", "lr"), -1.0),
        (("optimizer", "kwargs", "momentum"), "fast"),
        (("lr_scheduler",), {"name": "StepLR", "kwargs": {}}),
        (("plugins",), ["does/not/exist.py"]),
        (("data_root",), 5),
    ],
)
def test_known_bad_values_are_config_errors(tmp_path, path, value):
    config = mutate(dict(VALID, save_path=str(tmp_path / "runs")), path, value, delete=False)
    with pytest.raises(LibContinualError):
        libcontinual.run(config)


# --------------------------------------------------------------------------- issue 20's malformed inputs
# Each was a traceback, a hang or a silently wrong run; each must now be one clear error naming the key.
MALFORMED = [
    (("name",), "/abs/x", "one folder name"),
    (("name",), "../x", "one folder name"),
    (("name",), "a/b", "one folder name"),
    (("backbone", "kwargs", "hidden_sizes"), "16", r"hidden_sizes' must be a list of integers"),
    (("lr_scheduler",), {"name": "MultiStepLR", "kwargs": {"milestones": ["a", "b"]}}, "list of integers"),
    (("dataset", "kwargs", "num_classes"), 10**12, "not enough memory"),
    (("dataset", "kwargs", "train_per_class"), 10**11, "not enough memory"),
    (("backbone", "kwargs", "hidden_sizes"), [10**11], "not enough memory"),
    (("image_size",), 10**6, r"'image_size' must lie in \[1, 4096\]"),
    (("augment", "crop_padding"), 10**9, "crop_padding' is 1000000000 but the images are 8x8"),
    (("lr_scheduler",), {"name": "StepLR", "kwargs": {"step_size": 0}}, "lr_scheduler.*ZeroDivisionError"),
    (("lr_scheduler",), {"name": "CosineAnnealingLR", "kwargs": {"T_max": 0}}, "lr_scheduler.*T_max"),
    (("plugins",), [""], r"'plugins.0' is empty"),
    (
        ("class_order",),
        [
            [
                [
                    [
                        [
                            [
                                [
                                    [
                                        [
                                            [
                                                [
                                                    [
                                                        [
                                                            [
                                                                [
                                                                    [
                                                                        [
                                                                            [
                                                                                [
                                                                                    [
                                                                                        [
                                                                                            [
                                                                                                [
                                                                                                    [
                                                                                                        [
                                                                                                            [
                                                                                                                [
                                                                                                                    [
                                                                                                                        [
                                                                                                                            [
                                                                                                                                [
                                                                                                                                    [
                                                                                                                                        [
                                                                                                                                            [
                                                                                                                                                [
                                                                                                                                                    [
                                                                                                                                                        [
                                                                                                                                                            [
                                                                                                                                                                [
                                                                                                                                                                    [
                                                                                                                                                                        [
                                                                                                                                                                            [
                                                                                                                                                                                [
                                                                                                                                                                                    [
                                                                                                                                                                                        [
                                                                                                                                                                                            [
                                                                                                                                                                                                [
                                                                                                                                                                                                    [
                                                                                                                                                                                                        [
                                                                                                                                                                                                            [
                                                                                                                                                                                                                [
                                                                                                                                                                                                                    [
                                                                                                                                                                                                                        1
                                                                                                                                                                                                                    ]
                                                                                                                                                                                                                ]
                                                                                                                                                                                                            ]
                                                                                                                                                                                                        ]
                                                                                                                                                                                                    ]
                                                                                                                                                                                                ]
                                                                                                                                                                                            ]
                                                                                                                                                                                        ]
                                                                                                                                                                                    ]
                                                                                                                                                                                ]
                                                                                                                                                                            ]
                                                                                                                                                                        ]
                                                                                                                                                                    ]
                                                                                                                                                                ]
                                                                                                                                                            ]
                                                                                                                                                        ]
                                                                                                                                                    ]
                                                                                                                                                ]
                                                                                                                                            ]
                                                                                                                                        ]
                                                                                                                                    ]
                                                                                                                                ]
                                                                                                                            ]
                                                                                                                        ]
                                                                                                                    ]
                                                                                                                ]
                                                                                                            ]
                                                                                                        ]
                                                                                                    ]
                                                                                                ]
                                                                                            ]
                                                                                        ]
                                                                                    ]
                                                                                ]
                                                                            ]
                                                                        ]
                                                                    ]
                                                                ]
                                                            ]
                                                        ]
                                                    ]
                                                ]
                                            ]
                                        ]
                                    ]
                                ]
                            ]
                        ]
                    ]
                ]
            ]
        ],
        "nests",
    ),
]
MALFORMED_IDS = [f"{'.'.join(path)}={str(value)[:20]}" for path, value, _ in MALFORMED]


@pytest.mark.parametrize(("path", "value", "pattern"), MALFORMED, ids=MALFORMED_IDS)
def test_malformed_values_are_clear_errors(tmp_path, path, value, pattern):
    config = mutate(dict(VALID, save_path=str(tmp_path / "runs")), path, value, delete=False)
    with pytest.raises(LibContinualError, match=pattern):
        libcontinual.run(config)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.skipif(
    __import__("torch").backends.mps.is_available(), reason="this machine has MPS: device mps is valid"
)
def test_mps_without_mps_is_a_config_error(tmp_path):
    with pytest.raises(LibContinualError, match="MPS backend is not available"):
        libcontinual.run(dict(VALID, save_path=str(tmp_path / "runs"), device="mps"))


def _yaml_config(tmp_path: Path, extra: str) -> Path:
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(dict(VALID, save_path=str(tmp_path / "runs"))) + extra)
    return path


def test_a_key_given_twice_is_an_error_with_both_lines(tmp_path):
    path = _yaml_config(tmp_path, "epoch: 3\n")
    with pytest.raises(LibContinualError, match=r"found the key 'epoch' twice \(first at line \d+\)"):
        libcontinual.run(path)


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nmethod: {name: finetune, kwargs: {x: *a9}}\n")
    with pytest.raises(LibContinualError, match="expands to more than 200000 values"):
        libcontinual.run(path)


def test_nesting_too_deep_for_the_yaml_reader_is_an_error(tmp_path):
    path = _yaml_config(tmp_path, "class_order: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(LibContinualError, match="nests lists or mappings too deeply"):
        libcontinual.run(path)


def test_an_npz_label_outside_the_classes_without_class_names_is_an_error(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (8, 8, 8, 3), dtype=np.uint8)
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    for stray, pattern in ((10**12, "class 3 has no training image"), (7, "class 3 has no training image")):
        path = tmp_path / f"d{stray}.npz"
        np.savez(
            path, x_train=images, y_train=np.where(labels == 3, stray, labels), x_test=images, y_test=labels
        )
        config = dict(VALID, save_path=str(tmp_path / "runs"), dataset="npz", data_root=str(path))
        with pytest.raises(LibContinualError, match=pattern):
            libcontinual.run(config)
    path = tmp_path / "test_stray.npz"
    np.savez(path, x_train=images, y_train=labels, x_test=images, y_test=np.where(labels == 3, 9, labels))
    config = dict(VALID, save_path=str(tmp_path / "runs"), dataset="npz", data_root=str(path))
    with pytest.raises(LibContinualError, match="label 9 at index 6 is not a training class"):
        libcontinual.run(config)


def test_the_cli_prints_user_text_literally(tmp_path):
    """rich markup in a key or value ('[/x]' crashed the printer, '[red]' vanished) is printed as is."""
    path = _yaml_config(tmp_path, "'a[/x]': 1\n")
    run = subprocess.run(
        [sys.executable, "-m", "libcontinual.cli", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr and "'a[/x]' is not a valid key" in " ".join(run.stderr.split())
    path.write_text(
        path.read_text().replace("'a[/x]': 1\n", "logger: ['[red]x[/red]', 'libcontinual[report]']\n")
    )
    run = subprocess.run(
        [sys.executable, "-m", "libcontinual.cli", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "'[red]x[/red]'" in run.stderr, run.stderr
