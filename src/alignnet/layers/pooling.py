"""Pooling layers (linear, so nothing to detach): local average pooling and the global heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from ._mode import _capturing_graph

__all__ = ["AvgPool2d", "GlobalAvgPool2d", "GlobalSumPool2d"]


class AvgPool2d(nn.AvgPool2d):
    """:class:`torch.nn.AvgPool2d` (same arguments, state and results) that runs faster on a CPU.

    On a CPU, float32/float64 ``(N, C, H, W)`` maps are averaged by a depthwise convolution with a
    constant ``1/(kh*kw)`` kernel when that is the same function (zero padding counted in the mean, no
    ``ceil_mode`` or ``divisor_override``). torch's CPU pooling kernels are slow on contiguous NCHW maps,
    while the convolution goes to oneDNN: a ResNet stem's ``AvgPool2d(3, 2, 1)`` at batch 8 takes 3 instead
    of 10-23 ms, its backward 5 instead of 21 ms (an explanation's backward). The results equal the
    pooling kernel's up to the order of the additions. Elsewhere (GPU, other dtypes, ``torch.compile``,
    TorchScript, ``ceil_mode``) it is ``nn.AvgPool2d``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self._as_convolution(x):
            return super().forward(x)
        kh, kw = _pair(self.kernel_size)
        kernel = torch.full((x.shape[1], 1, kh, kw), 1.0 / (kh * kw), dtype=x.dtype)
        stride = _pair(self.stride if self.stride is not None else self.kernel_size)
        return F.conv2d(x, kernel, None, stride, _pair(self.padding), 1, x.shape[1])

    def _as_convolution(self, x: Tensor) -> bool:
        if _capturing_graph():  # one program for every device and shape; inductor writes its own pooling loop
            return False
        if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.dim() != 4:
            return False
        if self.ceil_mode or self.divisor_override is not None:
            return False
        return bool(self.count_include_pad) or _pair(self.padding) == (0, 0)


class GlobalAvgPool2d(nn.Module):
    """Mean over the spatial dimensions (the B-cos networks' head)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(-2, -1))


class GlobalSumPool2d(nn.Module):
    """Sum over the spatial dimensions (the CoDA-Nets' head)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.sum(dim=(-2, -1))
