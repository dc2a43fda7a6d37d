"""Evaluation scores every classifier of a test batch from one backbone pass, with the same accuracies."""

from __future__ import annotations

import pytest
import torch

from libcontinual.backbones import build_backbone
from libcontinual.buffers import LinearBuffer
from libcontinual.data.augment import BatchAugment, Normalize
from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.engine.evaluation import evaluate
from libcontinual.methods.base import predict
from libcontinual.methods.bic import BiC
from libcontinual.methods.icarl import ICaRL
from libcontinual.methods.replay import Replay

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
FIRST = TaskInfo(0, 2, (0, 1, 2), 0, 3)


def trained(method_class: type[Replay]) -> tuple[Replay, DeviceLoader]:
    """A method after its first task (exemplars and class means set) and a 3-batch test loader."""
    torch.manual_seed(0)
    backbone = build_backbone("mlp", in_channels=3, input_size=16, hidden_sizes=[8])
    method = method_class(backbone, 8, 6)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 3, 4, 4), dtype=torch.uint8, generator=generator)
    labels = torch.arange(30) % 3
    train = DeviceLoader(images, labels, 8, BatchAugment(MEAN, STD), shuffle=True, generator=generator)
    buffer = LinearBuffer(memory_per_class=4, strategy="herding")
    method.before_task(FIRST, buffer, train, [])
    method.after_task(FIRST, buffer, train, [])
    if isinstance(method, BiC):  # a non-identity bias correction, so that forgetting it would show
        method.beta.fill_(0.5)
        method.gamma.fill_(0.25)
    test_images = torch.randint(0, 256, (20, 3, 4, 4), dtype=torch.uint8, generator=generator)
    return method, DeviceLoader(test_images, torch.arange(20) % 3, 8, Normalize(MEAN, STD))


@pytest.mark.parametrize("method_class", [Replay, ICaRL, BiC])
def test_scores_per_classifier_equal_each_classifiers_scores(method_class):
    method, test = trained(method_class)
    method.eval()
    images = next(iter(test))["image"]
    shared = method.scores_per_classifier(images)
    assert set(shared) == set(method.classifiers) == {"cnn", "nme"}
    for name in method.classifiers:
        assert torch.equal(shared[name], method.scores(images, None, name)), name


@pytest.mark.parametrize("method_class", [Replay, BiC])
def test_evaluation_runs_the_backbone_once_per_test_batch(method_class, monkeypatch):
    method, test = trained(method_class)
    calls = []
    forward_features = method.backbone.forward_features
    monkeypatch.setattr(
        method.backbone, "forward_features", lambda x: calls.append(x.shape[0]) or forward_features(x)
    )
    accuracy = evaluate(method, [test], [FIRST])
    assert calls == [8, 8, 4]
    method.eval()
    with torch.no_grad():  # the accuracies, classifier by classifier, written out
        for name in method.classifiers:
            correct = sum(
                int((predict(method.scores(batch["image"], None, name)) == batch["label"]).sum())
                for batch in test
            )
            assert accuracy[name] == [100.0 * correct / 20]
