"""Standard (not explainable) baselines trained with the same recipe, for accuracy comparisons.

They are not in the model registry: they do not start with ``AddInverse`` and are not
dynamic-linear, so ``alignnet.explain`` does not apply to them.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

__all__ = ["BASELINES", "plain_cnn_9l"]

_KERNELS = [3] * 8 + [1]
_STRIDES = [1, 1, 2, 1, 1, 2, 1, 1, 1]
_CHANNELS = [64, 64, 128, 128, 128, 256, 256, 256]  # the B-cos 9-layer network's


class _PlainCNN(nn.Module):
    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).mean(dim=(2, 3))


def plain_cnn_9l(num_classes: int = 10, width: float = 1.0, batch_norm: bool = True) -> nn.Module:
    """The 9-layer CIFAR network's shape (kernels, strides, channels x ``width``) with ordinary
    ``Conv2d`` (+ BatchNorm) + ReLU, global average pooling to ``num_classes`` logits.

    Input: ``(N, 3, H, W)`` in [0, 1] (same input as the B-cos/CoDA networks); output ``(N, num_classes)``.
    """
    if not width > 0 or not math.isfinite(width):
        raise ValueError(f"width must be a positive number, got {width}")
    channels = [max(1, round(c * width)) for c in _CHANNELS]
    layers: list[nn.Module] = []
    c_in = 3
    for c_out, k, s in zip(channels, _KERNELS[:-1], _STRIDES[:-1], strict=True):
        layers.append(nn.Conv2d(c_in, c_out, k, stride=s, padding=k // 2, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.ReLU(inplace=True))
        c_in = c_out
    layers.append(nn.Conv2d(c_in, num_classes, 1))
    model = _PlainCNN(layers)
    model.model_name = "plain_cnn_9l"
    model.model_args = {"num_classes": num_classes, "width": width, "batch_norm": batch_norm}
    return model


BASELINES = {"plain_cnn_9l": plain_cnn_9l}
