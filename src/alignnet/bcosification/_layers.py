"""Layers that B-cosification needs beyond :mod:`alignnet.layers` (docs/bcosification.md#the-recipe).

The converted network keeps the pretrained weights as they are, so its B-cos layers use the
*unnormalised* weight ``w``: ``out = |w.x / ||x|||^(b-1) * (w.x)``. Everything else here makes a
pretrained block dynamic-linear: a 6-channel input normalisation that is linear in ``[x, 1-x]``, a
bias-free layer norm, gated activations (GELU, SiLU) whose gate explanation mode detaches, and
self-attention whose attention matrix explanation mode detaches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..layers import AddInverse, BcosConv2d, BcosLinear
from ..layers._mode import DynamicLinear

__all__ = [
    "BcosifiedAttention",
    "BcosifiedConv2d",
    "BcosifiedLinear",
    "DetachableGate",
    "DetachableLayerNorm",
    "InputEncoding",
    "TokenPool",
]


class BcosifiedConv2d(BcosConv2d):
    """:class:`~alignnet.layers.BcosConv2d` with the weight used as it is (not scaled to unit norm).

    ``out = |w.x|^(b-1) / ||x_patch||^(b-1) * (w.x)``; for ``b=1`` it is the plain bias-free convolution,
    so a pretrained convolution converts without changing its linear part.
    """

    def weight_norms(self) -> None:
        return None


class BcosifiedLinear(BcosLinear):
    """:class:`~alignnet.layers.BcosLinear` with the weight used as it is (not scaled to unit norm)."""

    def weight_norms(self) -> None:
        return None


class InputEncoding(nn.Module):
    """``[x, 1-x]`` normalised per channel with the source network's mean/std: ``(N, C, H, W) -> (N, 2C, H, W)``.

    The 6-channel normalisation with mean ``(m, 1-m)`` and std ``(s, s)`` gives ``((x-m)/s, (m-x)/s)``.
    Since ``x - m = (1-m) x - m (1-x)`` this is a *linear* map of the encoding ``[x, 1-x]`` (no bias), so
    explanations w.r.t. the encoding stay exact. The :class:`~alignnet.layers.AddInverse` submodule is
    where :func:`alignnet.explain` reads the input its weights refer to.
    """

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or not mean:
            raise InputError(f"mean and std need one value per image channel, got {mean} and {std}")
        if not all(s > 0 for s in std):
            raise InputError(f"std values must be positive, got {std}")
        self.add_inverse = AddInverse()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(normalised (N, 2C, H, W), one (N,))``: ``one`` is a linear function of the encoding equal
        to 1 (each pixel's ``x + (1-x)`` averaged), for constants that must stay attributable."""
        c = self.mean.numel()
        if x.dim() != 4 or x.shape[1] != c:
            raise InputError(f"expected images (N, {c}, H, W), got {tuple(x.shape)}")
        enc = self.add_inverse(x)
        pos, neg = enc[:, :c], enc[:, c:]
        m = self.mean.to(enc.dtype)[None, :, None, None]
        s = self.std.to(enc.dtype)[None, :, None, None]
        first = ((1 - m) * pos - m * neg) / s
        one = enc.sum(1).mean((1, 2)) / c
        return torch.cat([first, -first], dim=1), one

    def forward(self, x: Tensor) -> Tensor:
        return self.encode(x)[0]

    def extra_repr(self) -> str:
        return f"mean={[round(v, 4) for v in self.mean.tolist()]}, std={[round(v, 4) for v in self.std.tolist()]}"


