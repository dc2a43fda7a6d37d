"""Backbone contract (parametrised over the whole registry) and growable heads."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest
import torch
from torch import nn

from libcontinual.backbones import Backbone, CosineLinear, IncrementalLinear, build_backbone
from libcontinual.errors import ConfigError
from libcontinual.registry import BACKBONES

INPUT_SHAPES = {"mlp": (1, 28, 28)}  # (C, H, W) per backbone; the rest take CIFAR-sized images
DEFAULT_SHAPE = (3, 32, 32)
NAMES = BACKBONES.names()
HEADS: dict[str, Callable[[int], nn.Module]] = {
    "linear": IncrementalLinear,
    "cosine": lambda n: CosineLinear(n, init_scale=4.0),
}


def _takes(name: str, argument: str) -> bool:
    return argument in inspect.signature(BACKBONES.get(name)).parameters


def _build(name: str, seed: int = 0, **kwargs: object) -> tuple[Backbone, torch.Tensor]:
    """A backbone and a batch of 4 inputs of the shape it expects."""
    shape = INPUT_SHAPES.get(name, DEFAULT_SHAPE)
    torch.manual_seed(seed)
    backbone = build_backbone(name, in_channels=shape[0], **kwargs)
    return backbone, torch.randn(4, *shape)


def _train_bn_stats(backbone: Backbone, x: torch.Tensor) -> None:
    """One train-mode forward so BatchNorm running statistics are not the trivial 0/1."""
    backbone.train()
    with torch.no_grad():
        backbone(x)
    backbone.eval()


def test_registry_holds_the_documented_backbones() -> None:
    assert {"resnet18", "resnet20", "resnet32", "resnet56", "mlp"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_constructor_has_explicit_keyword_arguments(name: str) -> None:
    parameters = inspect.signature(BACKBONES.get(name)).parameters.values()
    assert "in_channels" in {p.name for p in parameters}
    assert all(p.kind is not inspect.Parameter.VAR_KEYWORD for p in parameters)


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes(name: str) -> None:
    backbone, x = _build(name)
    assert isinstance(backbone, Backbone)
    assert backbone(x).shape == (4, 0)
    backbone.head.expand(5)
    assert backbone(x).shape == (4, 5)
    features = backbone.forward_features(x)
    assert features.shape == (4, backbone.num_features)
    assert backbone.forward_head(features).shape == (4, 5)


@pytest.mark.parametrize("name", [n for n in NAMES if not _takes(n, "input_size")])
@pytest.mark.parametrize("size", [(8, 8), (13, 21)])
def test_conv_backbones_take_any_input_size(name: str, size: tuple[int, int]) -> None:
    backbone = build_backbone(name)
    assert backbone.forward_features(torch.randn(2, 3, *size)).shape == (2, backbone.num_features)


@pytest.mark.parametrize("name", NAMES)
def test_backward_reaches_every_parameter(name: str) -> None:
    backbone, x = _build(name)
    backbone.head.expand(3)
    backbone.head.expand(5)
    torch.nn.functional.cross_entropy(backbone(x), torch.tensor([0, 1, 3, 4])).backward()
    for param_name, param in backbone.named_parameters():
        assert param.grad is not None, param_name
        if param.dim() >= 2:
            assert param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("name", NAMES)
def test_growing_the_head_keeps_old_logits_exactly(name: str, head: str) -> None:
    backbone, x = _build(name)
    backbone.replace_head(HEADS[head](backbone.num_features))
    backbone.eval()
    backbone.head.expand(3)
    old_params = list(backbone.head.parameters())
    with torch.no_grad():
        before = backbone(x)
        backbone.head.expand(7)
        after = backbone(x)
    assert after.shape == (4, 7)
    assert torch.equal(after[:, :3], before)
    new_params = list(backbone.head.parameters())
    assert all(any(p is q for q in new_params) for p in old_params)  # old chunks were not reallocated


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_after_two_expansions_loads_into_a_fresh_backbone(name: str, head: str) -> None:
    backbone, x = _build(name, seed=0)
    backbone.replace_head(HEADS[head](backbone.num_features))
    backbone.head.expand(3)
    backbone.head.expand(5)
    _train_bn_stats(backbone, x)
    state = backbone.state_dict()

    fresh, _ = _build(name, seed=1)
    fresh.replace_head(HEADS[head](fresh.num_features))
    assert fresh.head.out_features == 0
    fresh.load_state_dict(state)
    fresh.eval()
    assert fresh.head.chunk_sizes == [3, 2]
    with torch.no_grad():
        assert torch.equal(fresh(x), backbone(x))


@pytest.mark.parametrize("name", [n for n in NAMES if _takes(n, "last_relu")])
def test_last_relu_false_gives_negative_features(name: str) -> None:
    with_relu, x = _build(name)
    without_relu, _ = _build(name, last_relu=False)
    without_relu.load_state_dict(with_relu.state_dict())
    for backbone in (with_relu, without_relu):
        # A trained network's last block can end below zero; a negative shift of its last BN forces that.
        last_bn = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)][-1]
        nn.init.constant_(last_bn.bias, -100.0)
        backbone.eval()
    with torch.no_grad():
        assert (with_relu.forward_features(x) >= 0).all()
        assert (without_relu.forward_features(x) < 0).any()


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_matches_contiguous(name: str) -> None:
    backbone, x = _build(name)
    backbone.head.expand(4)
    _train_bn_stats(backbone, x)
    with torch.no_grad():
        expected = backbone(x)
        backbone.to(memory_format=torch.channels_last)
        actual = backbone(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


def test_resnet32_has_the_published_parameter_count() -> None:
    backbone = build_backbone("resnet32")
    count = sum(p.numel() for p in backbone.parameters())  # the head has 0 outputs: backbone only
    assert count == 463_504  # ≈ 0.46 M, as PyCIL's option-A resnet32 (464,154 with a 10-class fc)


def test_resnet18_widths_follow_nf() -> None:
    reduced = build_backbone("resnet18", nf=20)  # GEM's reduced ResNet-18
    assert reduced.num_features == 160
    assert reduced.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 160)


def test_mlp_is_gem_mnist_mlp() -> None:
    backbone = build_backbone("mlp", in_channels=1)
    backbone.head.expand(10)
    widths = [(m.in_features, m.out_features) for m in backbone.modules() if isinstance(m, nn.Linear)]
    assert widths == [(784, 100), (100, 100)]
    assert backbone(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="784"):
        backbone(torch.randn(2, 3, 28, 28))


def test_unknown_backbone_names_the_nearest() -> None:
    with pytest.raises(ConfigError, match="resnet32"):
        build_backbone("resnet33")


def test_unknown_backbone_argument_names_the_nearest() -> None:
    with pytest.raises(ConfigError, match="last_relu"):
        build_backbone("resnet32", last_rel=False)


def test_replace_head_checks_the_feature_size() -> None:
    backbone = build_backbone("mlp", in_channels=1)
    with pytest.raises(ValueError, match="100"):
        backbone.replace_head(CosineLinear(64))


@pytest.mark.parametrize("head", HEADS)
def test_head_expand_contract(head: str) -> None:
    module = HEADS[head](8)
    assert module(torch.randn(3, 8)).shape == (3, 0)
    assert module.weight.shape == (0, 8)
    module.expand(4)
    module.expand(4)  # same total: no-op
    module.expand(6)
    assert module.chunk_sizes == [4, 2]
    assert module.out_features == 6
    assert module.weight.shape == (6, 8)
    assert [tuple(w.shape) for w in module.weights] == [(4, 8), (2, 8)]
    with pytest.raises(ValueError, match="shrink"):
        module.expand(5)


def test_incremental_linear_torch_default_initialises_like_nn_linear() -> None:
    torch.manual_seed(3)
    head = IncrementalLinear(16, 5, init="torch_default")
    torch.manual_seed(3)
    reference = nn.Linear(16, 5)
    assert torch.equal(head.weight, reference.weight)
    assert torch.equal(head.bias, reference.bias)
    assert [tuple(b.shape) for b in head.biases] == [(5,)]


def test_incremental_linear_kaiming_uniform_is_pycils_init_for_every_new_chunk() -> None:
    """PyCIL SimpleLinear: kaiming_uniform_(nonlinearity="linear") weights, zero bias, new rows per task."""
    torch.manual_seed(3)
    head = IncrementalLinear(300, 50)
    head.expand(100)
    for weight, bias in zip(head.weights, head.biases, strict=True):
        bound = (3.0 / 300) ** 0.5
        assert weight.abs().max() <= bound and weight.abs().max() > 0.95 * bound  # U(-bound, bound)
        assert weight.abs().max() > 1.5 / 300**0.5  # wider than nn.Linear's 1/sqrt(fan_in)
        assert torch.equal(bias, torch.zeros_like(bias))
    torch.manual_seed(3)
    expected = torch.empty(50, 300)
    nn.init.kaiming_uniform_(expected, nonlinearity="linear")
    assert torch.equal(head.weights[0], expected)


def test_head_init_is_a_backbone_option_and_checked() -> None:
    torch.manual_seed(0)
    backbone = build_backbone("resnet8", head_init="torch_default")
    backbone.head.expand(3)
    assert backbone.head.init == "torch_default" and not torch.equal(backbone.head.bias, torch.zeros(3))
    assert build_backbone("resnet8").head.init == "kaiming_uniform"
    with pytest.raises(ConfigError, match="head_init"):
        build_backbone("resnet8", head_init="xavier")


def test_new_chunks_follow_the_head_dtype() -> None:
    head = IncrementalLinear(4).to(torch.float64)
    head.expand(2)
    assert head.weights[0].dtype == torch.float64
    assert head(torch.randn(3, 4, dtype=torch.float64)).dtype == torch.float64


def test_cosine_logits_are_bounded_by_the_scale() -> None:
    head = CosineLinear(16, 10, init_scale=3.0)
    logits = head(100 * torch.randn(64, 16))
    assert logits.abs().max() <= 3.0 * (1 + 1e-6)
    assert logits.abs().max() > 0.5  # not trivially small
    assert isinstance(head.sigma, nn.Parameter)
    fixed = CosineLinear(16, 10, learnable_scale=False, init_scale=2.0)
    assert "sigma" not in dict(fixed.named_parameters())
    assert "sigma" in fixed.state_dict()
    assert fixed(torch.randn(8, 16)).abs().max() <= 2.0 * (1 + 1e-6)


def test_head_load_keeps_matching_chunks_and_rejects_other_widths() -> None:
    head = IncrementalLinear(8, 3)
    head.expand(5)
    kept = head.weights[0]
    head.load_state_dict(head.state_dict())
    assert head.weights[0] is kept
    with pytest.raises(RuntimeError, match="size mismatch"):
        IncrementalLinear(6).load_state_dict(head.state_dict())
    smaller = IncrementalLinear(8, 3)
    head.load_state_dict(smaller.state_dict())  # back to an earlier checkpoint
    assert head.chunk_sizes == [3]
    assert torch.equal(head.weight, smaller.weight)


def test_head_init_passes_the_pre_run_config_check(tiny_config) -> None:
    """The check before any work knows build_backbone's own keys: `backbone.kwargs.head_init` from a config
    is accepted (it was rejected as "not a parameter of backbone 'resnet8'"), a misspelt key still is not."""
    from libcontinual.config import load_config
    from libcontinual.engine.experiment import check_components, register_everything

    register_everything()
    tiny_config["backbone"] = {"name": "resnet8", "kwargs": {"head_init": "torch_default"}}
    config, _ = load_config(tiny_config)
    check_components(config)
    tiny_config["backbone"]["kwargs"] = {"head_int": "torch_default"}
    with pytest.raises(ConfigError, match="head_int"):
        check_components(load_config(tiny_config)[0])
