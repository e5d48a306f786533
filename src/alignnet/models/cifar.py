"""The papers' 9-layer CIFAR-10 networks (docs/models.md#cifar-10-networks).

Both are plain stacks of dynamic layers on the 6-channel encoding, a global pool and a logit
layer: B-cos v1 ``bcos_cifar10_9l`` (MaxOut 2, v1 scale, average pool) and CoDA-Net
``coda_cifar10_9l`` ("9L-S-CoDA": DAU layers, sum pool, temperature). ``plain_cnn_9l`` is the
standard (not explainable) network of the same shape: the accuracy baseline and the source of the
shipped B-cosified model.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from ..errors import InputError
from ..layers import AddInverse, BcosConv2d, DAUConv2d, GlobalAvgPool2d, GlobalSumPool2d, LogitLayer
from ._registry import PAPER_BCOS_V1, PAPER_CODA, annotate, register_model

__all__ = [
    "PlainCNN",
    "PlainDynamicNet",
    "B_ABLATION",
    "ablation_overrides",
    "bcos_cifar10_9l",
    "coda_cifar10_9l",
    "plain_cnn_9l",
]

# 9-layer configuration shared by both papers: kernels [3]*8+[1], strides, padding 1 (last 0).
_KERNELS = [3] * 8 + [1]
_STRIDES = [1, 1, 2, 1, 1, 2, 1, 1, 1]
_BCOS_CHANNELS = [64, 64, 128, 128, 128, 256, 256, 256]  # + num_classes
_CODA_CHANNELS = [16, 16, 32, 32, 32, 64, 64, 64]  # + num_classes
_CODA_RANKS = [32, 32, 64, 64, 64, 64, 64, 64, 64]
_PRIOR_BIAS = math.log(0.1 / 0.9)  # logit of the 1-in-10 prior under BCE

# B ablation of B-cos v1 (docs/models.md#b-ablation): B -> (layer scale, logit temperature).
B_ABLATION: dict[float, tuple[float, float]] = {
    1.0: (10**0.25, 1e-3),
    1.25: (10**-0.125, 1e-3),
    1.5: (10**-0.5, 1e-2),
    1.75: (10**-0.875, 10.0),
    2.0: (10**-1.25, 100.0),
    2.25: (10**-1.625, 100.0),
    2.5: (10**-2.0, 1000.0),
}


def ablation_overrides(b: float) -> dict[str, float]:
    """``create_model`` overrides ``{b, scale, temperature}`` of the paper's B ablation table."""
    if float(b) not in B_ABLATION:
        raise InputError(f"the B ablation table has B in {sorted(B_ABLATION)}, got {b}")
    scale, temperature = B_ABLATION[float(b)]
    return {"b": float(b), "scale": scale, "temperature": temperature}


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


def _check_width(width: float) -> float:
    width = float(width)
    if not width > 0 or not math.isfinite(width):
        raise InputError(f"width must be a positive number, got {width}")
    return width


class PlainDynamicNet(nn.Module):
    """``AddInverse -> layers -> global pool -> LogitLayer``: ``(N, 3, H, W) -> (N, num_classes)``."""

    def __init__(self, layers: list[nn.Module], pool: nn.Module, logit_layer: LogitLayer) -> None:
        super().__init__()
        self.encode = AddInverse()  # first module, so explain() finds the encoding
        self.features = nn.Sequential(*layers)
        self.pool = pool
        self.logit_layer = logit_layer

    def forward(self, x: Tensor) -> Tensor:
        return self.logit_layer(self.pool(self.features(self.encode(x))))


@register_model
def bcos_cifar10_9l(
    num_classes: int = 10,
    b: float = 2.0,
    max_out: int = 2,
    scale: float | str = "v1",
    temperature: float = 1.0,
    width: float = 1.0,
    logit_bias: float = _PRIOR_BIAS,
) -> PlainDynamicNet:
    """B-cos v1 CIFAR-10 network: 9 B-cos convolutions (docs/models.md#b-cos-v1-cifar-10-network).

    ``scale`` is each layer's output divisor (``"v1"``: ``sqrt(k*k*C_in)/100``); ``width``
    multiplies every channel count except the last. For the B ablation use
    ``create_model("bcos_cifar10_9l", **ablation_overrides(b))``.
    """
    width = _check_width(width)
    channels = [_scaled(c, width) for c in _BCOS_CHANNELS] + [num_classes]
    layers, c_in = [], 6
    for c_out, k, s in zip(channels, _KERNELS, _STRIDES, strict=True):
        layers.append(BcosConv2d(c_in, c_out, k, stride=s, padding=k // 2, b=b, max_out=max_out, scale=scale))
        c_in = c_out
    model = PlainDynamicNet(layers, GlobalAvgPool2d(), LogitLayer(temperature, logit_bias))
    return annotate(model, (32, 32), PAPER_BCOS_V1)


@register_model
def coda_cifar10_9l(
    num_classes: int = 10,
    temperature: float = 1000.0,
    norm: str = "squash",
    width: float = 1.0,
    logit_bias: float = _PRIOR_BIAS,
) -> PlainDynamicNet:
    """CoDA-Net 9L-S-CoDA for CIFAR-10 (docs/models.md#coda-net-9l-s-coda-sq): 9 DAU layers, sum pool.

    ``width`` multiplies the channel counts (except the last) and the ranks (ints >= 1).
    """
    width = _check_width(width)
    channels = [_scaled(c, width) for c in _CODA_CHANNELS] + [num_classes]
    ranks = [_scaled(r, width) for r in _CODA_RANKS]
    layers, c_in = [], 6
    for c_out, k, s, r in zip(channels, _KERNELS, _STRIDES, ranks, strict=True):
        layers.append(DAUConv2d(c_in, c_out, k, rank=r, stride=s, padding=k // 2, norm=norm))
        c_in = c_out
    model = PlainDynamicNet(layers, GlobalSumPool2d(), LogitLayer(temperature, logit_bias))
    return annotate(model, (32, 32), PAPER_CODA)


# ----------------------------------------------------------- standard (non-B-cos) baseline
class PlainCNN(nn.Module):
    """``features -> global average pool``: ``(N, 3, H, W) -> (N, num_classes)`` (not dynamic-linear)."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).mean(dim=(2, 3))


@register_model
def plain_cnn_9l(num_classes: int = 10, width: float = 1.0, batch_norm: bool = True) -> PlainCNN:
    """Standard 9-layer CNN (not B-cos): the B-cos network's kernels, strides and channels x ``width``
    with ordinary ``Conv2d`` (+ BatchNorm) + ReLU, global average pooling to ``num_classes`` logits.

    Input: ``(N, 3, H, W)`` in [0, 1], the same images as the B-cos/CoDA networks (no encoding).
    ``alignnet.explain`` does not apply to it; :func:`alignnet.bcosify` converts it.
    """
    width = _check_width(width)
    channels = [_scaled(c, width) for c in _BCOS_CHANNELS]
    layers: list[nn.Module] = []
    c_in = 3
    for c_out, k, s in zip(channels, _KERNELS[:-1], _STRIDES[:-1], strict=True):
        layers.append(nn.Conv2d(c_in, c_out, k, stride=s, padding=k // 2, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.ReLU(inplace=True))
        c_in = c_out
    layers.append(nn.Conv2d(c_in, num_classes, 1))
    return annotate(PlainCNN(layers), (32, 32), "standard CNN baseline (not explainable)", encoding="none")
