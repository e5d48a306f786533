"""Simple Vision Transformers of B-cos v2: B-cos and standard, with 16x16 patches or a conv stem ("ViT-C").

A simple ViT (Beyer et al. 2022: sin-cos position embedding, mean pooling over tokens). In the B-cos
models the token embedding, attention output and MLP projections are B-cos linear layers, with bias-free
layer norms and no activations; in the ViT-C models a stem of 3x3 convolutions (stride 2 where the width
grows; Xiao et al. 2021) replaces most of the 16x16 patch embedding, and the transformer is one block
shallower. The standard (non-B-cos) models of the same release use the same code with ``nn.Linear``,
``nn.Conv2d``, ``nn.LayerNorm``, one-group ``nn.GroupNorm`` and GELU, take plain RGB normalised with the
ImageNet mean and standard deviation (done inside the model by :class:`Normalize`), and have no logit layer.

Dynamic linearity of the B-cos models (docs/algorithms.md):

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
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..layers import AddInverse, BcosConv2d, BcosLinear, DynamicLinear, LayerNormUncentered, LayerNormUncentered2d
from ._common import check_num_classes, v2_logit_layer
from ._registry import PAPER_BCOS_V2, annotate, register_model

__all__ = [
    "LayerNormNoBias",
    "LayerNormNoBias2d",
    "Normalize",
    "PositionEmbedding2d",
    "Attention",
    "VisionTransformer",
    "bcos_vitc_ti",
    "bcos_vitc_s",
    "bcos_vitc_b",
    "bcos_vitc_l",
    "bcos_simple_vit_ti",
    "bcos_simple_vit_s",
    "bcos_simple_vit_b",
    "bcos_simple_vit_l",
    "vitc_ti",
    "vitc_s",
    "vitc_b",
    "vitc_l",
    "simple_vit_ti",
    "simple_vit_s",
    "simple_vit_b",
    "simple_vit_l",
]

# (token width, encoder blocks of the 16x16-patch model, heads); the MLP is 4x the width. ViT-C has one
# block fewer (the stem stands in for it, as in "Early convolutions help transformers see better").
SIZES = {"ti": (192, 12, 3), "s": (384, 12, 6), "b": (768, 12, 12), "l": (1024, 14, 16)}
# output channels of the ViT-C stems' 3x3 convolutions
STEMS = {
    "ti": (24, 48, 96, 192),
    "s": (48, 96, 192, 384),
    "b": (64, 128, 128, 256, 256, 512),
    "l": (64, 128, 128, 256, 256, 512),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel of ``(N, C, H, W)`` images (the standard models' input normalisation).

    The constants are plain numbers, made tensors of the input's dtype on each call (exact in float64;
    nothing in the state dict, as in the checkpoints).
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise InputError(f"mean and std need one value per channel, got {len(mean)} and {len(std)}")
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != len(self.mean):
            raise InputError(f"Normalize expects (N, {len(self.mean)}, H, W), got {tuple(x.shape)}")
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device)[None, :, None, None]
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device)[None, :, None, None]
        return (x - mean) / std

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


def sincos_embedding_2d(h: int, w: int, dim: int, temperature: float = 10000.0, device=None, dtype=None) -> Tensor:
    """Fixed 2D sin-cos position embedding ``(h*w, dim)`` (``dim`` divisible by 4), row-major tokens."""
    if dim % 4 or dim < 8:
        raise InputError(f"the sin-cos position embedding needs a dimension divisible by 4 and >= 8, got {dim}")
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

    ``to_qkv`` is bias-free and linear; ``to_out`` is a bias-free ``linear_layer`` (B-cos in the B-cos
    models). In explanation mode ``q`` and ``k`` (hence the attention matrix) are detached.
    """

    def __init__(self, dim: int, heads: int, norm_layer, linear_layer) -> None:
        super().__init__()
        if dim % heads:
            raise InputError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.norm = norm_layer(dim)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = linear_layer(dim, dim, bias=False)

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
    def __init__(self, dim: int, hidden: int, norm_layer, linear_layer, act_layer) -> None:
        super().__init__()
        self.net = nn.Sequential(
            OrderedDict(
                norm=norm_layer(dim),
                linear1=linear_layer(dim, hidden),
                act=act_layer(),
                linear2=linear_layer(hidden, dim),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Encoder(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, norm_layer, linear_layer, act_layer) -> None:
        super().__init__()
        self.attn = Attention(dim, heads, norm_layer, linear_layer)
        self.ff = FeedForward(dim, mlp_dim, norm_layer, linear_layer, act_layer)

    def forward(self, x: Tensor) -> Tensor:
        x = self.attn(x) + x
        return self.ff(x) + x


class _ToPatches(nn.Module):
    """``(N, C, H, W) -> (N, H/p, W/p, p*p*C)``: non-overlapping ``p x p`` patches, flattened row, column, channel."""

    def __init__(self, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise InputError(f"image height and width must be multiples of the patch size {p}, got {h}x{w}")
        x = x.reshape(n, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(n, h // p, w // p, p * p * c)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}"


class VisionTransformer(nn.Module):
    """Simple ViT: ``(N, 3, H, W)`` in [0, 1] -> ``(N, num_classes)``; ``H, W`` multiples of 16.

    Parameters
    ----------
    dim, depth, heads, mlp_dim:
        Token width, encoder blocks, attention heads, MLP hidden width.
    stem:
        Output channels of the 3x3 stem convolutions (stride 2 where the width grows; ViT-C), or
        ``None`` for a plain patch embedding.
    patch_size:
        Side of the square patches embedded as tokens (after the stem, if any).
    logit_layer:
        The final :class:`~alignnet.layers.LogitLayer`, or ``None`` (standard models).
    encode:
        The model's first step on the ``(N, 3, H, W)`` image: :class:`~alignnet.layers.AddInverse`
        (B-cos, 6 channels follow) or :class:`Normalize` (standard, 3 channels).
    norm_layer, norm2d_layer, linear_layer, conv_layer, act_layer:
        Layer types of the tokens' norms, the stem's norms, the linear maps (called with
        ``bias=False`` for the attention output), the stem convs and the activations.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        stem: tuple[int, ...] | None,
        logit_layer: nn.Module | None,
        patch_size: int = 1,
        encode: nn.Module | None = None,
        norm_layer: Callable[[int], nn.Module] = LayerNormNoBias,
        norm2d_layer: Callable[[int], nn.Module] = LayerNormNoBias2d,
        linear_layer: Callable[..., nn.Module] | None = None,
        conv_layer: Callable[..., nn.Module] = BcosConv2d,
        act_layer: Callable[[], nn.Module] = nn.Identity,
        attribute_position_embedding: bool = True,
    ) -> None:
        super().__init__()
        self.encode = AddInverse() if encode is None else encode
        linear_layer = _bcos_linear(2.0) if linear_layer is None else linear_layer
        c_in = 6 if isinstance(self.encode, AddInverse) else 3
        embedding = OrderedDict()
        if stem:
            conv_stem = []
            for c_out in stem:
                conv_stem += [
                    conv_layer(c_in, c_out, 3, stride=2 if c_out > c_in else 1, padding=1),
                    norm2d_layer(c_out),
                    act_layer(),  # nn.Identity in the B-cos models
                ]
                c_in = c_out
            embedding["conv_stem"] = nn.Sequential(*conv_stem)
        embedding["rearrange"] = _ToPatches(patch_size)
        embedding["linear"] = linear_layer(c_in * patch_size * patch_size, dim)
        self.to_patch_embedding = nn.Sequential(embedding)
        self.positional_embedding = PositionEmbedding2d(attribute_position_embedding)
        self.transformer = nn.Sequential(
            OrderedDict(
                (f"encoder_{i}", Encoder(dim, heads, mlp_dim, norm_layer, linear_layer, act_layer))
                for i in range(depth)
            )
        )
        self.linear_head = nn.Sequential(OrderedDict(norm=norm_layer(dim), linear=linear_layer(dim, num_classes)))
        self.logit_layer = logit_layer

    def forward(self, x: Tensor) -> Tensor:
        x = self.positional_embedding(self.to_patch_embedding(self.encode(x)))
        x = self.linear_head(self.transformer(x).mean(dim=1))
        return x if self.logit_layer is None else self.logit_layer(x)


def _bcos_linear(b: float) -> Callable[..., BcosLinear]:
    """B-cos linear layers as a ``linear_layer``: the ``bias`` argument is accepted and ignored (never a bias)."""

    def linear(in_features: int, out_features: int, bias: bool = False) -> BcosLinear:
        return BcosLinear(in_features, out_features, b=b)

    return linear


_NORMS = {
    "centered": (LayerNormNoBias, LayerNormNoBias2d),
    "uncentered": (LayerNormUncentered, LayerNormUncentered2d),
}


def _bcos_vit(size, conv_stem, num_classes, b, logit_bias, learn_logit_bias, norm) -> VisionTransformer:
    num_classes = check_num_classes(num_classes)
    if norm not in _NORMS:
        raise InputError(f"norm must be one of {sorted(_NORMS)}, got {norm!r}")
    norm_layer, norm2d_layer = _NORMS[norm]
    dim, depth, heads = SIZES[size]

    def conv(i, o, k, stride=1, padding=0):
        return BcosConv2d(i, o, k, stride=stride, padding=padding, b=b)

    model = VisionTransformer(
        num_classes,
        dim=dim,
        depth=depth - 1 if conv_stem else depth,
        heads=heads,
        mlp_dim=4 * dim,
        stem=STEMS[size] if conv_stem else None,
        patch_size=1 if conv_stem else 16,
        logit_layer=v2_logit_layer(num_classes, logit_bias, learn_bias=learn_logit_bias),
        norm_layer=norm_layer,
        norm2d_layer=norm2d_layer,
        linear_layer=_bcos_linear(b),
        conv_layer=conv,
    )
    return annotate(model, (224, 224), PAPER_BCOS_V2)


def _group_norm_1(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(1, channels)  # layer norm over (C, H, W), with bias


def _standard_vit(size, conv_stem, num_classes) -> VisionTransformer:
    num_classes = check_num_classes(num_classes)
    dim, depth, heads = SIZES[size]
    model = VisionTransformer(
        num_classes,
        dim=dim,
        depth=depth - 1 if conv_stem else depth,
        heads=heads,
        mlp_dim=4 * dim,
        stem=STEMS[size] if conv_stem else None,
        patch_size=1 if conv_stem else 16,
        logit_layer=None,
        encode=Normalize(IMAGENET_MEAN, IMAGENET_STD),
        norm_layer=nn.LayerNorm,
        norm2d_layer=_group_norm_1,
        linear_layer=nn.Linear,
        conv_layer=nn.Conv2d,
        act_layer=nn.GELU,
        attribute_position_embedding=False,
    )
    return annotate(model, (224, 224), PAPER_BCOS_V2, encoding="none")


# ---------------------------------------------------------------------------------- B-cos ViT-C
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
    return _bcos_vit("ti", True, num_classes, b, logit_bias, learn_logit_bias, norm)


@register_model
def bcos_vitc_s(
    num_classes: int = 1000,
    b: float = 2.0,
    logit_bias: float | None = None,
    learn_logit_bias: bool = False,
    norm: str = "centered",
) -> VisionTransformer:
    """B-cos ViT-C small: stem 48-96-192-384, 11 blocks of width 384, 6 heads (20.88M parameters)."""
    return _bcos_vit("s", True, num_classes, b, logit_bias, learn_logit_bias, norm)


@register_model
def bcos_vitc_b(
    num_classes: int = 1000,
    b: float = 2.0,
    logit_bias: float | None = None,
    learn_logit_bias: bool = False,
    norm: str = "centered",
) -> VisionTransformer:
    """B-cos ViT-C base: stem 64-128-128-256-256-512, 11 blocks of width 768, 12 heads (81.33M parameters)."""
    return _bcos_vit("b", True, num_classes, b, logit_bias, learn_logit_bias, norm)


@register_model
def bcos_vitc_l(
    num_classes: int = 1000,
    b: float = 2.0,
    logit_bias: float | None = None,
    learn_logit_bias: bool = False,
    norm: str = "centered",
) -> VisionTransformer:
    """B-cos ViT-C large: stem 64-128-128-256-256-512, 13 blocks of width 1024, 16 heads (167.44M parameters)."""
    return _bcos_vit("l", True, num_classes, b, logit_bias, learn_logit_bias, norm)


# ------------------------------------------------------------------------- B-cos simple ViT
@register_model
def bcos_simple_vit_ti(
    num_classes: int = 1000,
    b: float = 2.0,
    logit_bias: float | None = None,
    learn_logit_bias: bool = False,
    norm: str = "centered",
) -> VisionTransformer:
    """B-cos simple ViT-Ti/16: 12 blocks of width 192, 3 heads (5.80M parameters)."""
    return _bcos_vit("ti", False, num_classes, b, logit_bias, learn_logit_bias, norm)


@register_model
def bcos_simple_vit_s(
    num_classes: int = 1000,
    b: float = 2.0,
    logit_bias: float | None = None,
    learn_logit_bias: bool = False,
    norm: str = "centered",
) -> VisionTransformer:
    """B-cos simple ViT-S/16: 12 blocks of width 384, 6 heads (22.22M parameters)."""
    return _bcos_vit("s", False, num_classes, b, logit_bias, learn_logit_bias, norm)


@register_model
def bcos_simple_vit_b(
    num_classes: int = 1000,
    b: float = 2.0,
    logit_bias: float | None = None,
    learn_logit_bias: bool = False,
    norm: str = "centered",
) -> VisionTransformer:
    """B-cos simple ViT-B/16: 12 blocks of width 768, 12 heads (86.90M parameters)."""
    return _bcos_vit("b", False, num_classes, b, logit_bias, learn_logit_bias, norm)


@register_model
def bcos_simple_vit_l(
    num_classes: int = 1000,
    b: float = 2.0,
    logit_bias: float | None = None,
    learn_logit_bias: bool = False,
    norm: str = "centered",
) -> VisionTransformer:
    """B-cos simple ViT-L/16: 14 blocks of width 1024, 16 heads (178.79M parameters)."""
    return _bcos_vit("l", False, num_classes, b, logit_bias, learn_logit_bias, norm)


# ----------------------------------------------------------- standard (non-B-cos) baselines
@register_model
def vitc_ti(num_classes: int = 1000) -> VisionTransformer:
    """Standard ViT-C tiny (not B-cos; normalises RGB inside; 5.33M parameters)."""
    return _standard_vit("ti", True, num_classes)


@register_model
def vitc_s(num_classes: int = 1000) -> VisionTransformer:
    """Standard ViT-C small (not B-cos; normalises RGB inside; 20.91M parameters)."""
    return _standard_vit("s", True, num_classes)


@register_model
def vitc_b(num_classes: int = 1000) -> VisionTransformer:
    """Standard ViT-C base (not B-cos; normalises RGB inside; 81.39M parameters)."""
    return _standard_vit("b", True, num_classes)


@register_model
def vitc_l(num_classes: int = 1000) -> VisionTransformer:
    """Standard ViT-C large (not B-cos; normalises RGB inside; 167.54M parameters)."""
    return _standard_vit("l", True, num_classes)


@register_model
def simple_vit_ti(num_classes: int = 1000) -> VisionTransformer:
    """Standard simple ViT-Ti/16 (not B-cos; normalises RGB inside; 5.67M parameters)."""
    return _standard_vit("ti", False, num_classes)


@register_model
def simple_vit_s(num_classes: int = 1000) -> VisionTransformer:
    """Standard simple ViT-S/16 (not B-cos; normalises RGB inside; 21.96M parameters)."""
    return _standard_vit("s", False, num_classes)


@register_model
def simple_vit_b(num_classes: int = 1000) -> VisionTransformer:
    """Standard simple ViT-B/16 (not B-cos; normalises RGB inside; 86.38M parameters)."""
    return _standard_vit("b", False, num_classes)


@register_model
def simple_vit_l(num_classes: int = 1000) -> VisionTransformer:
    """Standard simple ViT-L/16 (not B-cos; normalises RGB inside; 178.10M parameters)."""
    return _standard_vit("l", False, num_classes)
