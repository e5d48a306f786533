"""Layer-type presets shared by the ImageNet-size architectures (B-cos v1 and v2 styles)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

from torch import nn

from ..errors import InputError
from ..layers import BatchNormUncentered2d, BcosConv2d, LogitLayer

__all__ = ["layer_types", "v2_logit_layer", "check_num_classes"]


def check_num_classes(num_classes: int) -> int:
    if int(num_classes) != num_classes or num_classes < 2:
        raise InputError(f"num_classes must be an integer >= 2, got {num_classes}")
    return int(num_classes)


def layer_types(style: str, b: float = 2.0) -> tuple[Callable[..., nn.Module], Callable[[int], nn.Module] | None]:
    """``(conv_layer, norm_layer)`` of a B-cos style.

    ``"v2"``: B-cos convolutions and bias-free uncentered batch norm, no MaxOut.
    ``"v1"``: MaxOut 2 and the v1 output scale ``sqrt(k*k*C_in)/100``, no normalisation layers.
    """
    if style == "v2":
        return partial(BcosConv2d, b=b), BatchNormUncentered2d
    if style == "v1":
        return partial(BcosConv2d, b=b, max_out=2, scale="v1"), None
    raise InputError(f"style must be 'v1' or 'v2', got {style!r}")


def v2_logit_layer(
    num_classes: int, logit_bias: float | None = None, temperature: float = 1.0, learn_bias: bool = False
) -> LogitLayer:
    """Logit layer with the uniform-prior bias ``-log(num_classes - 1)`` unless ``logit_bias`` is given."""
    bias = -math.log(num_classes - 1) if logit_bias is None else float(logit_bias)
    return LogitLayer(temperature=temperature, bias=bias, learn_bias=learn_bias)
