"""Property: whatever a config says, a run either succeeds or stops with a clear user error."""

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import libcontinual
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


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.tuples(st.sampled_from(PATHS), VALUES, st.booleans()), min_size=1, max_size=3))
def test_any_config_gives_a_run_or_a_clear_error(tmp_path, mutations):
    config = dict(VALID, save_path=str(tmp_path / "runs"))
    for path, value, delete in mutations:
        config = mutate(config, path, value, delete)
    try:
        result = libcontinual.run(config)
    except LibContinualError as exc:
        message = str(exc)
        assert message and "Traceback" not in message
        return
    assert result.results["accuracy_matrix"]


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
