"""The generator subsystem (libcontinual.generative): BN-statistics loss and hooks, the generator, its
loss terms, training, sampling, exact state and pictures."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from libcontinual.backbones import build_backbone
from libcontinual.errors import ConfigError
from libcontinual.generative import (
    BNStatisticsHooks,
    CifarGenerator,
    Dreamer,
    GeneratorSettings,
    bn_statistics_loss,
)
from libcontinual.generative.losses import diversity_loss, gaussian_kernel, smoothness_loss
from libcontinual.generative.pictures import class_grid, to_unit_range, write_png
from libcontinual.methods.base import frozen_copy


def batch_and_stats(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 5, 6, 6, generator=generator) * torch.linspace(0.5, 2.0, 5).view(1, 5, 1, 1) + 0.3
    mean = x.mean(dim=(0, 2, 3))
    var = x.var(dim=(0, 2, 3), unbiased=False)
    return x, mean, var


def test_bn_loss_is_zero_when_the_batch_statistics_equal_the_running_ones():
    x, mean, var = batch_and_stats()
    assert abs(float(bn_statistics_loss(x, mean, var))) < 1e-6


def test_bn_loss_grows_as_the_mean_or_the_variance_moves_away():
    x, mean, var = batch_and_stats()
    shifted = [float(bn_statistics_loss(x, mean + delta, var)) for delta in (0.0, 0.1, 0.5, 1.0, 2.0)]
    scaled = [float(bn_statistics_loss(x, mean, var * factor)) for factor in (1.0, 1.5, 3.0, 10.0)]
    shrunk = [float(bn_statistics_loss(x, mean, var / factor)) for factor in (1.0, 1.5, 3.0, 10.0)]
    for values in (shifted, scaled, shrunk):
        assert all(b > a for a, b in zip(values, values[1:], strict=False)), values


def test_bn_loss_is_the_channel_mean_gaussian_kl_of_running_against_batch_statistics():
    """The ABD code's form (not DeepInversion's L2 form): KL(N(mu_run, var_run) || N(mu_batch, var_batch))."""
    x, mean, var = batch_and_stats()
    running_mean, running_var = mean + torch.linspace(-1, 1, 5), var * torch.linspace(0.5, 3, 5)
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(running_mean, (running_var + 1e-8).sqrt()),
        torch.distributions.Normal(mean, (var + 1e-8).sqrt()),
    ).mean()
    assert torch.allclose(bn_statistics_loss(x, running_mean, running_var), kl, atol=1e-5)
    l2 = (mean - running_mean).norm() + (var - running_var).norm()
    assert not torch.allclose(bn_statistics_loss(x, running_mean, running_var), l2, atol=1e-2)


def test_hooks_see_every_batchnorm_and_are_removed_after_use_even_after_an_error():
    teacher = frozen_copy(build_backbone("resnet8"))
    norms = [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
    with BNStatisticsHooks(teacher) as hooks:
        assert hooks.num_layers == len(norms) > 0
        assert all(len(m._forward_hooks) == 1 for m in norms)
        teacher(torch.randn(8, 3, 8, 8))
        assert float(hooks.loss()) > 0
    assert all(len(m._forward_hooks) == 0 for m in norms)
    with pytest.raises(ValueError), BNStatisticsHooks(teacher):
        raise ValueError("inside")
    assert all(len(m._forward_hooks) == 0 for m in norms)


def test_hook_loss_on_a_batchnorm_equals_the_functional_loss_of_its_input():
    layer = nn.BatchNorm2d(5).eval()
    x, mean, var = batch_and_stats(1)
    layer.running_mean.copy_(mean + 0.2)
    layer.running_var.copy_(var * 2)
    with BNStatisticsHooks(layer) as hooks:
        layer(x)
        assert torch.equal(hooks.loss(), bn_statistics_loss(x, layer.running_mean, layer.running_var))


def test_generator_is_sized_from_the_image_shape_and_ends_in_a_non_affine_batchnorm():
    for shape in [(3, 32, 32), (1, 8, 12)]:
        generator = CifarGenerator(shape)
        images = generator(torch.randn(16, 1000))
        assert images.shape == (16, *shape)
        assert not generator.bn_out.affine
        assert torch.allclose(images.mean(dim=(0, 2, 3)), torch.zeros(shape[0]), atol=1e-4)
    assert CifarGenerator((3, 32, 32)).project.in_features == 1000
    with pytest.raises(ConfigError, match="multiples of 4"):
        CifarGenerator((3, 30, 32))


def test_diversity_is_zero_for_an_even_batch_and_one_for_a_single_class():
    even = torch.eye(4).repeat(8, 1) * 50
    single = torch.zeros(32, 4)
    single[:, 2] = 50
    assert abs(float(diversity_loss(even))) < 1e-5
    assert abs(float(diversity_loss(single)) - 1.0) < 1e-5
    assert float(diversity_loss(torch.randn(8, 1))) == 0.0


def test_smoothness_is_zero_for_a_flat_image_and_positive_for_noise():
    kernel = gaussian_kernel(5, 1.0)
    assert kernel.shape == (5, 5) and abs(float(kernel.sum()) - 1.0) < 1e-6
    assert float(smoothness_loss(torch.full((2, 3, 8, 8), 0.7), kernel)) < 1e-10
    assert float(smoothness_loss(torch.randn(2, 3, 8, 8), kernel)) > 0.1


def trained_teacher(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    backbone = build_backbone("resnet8")
    backbone.head.expand(classes)
    backbone.train()
    with torch.no_grad():  # running statistics of "training data" unlike the generator's first images
        backbone(torch.randn(64, 3, 8, 8) * 0.5 + 0.2)
    return frozen_copy(backbone)


def teacher_ce(dreamer: Dreamer, teacher: nn.Module) -> float:
    rng = torch.Generator().manual_seed(5)
    _, labels, logits = dreamer.sample(teacher, 256, 3, rng)
    return float(F.cross_entropy(logits, labels))


def test_generator_training_lowers_the_teachers_ce_on_its_samples_and_the_bn_loss():
    teacher = trained_teacher()
    dreamer = Dreamer((3, 8, 8), seed=0, settings=GeneratorSettings(batch_size=32))
    before = teacher_ce(dreamer, teacher)
    report = dreamer.fit(teacher, 3, steps=60)
    assert teacher_ce(dreamer, teacher) < before - 0.05
    assert report.history[-1]["loss_bn"] < 0.5 * report.history[0]["loss_bn"]
    assert report.steps == 60 and report.bn_layers > 0 and report.seconds > 0
    assert not any(m._forward_hooks for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())


def test_samples_are_labelled_with_the_teachers_argmax_over_the_old_classes():
    teacher = trained_teacher(classes=5)
    dreamer = Dreamer((3, 8, 8), seed=0, settings=GeneratorSettings(batch_size=16))
    images, labels, logits = dreamer.sample(teacher, 64, 3)
    assert images.shape == (64, 3, 8, 8) and logits.shape == (64, 3)
    assert torch.equal(labels, teacher(images)[:, :3].argmax(dim=1))
    assert not dreamer.generator.training


def test_state_dict_holds_generator_optimizer_and_rng_so_training_continues_bit_identically():
    teacher = trained_teacher()
    settings = GeneratorSettings(batch_size=16)
    first = Dreamer((3, 8, 8), seed=3, settings=settings)
    first.fit(teacher, 3, steps=4)
    state = copy.deepcopy(first.state_dict())  # as a checkpoint: a snapshot, not live tensors
    first.fit(teacher, 3, steps=3)
    reference = first.sample(teacher, 8, 3)[0]

    second = Dreamer((3, 8, 8), seed=99, settings=settings)
    second.load_state_dict(state)
    second.fit(teacher, 3, steps=3)
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
        if isinstance(a, torch.Tensor)
    )
    assert torch.equal(second.sample(teacher, 8, 3)[0], reference)


def test_class_grid_puts_each_class_on_its_row_and_writes_a_png(tmp_path):
    images = torch.stack([torch.full((3, 4, 4), v) for v in (0.0, 0.5, 1.0, 0.5)])
    grid = class_grid(images, torch.tensor([0, 1, 2, 1]), num_classes=4, per_class=3, gap=1)
    assert grid.shape == (4 * 5 + 1, 3 * 5 + 1, 3) and grid.dtype == np.uint8
    assert grid[1:5, 1:5].min() == 0 and grid[6:10, 1:5].min() == 128 and grid[6:10, 6:10].min() == 128
    assert grid[11:15, 1:5].min() == 255 and grid[16:20].max() == 0  # class 3: no sample, black row
    path = write_png(tmp_path / "dreams" / "grid.png", grid, scale=2)
    assert Image.open(path).size == (grid.shape[1] * 2, grid.shape[0] * 2)
    normalized = (torch.full((1, 3, 2, 2), 0.5) - 0.5) / 0.25
    assert torch.allclose(to_unit_range(normalized, [0.5] * 3, [0.25] * 3), torch.full((1, 3, 2, 2), 0.5))
