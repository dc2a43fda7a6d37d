"""The generator subsystem: a generator trained against a frozen teacher, then sampled for replay.

``Dreamer`` holds the generator, its Adam optimizer and its own random generator (the one that draws z).
All three are in its ``state_dict`` (weights and BatchNorm statistics as parameters and buffers, Adam's
moments and the RNG state as extra state), so a run resumed from a checkpoint draws the same images, and
generator training re-run from the last checkpoint repeats bit for bit. The generator is never reset:
each task's training starts from the previous task's generator and Adam state (as the ABD code).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from libcontinual.generative.bn_statistics import BNStatisticsHooks
from libcontinual.generative.generator import CifarGenerator
from libcontinual.generative.losses import content_loss, diversity_loss, gaussian_kernel, smoothness_loss

logger = logging.getLogger(__name__)


@dataclass
class GeneratorSettings:
    """The published generator settings (ABD code, ``--deep_inv_params 1e-3 5e1 1e-3 1e3 1``)."""

    steps: int = 10_000
    batch_size: int = 128
    lr: float = 1e-3
    bn_weight: float = 50.0  # divided by the number of BatchNorm layers of the teacher
    smoothness_weight: float = 1e-3
    content_temperature: float = 1000.0
    content_weight: float = 1.0
    z_dim: int = 1000


@dataclass
class GeneratorReport:
    """What one generator training did: its loss curve (every ~1 % of the steps) and its cost."""

    steps: int
    num_classes: int
    seconds: float
    bn_layers: int
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def steps_per_second(self) -> float | None:
        return self.steps / self.seconds if self.seconds > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "steps_per_second": self.steps_per_second}


class Dreamer(nn.Module):
    """Synthetic images of shape ``image_shape`` (C, H, W) for a frozen teacher; ``seed`` seeds z."""

    def __init__(self, image_shape: tuple[int, int, int], seed: int, settings: GeneratorSettings) -> None:
        super().__init__()
        self.image_shape = tuple(int(v) for v in image_shape)
        self.seed = int(seed)
        self.settings = settings
        self.generator = CifarGenerator(self.image_shape, settings.z_dim)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=settings.lr)
        self.register_buffer("blur_kernel", gaussian_kernel(5, 1.0), persistent=False)
        self._rng: torch.Generator | None = None
        self._pending_rng: tuple[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> Any:
        rng = None if self._rng is None else (self._rng.device.type, self._rng.get_state())
        return {
            "image_shape": self.image_shape,
            "seed": self.seed,
            "optimizer": self.optimizer.state_dict(),
            "rng": rng if rng is not None else self._pending_rng,
        }

    def set_extra_state(self, state: Any) -> None:
        self.seed = state["seed"]
        self.optimizer.load_state_dict(state["optimizer"])
        self._rng, self._pending_rng = None, state["rng"]

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def rng(self) -> torch.Generator:
        """The generator of z on the generator's device, restored from a checkpoint when there is one."""
        device = self.device
        if self._rng is not None and self._rng.device.type == device.type:
            return self._rng
        rng = torch.Generator(device=device)
        if self._pending_rng is not None:
            device_type, state = self._pending_rng
            if device_type != device.type:
                raise RuntimeError(
                    f"this checkpoint's generator RNG was saved on {device_type}; resume it on {device_type} "
                    f"(the run now uses {device.type}), or the synthetic images would differ"
                )
            rng.set_state(state)
        else:
            rng.manual_seed(self.seed)
        self._rng, self._pending_rng = rng, None
        return rng

    def _optimizer_state_to_device(self) -> None:
        """Adam's moments follow the parameters when a loaded checkpoint was moved to another device."""
        device = self.device
        for state in self.optimizer.state.values():
            for key, value in state.items():
                if key != "step" and isinstance(value, torch.Tensor) and value.device != device:
                    state[key] = value.to(device)

    # ------------------------------------------------------------------ training and sampling
    def draw(self, n: int, rng: torch.Generator | None = None, rows: slice = slice(None)) -> torch.Tensor:
        """Draw ``n`` z and generate the images of ``rows`` of them (all by default)."""
        z = torch.randn(n, self.settings.z_dim, generator=rng or self.rng(), device=self.device)
        return self.generator(z[rows])

    def loss_terms(
        self, images: torch.Tensor, teacher: nn.Module, hooks: BNStatisticsHooks, num_classes: int
    ) -> dict[str, torch.Tensor]:
        """The four terms of one generator step (weights applied); ``loss`` is their sum."""
        s = self.settings
        logits = teacher(images)[:, :num_classes]
        terms = {
            "loss_content": s.content_weight * content_loss(logits, s.content_temperature),
            "loss_diversity": diversity_loss(logits),
            "loss_bn": (s.bn_weight / hooks.num_layers) * hooks.loss()
            if hooks.num_layers
            else logits.new_zeros(()),
            "loss_smooth": s.smoothness_weight * smoothness_loss(images, self.blur_kernel),
        }
        terms["loss"] = sum(terms.values())
        return terms

    def fit(self, teacher: nn.Module, num_classes: int, steps: int | None = None) -> GeneratorReport:
        """Train the generator for ``steps`` Adam steps so that ``teacher`` (frozen, eval mode) sees
        confident, class-balanced images whose BatchNorm statistics match its training data."""
        steps = self.settings.steps if steps is None else steps
        self._optimizer_state_to_device()
        teacher.eval()
        self.generator.train()
        record_every = max(1, steps // 100)
        start = time.perf_counter()
        with BNStatisticsHooks(teacher) as hooks:
            report = GeneratorReport(steps, num_classes, 0.0, hooks.num_layers)
            for step in range(steps):
                images = self.draw(self.settings.batch_size)
                terms = self.loss_terms(images, teacher, hooks, num_classes)
                self.optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                self.optimizer.step()
                if step % record_every == 0 or step == steps - 1:
                    report.history.append({"step": step, **{k: float(v.detach()) for k, v in terms.items()}})
        self.generator.eval()
        report.seconds = time.perf_counter() - start
        return report

    @torch.no_grad()
    def images(self, n: int, rng: torch.Generator | None = None, rows: slice = slice(None)) -> torch.Tensor:
        """``n`` synthetic images (fp32), or only ``rows`` of them. The generator samples in eval mode (its
        BatchNorms use their running statistics, as in the reference code, so each image depends on its z
        alone); ``rng`` (default: the training RNG) draws z."""
        self.generator.eval()
        return self.draw(n, rng, rows).float()

    @torch.no_grad()
    def sample(
        self, teacher: nn.Module, n: int, num_classes: int, rng: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``images(n, rng)``, their labels = the teacher's argmax over its ``num_classes`` classes, and its
        logits."""
        images = self.images(n, rng)
        logits = teacher(images)[:, :num_classes].float()
        return images, logits.argmax(dim=1), logits
