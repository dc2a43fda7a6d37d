"""EWC — Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017); online EWC (Schwarz et al., ICML 2018).

loss = CE + (lamda / 2) * sum_k sum_i F_k,i (theta_i - theta*_k,i)^2 (F_k: diagonal Fisher, theta*_k: the
parameters after task k).
before_task: finetune's (grow the head; ``ce_classes`` checked against the buffer). CE over the new-class
    logits (PyCIL) or over all seen classes (``ce_classes``).
observe: CE + the penalty on every parameter that existed when a Fisher was computed: the backbone and the
    head chunks of earlier tasks (a head chunk added later has no Fisher entry, so it is not penalised).
after_task: Fisher = mean over (up to ``fisher_samples``) unaugmented training images of the per-sample
    squared gradient of log p(y|x) over the classes seen so far (torch.func vmap of grad), in eval mode so
    that BatchNorm uses running statistics and the samples stay independent; y is the true label (empirical
    Fisher) or drawn from the model (``sample_labels``). ``fisher_update`` says how it joins the earlier ones:
    ``merge`` (default, PyCIL): one Fisher F <- alpha * F + (1 - alpha) * F_new with alpha = n_old / n_seen
    (a parameter new in this task takes F_new), anchor = the latest parameters; ``per_task`` (the EWC paper):
    one (Fisher, anchor) pair per task, penalties summed, so the penalty grows with every task; ``online``
    (Schwarz et al.): F <- gamma * F + F_new, anchor = the latest parameters. Skipped after the last task
    (nothing left to protect it from).
Deviations: PyCIL computes a Fisher after the last task too (unused); it squares the mean-batch gradient
in train mode and clamps F at 1e-4 (``fisher_max``); its lamda (1000) is tuned for that Fisher, which is
never larger than ours ((mean g)^2 <= mean g^2). GEM's baseline also squares batch gradients.
Measured v0.1 (R5, seed 1993): last accuracy 16.68, average incremental 33.45 (finetune 16.31 / 33.79);
`python benchmarks/r5.py ewc`, table and notes in benchmarks/BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from libcontinual.data.augment import Normalize
from libcontinual.data.loader import DeviceLoader
from libcontinual.data.scenario import TaskInfo
from libcontinual.methods.base import Batch
from libcontinual.methods.common import task_cross_entropy
from libcontinual.methods.finetune import FinetuneBaseline
from libcontinual.registry import register_method

Tensors = dict[str, torch.Tensor]
FISHER_CHUNK = 64  # samples per vmap call: bounds the memory held by per-sample gradients
FISHER_UPDATES = ("merge", "per_task", "online")


def squared_sample_gradients(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, num_classes: int, names: Sequence[str]
) -> Tensors:
    """Sum over samples of (d log p(label | image) / d theta)^2 for the parameters ``names`` (torch.func).

    ``model`` must be in eval mode: BatchNorm in train mode couples the samples of a batch.
    """
    params = dict(model.named_parameters())
    trainable = {name: params[name].detach() for name in names}
    fixed = {name: p.detach() for name, p in params.items() if name not in trainable}
    fixed.update(dict(model.named_buffers()))

    def log_likelihood(weights: Tensors, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, {**fixed, **weights}, (image.unsqueeze(0),))[0, :num_classes]
        return -F.cross_entropy(logits, label)

    grads = vmap(grad(log_likelihood), in_dims=(None, 0, 0))(trainable, images, labels)
    return {name: g.pow(2).sum(dim=0) for name, g in grads.items()}


@register_method("ewc")
class EWC(FinetuneBaseline):
    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        num_class: int,
        lamda: float = 1000.0,
        fisher_update: str = "merge",
        gamma: float = 1.0,
        fisher_samples: int | None = None,
        sample_labels: bool = False,
        fisher_max: float | None = None,
        ce_classes: str = "new",
    ) -> None:
        super().__init__(backbone, feat_dim, num_class, ce_classes)
        if fisher_update not in FISHER_UPDATES:
            raise ValueError(f"fisher_update must be one of {FISHER_UPDATES}, got {fisher_update!r}")
        if fisher_samples is not None and fisher_samples <= 0:
            raise ValueError(f"fisher_samples must be positive or null (all samples), got {fisher_samples}")
        self.lamda = lamda
        self.fisher_update = fisher_update
        self.gamma = gamma
        self.fisher_samples = fisher_samples
        self.sample_labels = sample_labels
        self.fisher_max = fisher_max
        self.fishers: list[Tensors] = []  # one per past task (per_task), else one in all
        self.anchors: list[Tensors] = []

    def observe(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels = batch["image"], batch["label"]
        logits = self.backbone(images)[:, : self.total_classes]
        loss_ce = task_cross_entropy(logits, labels, self.known_classes, self.ce_classes)
        loss = loss_ce
        if self.fishers:
            loss_ewc = self.penalty()
            loss = loss_ce + loss_ewc
            self.log_losses(loss_ce=loss_ce, loss_ewc=loss_ewc)
        else:
            self.log_losses(loss_ce=loss_ce)
        pred = logits.argmax(dim=1)
        return pred, (pred == labels).float().mean(), loss

    def penalty(self) -> torch.Tensor:
        """(lamda / 2) * sum over stored Fishers of F * (theta - anchor)^2."""
        params = dict(self.backbone.named_parameters())
        total = torch.zeros((), device=self.device)
        for fisher, anchor in zip(self.fishers, self.anchors, strict=True):
            for name, f in fisher.items():
                total = total + (f * (params[name] - anchor[name]).pow(2)).sum()
        return 0.5 * self.lamda * total

    @torch.no_grad()
    def after_task(
        self, task: TaskInfo, buffer: Any, train_loader: DeviceLoader, test_loaders: Sequence[DeviceLoader]
    ) -> None:
        if task.index == task.num_tasks - 1:
            return
        fisher = self.fisher(train_loader)
        anchor = {name: p.detach().clone() for name, p in self.backbone.named_parameters() if name in fisher}
        if self.fisher_update != "per_task" and self.fishers:
            previous = self.fishers[0]
            if self.fisher_update == "merge":
                alpha = task.known_classes / task.total_classes
                fisher = {
                    name: alpha * previous[name] + (1 - alpha) * f if name in previous else f
                    for name, f in fisher.items()
                }
            else:
                fisher = {name: f + self.gamma * previous.get(name, 0.0) for name, f in fisher.items()}
            self.fishers, self.anchors = [], []
        self.fishers.append(fisher)
        self.anchors.append(anchor)

    def fisher(self, train_loader: DeviceLoader) -> Tensors:
        """Mean per-sample squared gradient over this task's unaugmented training images, in eval mode."""
        n = train_loader.num_samples
        index = torch.randperm(n, generator=train_loader.generator, device=train_loader.generator_device)
        index = index[: self.fisher_samples].to(train_loader.device)
        normalize = Normalize(train_loader.transform.mean, train_loader.transform.std)
        names = [name for name, p in self.backbone.named_parameters() if p.requires_grad]
        was_training = self.backbone.training
        self.backbone.eval()
        fisher: Tensors = {}
        for chunk in index.split(FISHER_CHUNK):
            images = normalize(train_loader.images[chunk])
            labels = train_loader.labels[chunk]
            if self.sample_labels:
                probabilities = self.backbone(images)[:, : self.total_classes].softmax(dim=1)
                probabilities = probabilities.to(train_loader.generator_device)
                drawn = torch.multinomial(probabilities, 1, generator=train_loader.generator)
                labels = drawn.squeeze(1).to(images.device)
            with torch.enable_grad():
                sums = squared_sample_gradients(self.backbone, images, labels, self.total_classes, names)
            fisher = {name: fisher[name] + s if name in fisher else s for name, s in sums.items()}
        self.backbone.train(was_training)
        fisher = {name: f / index.numel() for name, f in fisher.items()}
        if self.fisher_max is not None:
            fisher = {name: f.clamp(max=self.fisher_max) for name, f in fisher.items()}
        return fisher

    def get_extra_state(self) -> Any:
        def to_cpu(tensors: list[Tensors]) -> list[Tensors]:
            return [{name: t.cpu() for name, t in d.items()} for d in tensors]

        return {**super().get_extra_state(), "fishers": to_cpu(self.fishers), "anchors": to_cpu(self.anchors)}

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        device = self.device
        self.fishers = [{name: t.to(device) for name, t in d.items()} for d in state["fishers"]]
        self.anchors = [{name: t.to(device) for name, t in d.items()} for d in state["anchors"]]
