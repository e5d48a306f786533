"""B-cos DenseNets (B-cos v2 and the v1-style DenseNet-121).

DenseNet-BC without activations: each dense layer is ``norm -> 1x1 conv -> norm -> 3x3 conv``
on the concatenation of all earlier feature maps; transitions halve the channels and average
pool. Concatenation and average pooling are linear, so the network stays dynamic-linear.
Module names follow torchvision's (and the ``bcos`` package's) ``features.denseblockK.denselayerL``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..layers import AddInverse, AvgPool2d, GlobalAvgPool2d, LogitLayer
from ._common import check_num_classes, layer_types, v2_logit_layer
from ._registry import PAPER_BCOS_V1, PAPER_BCOS_V2, annotate, register_model

__all__ = [
    "DenseNet",
    "bcos_densenet121",
    "bcos_densenet161",
    "bcos_densenet169",
    "bcos_densenet201",
    "bcos_densenet121_v1",
]

ConvLayer = Callable[..., nn.Module]
NormLayer = Callable[[int], nn.Module] | None


def _norm(norm_layer: NormLayer, channels: int) -> nn.Module:
    return nn.Identity() if norm_layer is None else norm_layer(channels)


class _DenseLayer(nn.Module):
    def __init__(self, in_features: int, growth_rate: int, bn_size: int, conv_layer: ConvLayer, norm_layer: NormLayer):
        super().__init__()
        self.norm1 = _norm(norm_layer, in_features)
        self.conv1 = conv_layer(in_features, bn_size * growth_rate, 1)
        self.norm2 = _norm(norm_layer, bn_size * growth_rate)
        self.conv2 = conv_layer(bn_size * growth_rate, growth_rate, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.norm2(self.conv1(self.norm1(x))))


class _DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers: int, in_features: int, growth_rate: int, bn_size: int, conv_layer, norm_layer):
        super().__init__()
        for i in range(num_layers):
            layer = _DenseLayer(in_features + i * growth_rate, growth_rate, bn_size, conv_layer, norm_layer)
            self.add_module(f"denselayer{i + 1}", layer)

    def forward(self, x: Tensor) -> Tensor:
        features = x
        for layer in self.values():
            features = torch.cat([features, layer(features)], dim=1)
        return features


class DenseNet(nn.Module):
    """B-cos DenseNet-BC: ``(N, 3, H, W)`` in [0, 1] -> ``(N, num_classes)``.

    Parameters
    ----------
    growth_rate, block_config, num_init_features, bn_size:
        As in torchvision's DenseNet.
    conv_layer, norm_layer, logit_layer:
        Layer types and the final logit layer (see :mod:`.resnet`).
    """

    def __init__(
        self,
        growth_rate: int,
        block_config: tuple[int, ...],
        num_init_features: int,
        num_classes: int,
        conv_layer: ConvLayer,
        norm_layer: NormLayer,
        logit_layer: LogitLayer,
        bn_size: int = 4,
    ) -> None:
        super().__init__()
        self.encode = AddInverse()
        stem = [
            ("conv0", conv_layer(6, num_init_features, 7, stride=2, padding=3)),
            ("norm0", _norm(norm_layer, num_init_features)),
            ("pool0", AvgPool2d(kernel_size=3, stride=2, padding=1)),
        ]
        self.features = nn.Sequential(OrderedDict(stem))
        n = num_init_features
        for i, num_layers in enumerate(block_config):
            block = _DenseBlock(num_layers, n, growth_rate, bn_size, conv_layer, norm_layer)
            self.features.add_module(f"denseblock{i + 1}", block)
            n += num_layers * growth_rate
            if i != len(block_config) - 1:
                transition = nn.Sequential(
                    OrderedDict(
                        norm=_norm(norm_layer, n),
                        conv=conv_layer(n, n // 2, 1),
                        pool=AvgPool2d(kernel_size=2, stride=2),
                    )
                )
                self.features.add_module(f"transition{i + 1}", transition)
                n //= 2
        self.features.add_module("norm5", _norm(norm_layer, n))
        self.num_features = n
        self.classifier = conv_layer(n, num_classes, 1)
        self.avgpool = GlobalAvgPool2d()
        self.logit_layer = logit_layer

    def forward(self, x: Tensor) -> Tensor:
        return self.logit_layer(self.avgpool(self.classifier(self.features(self.encode(x)))))


def _build(growth, blocks, init, num_classes, b, logit_bias, learn_logit_bias, style="v2", temperature=1.0):
    num_classes = check_num_classes(num_classes)
    conv, norm = layer_types(style, b)
    logit = v2_logit_layer(num_classes, logit_bias, temperature, learn_bias=learn_logit_bias)
    model = DenseNet(growth, blocks, init, num_classes, conv, norm, logit)
    return annotate(model, (224, 224), PAPER_BCOS_V2 if style == "v2" else PAPER_BCOS_V1)


@register_model
def bcos_densenet121(
    num_classes: int = 1000, b: float = 2.0, logit_bias: float | None = None, learn_logit_bias: bool = False
) -> DenseNet:
    """B-cos v2 DenseNet-121 (growth 32, blocks 6-12-24-16)."""
    return _build(32, (6, 12, 24, 16), 64, num_classes, b, logit_bias, learn_logit_bias)


@register_model
def bcos_densenet161(
    num_classes: int = 1000, b: float = 2.0, logit_bias: float | None = None, learn_logit_bias: bool = False
) -> DenseNet:
    """B-cos v2 DenseNet-161 (growth 48, blocks 6-12-36-24, 96 initial features)."""
    return _build(48, (6, 12, 36, 24), 96, num_classes, b, logit_bias, learn_logit_bias)


@register_model
def bcos_densenet169(
    num_classes: int = 1000, b: float = 2.0, logit_bias: float | None = None, learn_logit_bias: bool = False
) -> DenseNet:
    """B-cos v2 DenseNet-169 (growth 32, blocks 6-12-32-32)."""
    return _build(32, (6, 12, 32, 32), 64, num_classes, b, logit_bias, learn_logit_bias)


@register_model
def bcos_densenet201(
    num_classes: int = 1000, b: float = 2.0, logit_bias: float | None = None, learn_logit_bias: bool = False
) -> DenseNet:
    """B-cos v2 DenseNet-201 (growth 32, blocks 6-12-48-32)."""
    return _build(32, (6, 12, 48, 32), 64, num_classes, b, logit_bias, learn_logit_bias)


@register_model
def bcos_densenet121_v1(
    num_classes: int = 1000, b: float = 2.0, logit_bias: float | None = None, temperature: float = 1.0
) -> DenseNet:
    """B-cos v1-style DenseNet-121: MaxOut 2, v1 output scale, no normalisation layers."""
    return _build(32, (6, 12, 24, 16), 64, num_classes, b, logit_bias, False, style="v1", temperature=temperature)
