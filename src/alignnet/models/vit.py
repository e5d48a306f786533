"""B-cos Vision Transformers with a convolutional stem ("ViT-C", B-cos v2).

A simple ViT (sin-cos position embedding, mean pooling over tokens) whose token embedding,
attention output and MLP projections are B-cos linear layers, with bias-free layer norms and
no activations; a stem of stride-2 B-cos convolutions replaces the patch embedding.

Dynamic linearity (REFERENCE.md section 1):

* attention ``softmax(q k^T / sqrt(d)) v`` is linear in ``v`` once the attention matrix is
  fixed, so :class:`Attention` is a :class:`~alignnet.layers.DynamicLinear` that detaches ``q``
  and ``k`` in explanation mode (``to_qkv`` is a plain bias-free linear map, as in the ``bcos``
  package);
* the layer norms subtract a mean (linear) and divide by a detached standard deviation;
* the position embedding is a constant added to every token, i.e. a bias no pixel would carry.
  In explanation mode :class:`PositionEmbedding2d` writes it as ``pe_t = (pe_t x_t^T / |x_t|^2) x_t``,
  a detached rank-one matrix applied to the token, which leaves the forward value unchanged
  and attributes the embedding to the token's own evidence, so completeness holds.
  ``attribute_position_embedding=False`` gives the ``bcos`` package's gradient instead.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import AddInverse, BcosConv2d, BcosLinear, DynamicLinear, LayerNormUncentered, LayerNormUncentered2d
from ._common import check_num_classes, v2_logit_layer
from ._registry import PAPER_BCOS_V2, annotate, register_model

__all__ = [
    "LayerNormNoBias",
    "LayerNormNoBias2d",
    "PositionEmbedding2d",
    "Attention",
    "VisionTransformer",
    "bcos_vitc_ti",
    "bcos_vitc_s",
]


class LayerNormNoBias(DynamicLinear):
    """Layer norm over the last dimension, bias-free: ``weight * (x - mean) / std``; ``std`` detachable."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        var, mean = torch.var_mean(x, dim=-1, unbiased=False, keepdim=True)
        if self.detach:
            var = var.detach()
        return (x - mean) / (var + self.eps).sqrt() * self.weight

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}"


class LayerNormNoBias2d(DynamicLinear):
    """Layer norm of ``(N, C, H, W)`` maps over ``(C, H, W)`` (group norm with one group), bias-free."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.weight = nn.Parameter(torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        var, mean = torch.var_mean(x, dim=(1, 2, 3), unbiased=False, keepdim=True)
        if self.detach:
            var = var.detach()
        return (x - mean) / (var + self.eps).sqrt() * self.weight[None, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def sincos_embedding_2d(h: int, w: int, dim: int, temperature: float = 10000.0, device=None, dtype=None) -> Tensor:
    """Fixed 2D sin-cos position embedding ``(h*w, dim)`` (``dim`` divisible by 4), row-major tokens."""
    if dim % 4 or dim < 8:
        raise ValueError(f"the sin-cos position embedding needs a dimension divisible by 4 and >= 8, got {dim}")
    y, x = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    omega = torch.arange(dim // 4, device=device) / (dim // 4 - 1)
    omega = 1.0 / temperature**omega
    y = y.flatten()[:, None] * omega[None, :]
    x = x.flatten()[:, None] * omega[None, :]
    return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1).to(dtype)


class PositionEmbedding2d(DynamicLinear):
    """Tokens ``(N, h, w, D) -> (N, h*w, D)`` plus the sin-cos embedding (see the module docstring)."""

    def __init__(self, attribute: bool = True) -> None:
        super().__init__()
        self.attribute = attribute

    def forward(self, x: Tensor) -> Tensor:
        n, h, w, d = x.shape
        pe = sincos_embedding_2d(h, w, d, device=x.device, dtype=x.dtype)
        x = x.reshape(n, h * w, d)
        if self.detach and self.attribute:
            sq = (x.detach() * x.detach()).sum(-1, keepdim=True)
            ratio = torch.where(sq > 0, (x * x.detach()).sum(-1, keepdim=True) / sq.clamp_min(1e-30), 1.0)
            return x + pe * ratio
        return x + pe


class Attention(DynamicLinear):
    """Multi-head self-attention on pre-normed tokens ``(N, T, D) -> (N, T, D)``.

    ``to_qkv`` is bias-free and linear; ``to_out`` is a B-cos linear layer. In explanation mode
    ``q`` and ``k`` (hence the attention matrix) are detached.
    """

    def __init__(self, dim: int, heads: int, norm_layer, linear_layer) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.norm = norm_layer(dim)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = linear_layer(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (N, heads, T, d_head)
        if self.detach:
            q, k = q.detach(), k.detach()
        attn = F.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(n, t, d)
        return self.to_out(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, norm_layer, linear_layer) -> None:
        super().__init__()
        self.net = nn.Sequential(
            OrderedDict(norm=norm_layer(dim), linear1=linear_layer(dim, hidden), linear2=linear_layer(hidden, dim))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Encoder(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, norm_layer, linear_layer) -> None:
        super().__init__()
        self.attn = Attention(dim, heads, norm_layer, linear_layer)
        self.ff = FeedForward(dim, mlp_dim, norm_layer, linear_layer)

    def forward(self, x: Tensor) -> Tensor:
        x = self.attn(x) + x
        return self.ff(x) + x


class _ToTokens(nn.Module):
    """``(N, C, H, W) -> (N, H, W, C)`` (patch size 1 after the stem)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 2, 3, 1)


