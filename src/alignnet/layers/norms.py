"""Uncentered (mean-free, bias-free) normalisation layers of B-cos v2 (docs/algorithms.md#uncentered-normalisation).

They only divide by a scale and never subtract a mean, so the network stays dynamic-linear;
the scale (batch or token statistics) is a dynamic factor that explanation mode detaches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ._mode import DynamicLinear, _autograd_needs

__all__ = ["BatchNormUncentered2d", "LayerNormUncentered", "LayerNormUncentered2d"]


class BatchNormUncentered2d(nn.BatchNorm2d, DynamicLinear):
    """Batch norm that divides by the batch standard deviation and never subtracts the mean.

    ``y = weight * x / sqrt(var + eps)``; ``var`` is the (biased) batch variance per channel
    in training and the running variance in evaluation. No bias. ``(N, C, H, W) -> same``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine)
        if affine:
            self.bias = None  # bias-free: a bias would not be attributed to any input pixel

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise InputError(f"BatchNormUncentered2d expects (N, {self.num_features}, H, W), got {tuple(x.shape)}")
        if self.training:
            var = (x.detach() if self.detach else x).var(dim=(0, 2, 3), unbiased=False)
            if self.track_running_stats:
                with torch.no_grad():
                    self.num_batches_tracked.add_(1)
                    # momentum=None: cumulative moving average, as nn.BatchNorm2d
                    factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                    self.running_var.lerp_(var.detach(), factor)
            y = x / (var + self.eps).sqrt()[None, :, None, None]
            return y if self.weight is None else y * self.weight[None, :, None, None]
        # Evaluation: a constant per-channel scale ``weight / sqrt(running_var + eps)``, one pass over x.
        if not _autograd_needs(x, self.weight):
            # Inference: torch's batch_norm kernel with a zero mean and no bias is exactly that, in one call (no
            # small tensor ops to build the scale); the mean is a fresh zero vector, not the running_mean buffer,
            # which this layer never uses (a state dict may carry any values there). Under autograd it would keep
            # its input for the backward, where the product below keeps only the scale.
            zero_mean = torch.zeros_like(self.running_var)
            return F.batch_norm(x, zero_mean, self.running_var, self.weight, None, False, 0.0, self.eps)
        scale = (self.running_var + self.eps).rsqrt()
        if self.weight is not None:
            scale = scale * self.weight
        return x * scale.to(x.dtype)[None, :, None, None]


class LayerNormUncentered(DynamicLinear):
    """Layer norm over the last dimension without centering and without bias (for B-cos ViTs).

    ``y = weight * x / sqrt(var(x) + eps)`` with ``var`` over the last dimension.
    """

    def __init__(self, normalized_shape: int, eps: float = 1e-5, elementwise_affine: bool = True) -> None:
        super().__init__()
        self.normalized_shape, self.eps = normalized_shape, eps
        self.weight = nn.Parameter(torch.ones(normalized_shape)) if elementwise_affine else None

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.normalized_shape:
            raise InputError(f"LayerNormUncentered expects (..., {self.normalized_shape}), got {tuple(x.shape)}")
        var = (x.detach() if self.detach else x).var(dim=-1, unbiased=False, keepdim=True)
        y = x / (var + self.eps).sqrt()
        return y if self.weight is None else y * self.weight

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


class LayerNormUncentered2d(DynamicLinear):
    """Layer norm of feature maps over ``(C, H, W)`` per image, uncentered and bias-free."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise InputError(f"LayerNormUncentered2d expects (N, {self.num_features}, H, W), got {tuple(x.shape)}")
        var = (x.detach() if self.detach else x).var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        y = x / (var + self.eps).sqrt()
        return y if self.weight is None else y * self.weight[None, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"
