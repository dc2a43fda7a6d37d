from pathlib import Path

import pytest
import yaml

from libcontinual.config import ExperimentConfig, load_config, parse_override
from libcontinual.errors import ConfigError

BASE = """
dataset: cifar100
init_cls_num: 10
inc_cls_num: 10
task_num: 10
epoch: 5
backbone: {name: resnet32}
classifier: {name: finetune}
optimizer: {name: SGD, kwargs: {lr: 0.1, momentum: 0.9}}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_minimal_config_loads_with_libcontinual_vocabulary(tmp_path):
    config, path = load_config(write(tmp_path / "c.yaml", BASE))
    assert isinstance(config, ExperimentConfig)
    assert config.method.name == "finetune"  # `classifier` is the synonym of `method`
    assert config.dataset.name == "cifar100" and config.dataset.kwargs == {}
    assert config.optimizer.kwargs == {"lr": 0.1, "momentum": 0.9}
    assert config.first_task_epochs == 5
    assert path == (tmp_path / "c.yaml").resolve()


def test_includes_are_relative_recursive_and_the_including_file_wins(tmp_path):
    write(tmp_path / "headers" / "base.yaml", BASE + "seed: 1\nbatch_size: 32\n")
    write(tmp_path / "headers" / "data.yaml", "includes: [base.yaml]\nseed: 2\nimage_size: 32\n")
    write(tmp_path / "headers" / "opt.yaml", "optimizer: {kwargs: {lr: 0.01}}\nseed: 3\n")
    main = write(
        tmp_path / "exp" / "main.yaml",
        "includes: [../headers/data.yaml, ../headers/opt.yaml]\nbatch_size: 64\n",
    )
    config, _ = load_config(main)
    assert config.batch_size == 64  # main wins
    assert config.seed == 3  # later include wins over earlier
    assert config.image_size == 32  # from a nested include
    # deep merge: lr replaced, momentum kept from base
    assert config.optimizer.kwargs == {"lr": 0.01, "momentum": 0.9}
    assert config.optimizer.name == "SGD"


def test_include_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "includes: [b.yaml]\n")
    write(tmp_path / "b.yaml", "includes: [a.yaml]\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_missing_include_names_the_including_file(tmp_path):
    main = write(tmp_path / "main.yaml", "includes: [nope.yaml]\n" + BASE)
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist.*main\.yaml"):
        load_config(main)


def test_overrides_parse_yaml_scalars_and_nest(tmp_path):
    path = write(tmp_path / "c.yaml", BASE)
    config, _ = load_config(
        path, ["epoch=3", "optimizer.kwargs.lr=1e-3", "class_order=[3, 1, 2]", "deterministic=true", "name=x"]
    )
    assert config.epoch == 3
    assert config.optimizer.kwargs["lr"] == pytest.approx(1e-3)
    assert isinstance(config.optimizer.kwargs["lr"], float)
    assert config.class_order == [3, 1, 2]
    assert config.deterministic is True
    assert config.name == "x"


def test_override_of_a_component_given_as_a_string(tmp_path):
    config, _ = load_config(write(tmp_path / "c.yaml", BASE), ["dataset.kwargs.download=true"])
    assert config.dataset.name == "cifar100"
    assert config.dataset.kwargs == {"download": True}


def test_yaml_float_without_dot_is_a_float():
    assert parse_override("optimizer.kwargs.weight_decay=5e-4") == (
        ["optimizer", "kwargs", "weight_decay"],
        5e-4,
    )


@pytest.mark.parametrize("bad", ["epoch", "=3", "a..b=1"])
def test_malformed_override(bad):
    with pytest.raises(ConfigError, match="key=value"):
        parse_override(bad)


def test_unknown_key_names_file_key_and_nearest_valid_key(tmp_path):
    path = write(tmp_path / "c.yaml", BASE + "init_epochs: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path.resolve()) in message
    assert "'init_epochs'" in message and "Did you mean 'init_epoch'?" in message


def test_unknown_nested_key_is_reported_with_its_path(tmp_path):
    path = write(tmp_path / "c.yaml", BASE.replace("kwargs: {lr", "kwags: {lr"))
    with pytest.raises(ConfigError, match=r"'optimizer.kwags'.*Did you mean 'optimizer.kwargs'"):
        load_config(path)


def test_unknown_key_in_override_names_the_override(tmp_path):
    with pytest.raises(ConfigError, match=r"command-line override 'epochs=3'.*Did you mean 'epoch'"):
        load_config(write(tmp_path / "c.yaml", BASE), ["epochs=3"])


def test_error_names_the_included_file_that_set_the_key(tmp_path):
    write(tmp_path / "header.yaml", "batch_size: many\n")
    path = write(tmp_path / "main.yaml", "includes: [header.yaml]\n" + BASE)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str((tmp_path / "header.yaml").resolve()) in str(info.value)
    assert "'batch_size' must be an integer" in str(info.value)


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("epoch: 2.5", "'epoch' must be an integer"),
        ("epoch: true", "'epoch' must be an integer"),
        ("epoch: 0", "'epoch' must be at least 1"),
        ("batch_size: -4", "'batch_size' must be at least 1"),
        ("val_ratio: 1.5", r"'val_ratio' must lie in \[0, 1\)"),
        ("device: gpu", "'device' must be auto, cpu"),
        ("class_order: [1, 1, 2]", "more than once"),
        ("class_order: 5", "must be a list of integers"),
        ("augment: {brightness: 3}", r"'augment.brightness' must lie in \[0, 1\]"),
        ("normalize: {mean: [0.5], std: [0.1, 0.2]}", "same, non-zero length"),
    ],
)
def test_wrong_types_and_impossible_values(tmp_path, line, pattern):
    key = line.split(":")[0]
    base = "".join(f"{text}\n" for text in BASE.splitlines() if not text.startswith(f"{key}:"))
    with pytest.raises(ConfigError, match=pattern):
        load_config(write(tmp_path / "c.yaml", base + line + "\n"))


def test_missing_required_key_says_what_it_is(tmp_path):
    with pytest.raises(ConfigError, match=r"'task_num' is required \(Number of tasks"):
        load_config(write(tmp_path / "c.yaml", BASE.replace("task_num: 10\n", "")))


def test_classifier_and_method_together_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="both 'classifier' and 'method'"):
        load_config(write(tmp_path / "c.yaml", BASE + "method: {name: joint}\n"))


def test_invalid_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match="line 2"):
        load_config(write(tmp_path / "c.yaml", "epoch: 1\nfoo: [1, 2\n"))


def test_non_mapping_file(tmp_path):
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path / "c.yaml", "- a\n- b\n"))


def test_dict_source_and_keyword_overrides():
    data = yaml.safe_load(BASE)
    config, path = load_config(data, extra={"method": {"name": "joint"}, "epoch": 2})
    assert path is None
    assert config.method.name == "joint" and config.epoch == 2


def test_resolved_config_round_trips(tmp_path):
    from libcontinual.config import save_config

    config, _ = load_config(write(tmp_path / "c.yaml", BASE), ["optimizer.kwargs.lr=0.5"])
    save_config(config, tmp_path / "resolved.yaml")
    again, _ = load_config(tmp_path / "resolved.yaml")
    assert again == config