class VisionTransformer(nn.Module):
    """B-cos ViT-C: ``(N, 3, H, W)`` in [0, 1] -> ``(N, num_classes)``; ``H, W`` multiples of 16.

    Parameters
    ----------
    dim, depth, heads, mlp_dim:
        Token width, encoder blocks, attention heads, MLP hidden width.
    stem:
        Output channels of the 3x3 stem convolutions (stride 2 where the width grows).
    norm_layer, norm2d_layer, linear_layer, conv_layer:
        Layer types of the tokens' norms, the stem's norms, the linear maps and the stem convs.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        stem: list[int],
        logit_layer: nn.Module,
        norm_layer=LayerNormNoBias,
        norm2d_layer=LayerNormNoBias2d,
        linear_layer=BcosLinear,
        conv_layer=BcosConv2d,
        attribute_position_embedding: bool = True,
    ) -> None:
        super().__init__()
        self.encode = AddInverse()
        conv_stem, c_in = [], 6
        for c_out in stem:
            conv_stem += [
                conv_layer(c_in, c_out, 3, stride=2 if c_out > c_in else 1, padding=1),
                norm2d_layer(c_out),
                nn.Identity(),  # activation slot of the bcos layout (B-cos needs none)
            ]
            c_in = c_out
        self.to_patch_embedding = nn.Sequential(
            OrderedDict(conv_stem=nn.Sequential(*conv_stem), rearrange=_ToTokens(), linear=linear_layer(c_in, dim))
        )
        self.positional_embedding = PositionEmbedding2d(attribute_position_embedding)
        self.transformer = nn.Sequential(
            OrderedDict((f"encoder_{i}", Encoder(dim, heads, mlp_dim, norm_layer, linear_layer)) for i in range(depth))
        )
        self.linear_head = nn.Sequential(OrderedDict(norm=norm_layer(dim), linear=linear_layer(dim, num_classes)))
        self.logit_layer = logit_layer

    def forward(self, x: Tensor) -> Tensor:
        x = self.positional_embedding(self.to_patch_embedding(self.encode(x)))
        x = self.transformer(x).mean(dim=1)
        return self.logit_layer(self.linear_head(x))


_NORMS = {
    "centered": (LayerNormNoBias, LayerNormNoBias2d),
    "uncentered": (LayerNormUncentered, LayerNormUncentered2d),
}


def _vitc(num_classes, b, logit_bias, learn_logit_bias, norm, dim, heads, stem) -> VisionTransformer:
    num_classes = check_num_classes(num_classes)
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {sorted(_NORMS)}, got {norm!r}")
    norm_layer, norm2d_layer = _NORMS[norm]

    def linear(i, o):
        return BcosLinear(i, o, b=b)

    def conv(i, o, k, stride=1, padding=0):
        return BcosConv2d(i, o, k, stride=stride, padding=padding, b=b)

    model = VisionTransformer(
        num_classes,
        dim=dim,
        depth=11,  # 12 minus one for the conv stem, as in "Early convolutions help transformers see better"
        heads=heads,
        mlp_dim=4 * dim,
        stem=stem,
        logit_layer=v2_logit_layer(num_classes, logit_bias, learn_bias=learn_logit_bias),
        norm_layer=norm_layer,
        norm2d_layer=norm2d_layer,
        linear_layer=linear,
        conv_layer=conv,
    )
    return annotate(model, (224, 224), PAPER_BCOS_V2)


@register_model
def bcos_vitc_ti(
    num_classes: int = 1000,
    b: float = 2.0,
    logit_bias: float | None = None,
    learn_logit_bias: bool = False,
    norm: str = "centered",
) -> VisionTransformer:
    """B-cos ViT-C tiny: stem 24-48-96-192, 11 blocks of width 192, 3 heads (5.32M parameters).

    ``norm="centered"`` (bias-free layer norms, as the published ``bcos`` weights) or ``"uncentered"``.
    """
    return _vitc(num_classes, b, logit_bias, learn_logit_bias, norm, dim=192, heads=3, stem=[24, 48, 96, 192])


@register_model
def bcos_vitc_s(
    num_classes: int = 1000,
    b: float = 2.0,
    logit_bias: float | None = None,
    learn_logit_bias: bool = False,
    norm: str = "centered",
) -> VisionTransformer:
    """B-cos ViT-C small: stem 48-96-192-384, 11 blocks of width 384, 6 heads (20.88M parameters)."""
    return _vitc(num_classes, b, logit_bias, learn_logit_bias, norm, dim=384, heads=6, stem=[48, 96, 192, 384])
