"""Global pooling layers, ``(N, C, H, W) -> (N, C)`` (linear, so nothing to detach)."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["GlobalAvgPool2d", "GlobalSumPool2d"]


class GlobalAvgPool2d(nn.Module):
    """Mean over the spatial dimensions (the B-cos networks' head)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1))


class GlobalSumPool2d(nn.Module):
    """Sum over the spatial dimensions (the CoDA-Nets' head)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.sum(dim=(-2, -1))
