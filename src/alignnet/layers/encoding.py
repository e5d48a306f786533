"""Input encoding and logit layer (docs/algorithms.md#input-encoding, docs/algorithms.md#logit-layer)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["AddInverse", "LogitLayer"]


class AddInverse(nn.Module):
    """Encode images in [0, 1] as ``[x, 1 - x]`` along channels: ``(N, C, H, W) -> (N, 2C, H, W)``.

    Every pixel's vector then has the same norm, so dark pixels can carry evidence and colour
    can be decoded from the explanation.
    """

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, 1 - x], dim=self.dim)


class LogitLayer(nn.Module):
    """``logits = x / temperature + bias``.

    ``bias`` is a float (the papers use ``log(0.1/0.9)``, the prior of one class of ten under
    BCE) or a per-class sequence; ``learn_bias=True`` makes it a parameter (B-cos v2).

    A fixed bias is a buffer (state-dict key ``bias``, as before) kept in float64 whatever the
    module's dtype: it follows ``.to(device)``, is added in the input's dtype, and a model
    converted with ``.double()`` (even after ``.half()``) gets the exact float64 bias, not a
    float32 rounding of it. Checkpoints with a float32 ``bias`` load into it unchanged. A learned
    bias is an ordinary parameter and follows the module's dtype.
    """

    def __init__(self, temperature: float = 1.0, bias: float | Tensor = 0.0, learn_bias: bool = False) -> None:
        super().__init__()
        temperature = float(temperature)
        if not temperature > 0 or not math.isfinite(temperature):
            raise ValueError(f"temperature must be a positive finite number, got {temperature}")
        self.temperature = temperature
        if learn_bias:
            self.bias = nn.Parameter(torch.as_tensor(bias, dtype=torch.get_default_dtype()).clone())
        else:
            self.register_buffer("bias", torch.as_tensor(bias, dtype=torch.float64).clone())

    def _apply(self, fn, recurse: bool = True):
        fixed = self._buffers.get("bias")
        super()._apply(fn, recurse)
        if fixed is not None and fixed.is_floating_point():
            # move with the module, but never lose the float64 value to a dtype conversion
            self._buffers["bias"] = fixed.to(device=self._buffers["bias"].device)
        return self

    def forward(self, x: Tensor) -> Tensor:
        return x / self.temperature + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        b = self.bias
        bias = f"{b.item():.4g}" if b.numel() == 1 else f"tensor{tuple(b.shape)}"
        return f"temperature={self.temperature:g}, bias={bias}"