class DetachableLayerNorm(DynamicLinear):
    """Bias-free layer norm over the channel dimension; explanation mode detaches the scale.

    ``centered=True`` subtracts the mean (a linear map, so still dynamic-linear), ``False`` does not.
    ``channels_first``: normalise dim 1 of ``(N, C, H, W)`` (torchvision's ``LayerNorm2d``), else the last dim.
    """

    def __init__(
        self, num_features: int, eps: float = 1e-5, centered: bool = True, channels_first: bool = False
    ) -> None:
        super().__init__()
        self.num_features, self.eps, self.centered, self.channels_first = num_features, eps, centered, channels_first
        self.weight = nn.Parameter(torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        dim = 1 if self.channels_first else -1
        if x.shape[dim] != self.num_features:
            raise InputError(
                f"DetachableLayerNorm expects {self.num_features} features in dim {dim}, got {tuple(x.shape)}"
            )
        if self.centered:
            x = x - x.mean(dim, keepdim=True)
        var = (x.detach() if self.detach else x).var(dim, unbiased=False, keepdim=True)
        w = self.weight.view(-1, 1, 1) if self.channels_first else self.weight
        return x / (var + self.eps).sqrt() * w

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, centered={self.centered}, channels_first={self.channels_first}"


class DetachableGate(DynamicLinear):
    """``x * gate(x)`` for GELU (``gate = Phi(x)``) and SiLU (``gate = sigmoid(x)``): the same values as
    the activation, dynamic-linear because explanation mode detaches the gate."""

    def __init__(self, kind: str = "gelu", approximate: str = "none") -> None:
        super().__init__()
        if kind not in ("gelu", "silu"):
            raise InputError(f"kind must be 'gelu' or 'silu', got {kind!r}")
        self.kind, self.approximate = kind, approximate

    def forward(self, x: Tensor) -> Tensor:
        g = x.detach() if self.detach else x
        if self.kind == "silu":
            gate = torch.sigmoid(g)
        elif self.approximate == "tanh":
            gate = 0.5 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (g + 0.044715 * g.pow(3))))
        else:
            gate = 0.5 * (1 + torch.erf(g / math.sqrt(2)))
        return x * gate

    def extra_repr(self) -> str:
        return self.kind + (", approximate=tanh" if self.approximate == "tanh" else "")


class BcosifiedAttention(DynamicLinear):
    """Self-attention with bias-free B-cos projections; explanation mode detaches the attention matrix.

    A drop-in for :class:`torch.nn.MultiheadAttention` used as self-attention (``query is key is value``):
    ``forward(q, k, v, need_weights=False) -> (out, None)``; ``(N, L, E)`` when ``batch_first``.
    """

    def __init__(self, embed_dim: int, num_heads: int, b: float = 2.0, dropout: float = 0.0, batch_first: bool = True):
        super().__init__()
        if embed_dim % num_heads:
            raise InputError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim, self.num_heads, self.dropout, self.batch_first = embed_dim, num_heads, dropout, batch_first
        self.in_proj = BcosifiedLinear(embed_dim, 3 * embed_dim, b=b)
        self.out_proj = BcosifiedLinear(embed_dim, embed_dim, b=b)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, need_weights: bool = False, **kwargs):
        if not (query is key and key is value):
            raise InputError("BcosifiedAttention supports self-attention only (query, key and value the same tensor)")
        if kwargs.get("attn_mask") is not None or kwargs.get("key_padding_mask") is not None:
            raise InputError("BcosifiedAttention does not support attention masks")
        x = query if self.batch_first else query.transpose(0, 1)
        n, length, _ = x.shape
        q, k, v = self.in_proj(x).view(n, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        if self.detach:
            attn = attn.detach()
        attn = F.dropout(attn, self.dropout, self.training)
        out = self.out_proj((attn @ v).transpose(1, 2).reshape(n, length, self.embed_dim))
        return (out if self.batch_first else out.transpose(0, 1)), None


class TokenPool(nn.Module):
    """``(N, L, K) -> (N, K)``: the mean over tokens (``"mean"``) or the class token (``"cls"``)."""

    def __init__(self, mode: str = "mean") -> None:
        super().__init__()
        if mode not in ("mean", "cls"):
            raise InputError(f"token pooling must be 'mean' or 'cls', got {mode!r}")
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(1) if self.mode == "mean" else x[:, 0]

    def extra_repr(self) -> str:
        return self.mode
