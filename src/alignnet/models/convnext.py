"""B-cos ConvNeXts (B-cos v2, the long-schedule ImageNet models).

The torchvision ConvNeXt layout (stem of 4x4 stride-4 convolutions, four stages of blocks, norm +
2x2 stride-2 convolution between stages) with B-cos convolutions and no activations: a block is a
7x7 depthwise B-cos convolution, a norm, two 1x1 B-cos convolutions (expansion 4), a learnt
per-channel layer scale and a residual connection. As in the ``bcos`` package, the classifier
(norm + 1x1 B-cos convolution) comes *before* global average pooling, and module names and state
dicts line up with that package's (up to its ``linear.weight`` naming, see :mod:`.convert`).

Two norms, as the published weights:

* ``"position"`` (the ``*_pn`` checkpoints): :class:`PositionNorm2d`, a bias-free layer norm over
  the channels at each position (mean subtracted, divided by a standard deviation that explanation
  mode detaches), eps ``1e-6``;
* ``"batch_uncentered"`` (the ``*_bnu`` checkpoints): :class:`~alignnet.layers.BatchNormUncentered2d`.

Both keep the network dynamic-linear (docs/algorithms.md): subtracting a mean is linear, the
layer scale is a constant, and stochastic depth (training only) multiplies by a constant mask.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..layers import AddInverse, BatchNormUncentered2d, BcosConv2d, DynamicLinear, GlobalAvgPool2d, LogitLayer
from ._common import check_num_classes, v2_logit_layer
from ._registry import PAPER_BCOS_V2, annotate, register_model

__all__ = [
    "PositionNorm2d",
    "StochasticDepth",
    "ConvNeXtBlock",
    "ConvNeXt",
    "bcos_convnext_tiny",
    "bcos_convnext_base",
    "bcos_convnext_tiny_bnu",
    "bcos_convnext_base_bnu",
]

# (channels, blocks) per stage, as in "A ConvNet for the 2020s" (Liu et al., 2022), Section 3
TINY = ((96, 3), (192, 3), (384, 9), (768, 3))
BASE = ((128, 3), (256, 3), (512, 27), (1024, 3))


class PositionNorm2d(DynamicLinear):
    """Bias-free layer norm over the channels at each position of ``(N, C, H, W)`` maps.

    ``y = weight * (x - mean_C(x)) / sqrt(var_C(x) + eps)``; the standard deviation is detached in
    explanation mode (positional normalisation, Li et al. 2019; ConvNeXt's channels-first layer norm).
    """

    def __init__(self, num_features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, eps
        self.weight = nn.Parameter(torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise InputError(f"PositionNorm2d expects (N, {self.num_features}, H, W), got {tuple(x.shape)}")
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        if self.detach:
            var = var.detach()
        return (x - mean) / (var + self.eps).sqrt() * self.weight[None, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class StochasticDepth(nn.Module):
    """In training, zero a whole residual branch per sample with probability ``p`` (scaling the kept
    ones by ``1 / (1 - p)``); the identity in evaluation. ``(N, ...) -> (N, ...)``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise InputError(f"stochastic depth probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep if keep > 0 else x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ConvNeXtBlock(nn.Module):
    """7x7 depthwise conv -> norm -> 1x1 conv (x4 width) -> 1x1 conv, times a layer scale, plus ``x``."""

    def __init__(
        self,
        dim: int,
        layer_scale: float,
        stochastic_depth_prob: float,
        conv_layer: Callable[..., nn.Module],
        norm_layer: Callable[[int], nn.Module],
    ) -> None:
        super().__init__()
        self.block = nn.Sequential(
            conv_layer(dim, dim, 7, padding=3, groups=dim),
            norm_layer(dim),
            conv_layer(dim, 4 * dim, 1),
            conv_layer(4 * dim, dim, 1),
        )
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), float(layer_scale)))
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob)

    def forward(self, x: Tensor) -> Tensor:
        return self.stochastic_depth(self.layer_scale * self.block(x)) + x


