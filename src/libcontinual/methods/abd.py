"""ABD — Always Be Dreaming: data-free class-incremental learning
(Smith, Hsu, Balloch, Shen, Jin, Kira, ICCV 2021; code GT-RIPL/AlwaysBeDreaming-DFCIL, ``AlwaysBeDreaming``).

No exemplars: after each task a generator learns to produce images the frozen model classifies confidently
(``libcontinual.generative``); the next task trains on 1 real + 1 synthetic image per real one.
before_task: refuse a buffer; build the generator on the first task; grow the head.
observe (first task): CE over the seen classes. Later tasks, with B real and B synthetic images
    (labels = the teacher's argmax over the old classes) in one forward pass, and one teacher pass over the
    same 2B images that gives both the synthetic labels and the distillation targets:
    (a) ``loss_ce_new``: CE of the real images over the new-class logits only;
    (b) ``loss_ce_head``: CE over every seen class of all 2B images on **detached** features, so only the
        head learns from synthetic data (the backbone never fits the generator's artefacts);
    both weighted per sample by n_old/n_seen (old class) or n_new/n_seen (new class), mean over samples;
    (c) ``loss_kd``: mu * MSE(old_head(f_current), old_head(f_teacher)) over the old-class logits of all 2B
        images ("importance-weighted feature distillation": features compared through the old head).
after_task: freeze the model as teacher, train the generator against it (not after the last task), and
    write ``dreams/task-<t>.png`` (``write_artifacts``).
Deviations from the reference code: (b) reuses the features of the forward pass, detached, instead of a
second forward pass in train mode (same values; the BatchNorm running statistics are updated once per step,
not twice); (b) covers the seen classes (this library's head grows; the reference head has every future
class too); a partial last batch uses its real size (the reference indexes a full batch size there).
Measured: R5-DF seed 1993: last 13.34, avg. inc. 25.55; the first two tasks stayed at chance
(benchmarks/BENCHMARKS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from libcontinual.generative.replay import GenerativeReplay
from libcontinual.methods.base import Batch
from libcontinual.registry import register_method


@register_method("abd")
class AlwaysBeDreaming(GenerativeReplay):
    def __init__(
        self,
        backbone: nn.Module,
        feat_dim: int,
        num_class: int,
        mu: float = 0.1,
        generator_steps: int = 10_000,
        generator_batch_size: int = 128,
        generator_lr: float = 1e-3,
        bn_weight: float = 50.0,
        smoothness_weight: float = 1e-3,
        content_temperature: float = 1000.0,
        z_dim: int = 1000,
    ) -> None:
        super().__init__(
            backbone,
            feat_dim,
            num_class,
            generator_steps,
            generator_batch_size,
            generator_lr,
            bn_weight,
            smoothness_weight,
            content_temperature,
            z_dim,
        )
        self.mu = mu

    def loss_terms(self, batch: Batch) -> tuple[torch.Tensor, dict]:
        """Logits of the real images and the named loss terms (a), (b), (c) of a later task."""
        images, labels = batch["image"], batch["label"]
        real = labels.shape[0]
        known, total = self.known_classes, self.total_classes
        inputs = torch.cat([images, self.synthetic_for(batch).to(images.dtype)])
        with torch.no_grad():  # one teacher pass: the synthetic labels and the distillation targets
            teacher_features = self.teacher.forward_features(inputs)
            teacher_old = self.teacher.forward_head(teacher_features)[:, :known]
        targets = torch.cat([labels, teacher_old[real:].argmax(dim=1)])
        features = self.backbone.forward_features(inputs)
        logits = self.backbone.forward_head(features)[:, :total]
        old_share = known / total
        weights = torch.where(targets < known, old_share, 1.0 - old_share)
        ce_new = F.cross_entropy(logits[:real, known:], labels - known, reduction="none")
        head_logits = self.backbone.forward_head(features.detach())[:, :total]
        ce_head = F.cross_entropy(head_logits, targets, reduction="none")
        current_old = self.teacher.forward_head(features)[:, :known]
        terms = {
            "loss_ce_new": (ce_new * weights[:real]).mean(),
            "loss_ce_head": (ce_head * weights).mean(),
            "loss_kd": self.mu * F.mse_loss(current_old, teacher_old),
        }
        return logits[:real], terms

    def observe(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels = batch["image"], batch["label"]
        if self.teacher is None:
            logits = self.backbone(images)[:, : self.total_classes]
            terms = {"loss_ce": F.cross_entropy(logits, labels)}
        else:
            logits, terms = self.loss_terms(batch)
        self.log_losses(**terms)
        pred = logits.argmax(dim=1)
        return pred, (pred == labels).float().mean(), sum(terms.values())
