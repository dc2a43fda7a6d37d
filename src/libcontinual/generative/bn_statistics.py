"""BatchNorm-statistics loss on a frozen teacher: do synthetic batches look like the training data inside it?

Every BatchNorm layer of a trained network stores the running mean and variance of its input over the
training data. A forward hook compares them with the statistics of the current (synthetic) batch.

The form is the ABD code's (``DeepInversionFeatureHook`` in ``learners/datafree_helper.py``), not the L2
form of the DeepInversion paper (||mu - mu_run||_2 + ||var - var_run||_2): per channel the KL divergence
KL(N(mu_run, var_run) || N(mu_batch, var_batch)) = log(sigma_batch / sigma_run)
+ (var_run + (mu_run - mu_batch)^2) / (2 var_batch) - 1/2, averaged over the channels, with the batch
variance biased and 1e-8 added to both variances. It is 0 exactly when the batch statistics equal the
running ones and grows as either moves away.
"""

from __future__ import annotations

import torch
from torch import nn

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def bn_statistics_loss(
    inputs: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor
) -> torch.Tensor:
    """Channel-mean Gaussian KL between the running statistics and those of ``inputs`` (B, C, ...)."""
    dims = [d for d in range(inputs.dim()) if d != 1]
    mean = inputs.mean(dim=dims)
    var = inputs.var(dim=dims, unbiased=False) + 1e-8
    running_var = running_var.to(var.dtype) + 1e-8
    running_mean = running_mean.to(var.dtype)
    log_ratio = 0.5 * torch.log(var / running_var)
    return log_ratio.mean() - 0.5 * (1.0 - (running_var + (running_mean - mean) ** 2) / var).mean()


class BNStatisticsHooks:
    """Context manager: hooks on every BatchNorm of ``teacher`` record each layer's loss on every forward.

    ``loss()`` is the sum over layers of the last forward; the hooks are removed on exit (also after an
    error), so the teacher is left as it was.
    """

    def __init__(self, teacher: nn.Module) -> None:
        self.layers = [m for m in teacher.modules() if isinstance(m, BATCH_NORMS) and m.track_running_stats]
        self.values: list[torch.Tensor | None] = [None] * len(self.layers)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> BNStatisticsHooks:
        for index, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_hook(self._hook(index)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, index: int):  # noqa: ANN202 - a torch hook closure
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self.values[index] = bn_statistics_loss(inputs[0], module.running_mean, module.running_var)

        return record

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def loss(self) -> torch.Tensor:
        """Sum of the per-layer losses of the last forward pass."""
        missing = [i for i, value in enumerate(self.values) if value is None]
        if missing:
            raise RuntimeError(f"BatchNorm layers {missing} saw no forward pass since the hooks were set")
        return torch.stack([v for v in self.values if v is not None]).sum()