class ConvNeXt(nn.Module):
    """B-cos ConvNeXt: ``(N, 3, H, W)`` in [0, 1] -> ``(N, num_classes)``; ``H, W`` multiples of 32.

    Parameters
    ----------
    stages:
        ``(channels, blocks)`` per stage.
    logit_layer:
        The final :class:`~alignnet.layers.LogitLayer` (temperature and bias).
    conv_layer, norm_layer:
        Layer types of the convolutions and norms.
    stochastic_depth_prob:
        Drop probability of the last block's branch (training only), linearly increasing from 0.
    layer_scale:
        Initial value of the per-channel scale of each block's branch.
    """

    def __init__(
        self,
        stages: tuple[tuple[int, int], ...],
        num_classes: int,
        logit_layer: LogitLayer,
        conv_layer: Callable[..., nn.Module],
        norm_layer: Callable[[int], nn.Module],
        stochastic_depth_prob: float = 0.0,
        layer_scale: float = 1e-6,
    ) -> None:
        super().__init__()
        self.encode = AddInverse()
        first = stages[0][0]
        layers: list[nn.Module] = [conv_layer(6, first, 4, stride=4), norm_layer(first)]
        total, block_id = sum(n for _, n in stages), 0
        for i, (channels, blocks) in enumerate(stages):
            stage = []
            for _ in range(blocks):
                p = stochastic_depth_prob * block_id / (total - 1.0)
                stage.append(ConvNeXtBlock(channels, layer_scale, p, conv_layer, norm_layer))
                block_id += 1
            layers.append(nn.Sequential(*stage))
            if i + 1 < len(stages):  # downsampling
                layers.append(nn.Sequential(norm_layer(channels), conv_layer(channels, stages[i + 1][0], 2, stride=2)))
        self.features = nn.Sequential(*layers)
        self.num_features = stages[-1][0]
        self.classifier = nn.Sequential(norm_layer(self.num_features), conv_layer(self.num_features, num_classes, 1))
        self.avgpool = GlobalAvgPool2d()
        self.logit_layer = logit_layer
        for m in self.modules():  # the package's initialisation (only the weights' directions matter)
            if isinstance(m, BcosConv2d):
                nn.init.trunc_normal_(m.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        x = self.classifier(self.features(self.encode(x)))
        return self.logit_layer(self.avgpool(x))


_NORMS = {"position": partial(PositionNorm2d, eps=1e-6), "batch_uncentered": BatchNormUncentered2d}


def _convnext(stages, num_classes, b, logit_bias, learn_logit_bias, stochastic_depth_prob, norm: str) -> ConvNeXt:
    num_classes = check_num_classes(num_classes)
    model = ConvNeXt(
        stages,
        num_classes,
        logit_layer=v2_logit_layer(num_classes, logit_bias, learn_bias=learn_logit_bias),
        conv_layer=partial(BcosConv2d, b=b),
        norm_layer=_NORMS[norm],
        stochastic_depth_prob=stochastic_depth_prob,
    )
    # the long-schedule recipe evaluates at shorter side 232, centre crop 224 (torchvision's new recipe)
    return annotate(model, (224, 224), PAPER_BCOS_V2, resize=232)


@register_model
def bcos_convnext_tiny(
    num_classes: int = 1000,
    b: float = 2.0,
    logit_bias: float | None = None,
    learn_logit_bias: bool = False,
    stochastic_depth_prob: float = 0.1,
) -> ConvNeXt:
    """B-cos ConvNeXt-T with position norms (``bcos`` ``convnext_tiny``, the ``_pn`` weights; 28.54M parameters)."""
    return _convnext(TINY, num_classes, b, logit_bias, learn_logit_bias, stochastic_depth_prob, "position")


@register_model
def bcos_convnext_base(
    num_classes: int = 1000,
    b: float = 2.0,
    logit_bias: float | None = None,
    learn_logit_bias: bool = False,
    stochastic_depth_prob: float = 0.5,
) -> ConvNeXt:
    """B-cos ConvNeXt-B with position norms (``bcos`` ``convnext_base``, the ``_pn`` weights; 88.47M parameters)."""
    return _convnext(BASE, num_classes, b, logit_bias, learn_logit_bias, stochastic_depth_prob, "position")


@register_model
def bcos_convnext_tiny_bnu(
    num_classes: int = 1000,
    b: float = 2.0,
    logit_bias: float | None = None,
    learn_logit_bias: bool = False,
    stochastic_depth_prob: float = 0.1,
) -> ConvNeXt:
    """B-cos ConvNeXt-T with uncentered batch norms (``bcos`` ``convnext_tiny_bnu``; 28.54M parameters)."""
    return _convnext(TINY, num_classes, b, logit_bias, learn_logit_bias, stochastic_depth_prob, "batch_uncentered")


@register_model
def bcos_convnext_base_bnu(
    num_classes: int = 1000,
    b: float = 2.0,
    logit_bias: float | None = None,
    learn_logit_bias: bool = False,
    stochastic_depth_prob: float = 0.5,
) -> ConvNeXt:
    """B-cos ConvNeXt-B with uncentered batch norms (``bcos`` ``convnext_base_bnu``; 88.47M parameters)."""
    return _convnext(BASE, num_classes, b, logit_bias, learn_logit_bias, stochastic_depth_prob, "batch_uncentered")
