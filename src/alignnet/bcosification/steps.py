"""The B-cosification recipe, one small transformation per step (docs/bcosification.md#the-recipe).

Each function takes a module tree and converts it **in place** (``bcosify`` runs them on a copy):

1. :func:`expand_first_conv` - the first convolution gets weights ``cat(W, -W) / 2`` for the
   ``[x, 1-x]`` encoding (with :class:`InputEncoding`, which normalises the 6 channels).
2. :func:`remove_biases` - every convolution / linear layer loses its bias.
3. :func:`convert_norms` - ``BatchNorm2d`` -> uncentered batch norm without bias; ``LayerNorm``
   (and torchvision's ``LayerNorm2d``) -> bias-free layer norm with a detachable scale.
4. :func:`convert_to_bcos` - bias-free ``Conv2d`` / ``Linear`` -> B-cos layers keeping the
   unnormalised weights; ``MultiheadAttention`` -> B-cos self-attention.
5. :func:`replace_max_pools` - ``MaxPool2d`` -> ``AvgPool2d`` of the same kernel/stride/padding
   (``AvgPool2d(3, 2, 1)`` for ResNet and DenseNet stems).
6. :func:`convert_activations` - ``ReLU`` kept (a gate) or dropped; ``GELU``/``SiLU`` -> detachable gates.
7. :func:`classifier_to_conv` - the classifier ``Linear`` -> 1x1 convolution, applied before global
   average pooling (the network is assembled in :mod:`alignnet.bcosification.convert`).
8. :func:`logit_bias` - the fixed logit bias ``-log(C - 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..errors import InputError
from ..layers import AvgPool2d, BatchNormUncentered2d, LogitLayer
from ._layers import BcosifiedAttention, BcosifiedConv2d, BcosifiedLinear, DetachableGate, DetachableLayerNorm

__all__ = [
    "classifier_to_conv",
    "convert_activations",
    "convert_norms",
    "convert_to_bcos",
    "expand_first_conv",
    "linear_as_conv",
    "logit_bias",
    "remove_biases",
    "replace_max_pools",
    "replace_modules",
]


def replace_modules(root: nn.Module, convert: Callable[[str, nn.Module], nn.Module | None]) -> nn.Module:
    """Replace every submodule for which ``convert(name, module)`` returns a module (depth first,
    parents before children; a replaced module's children are not visited). Returns ``root``."""

    def visit(parent: nn.Module, prefix: str) -> None:
        for name, child in list(parent.named_children()):
            full = f"{prefix}.{name}" if prefix else name
            new = convert(full, child)
            if new is not None:
                setattr(parent, name, new)
            else:
                visit(child, full)

    visit(root, "")
    return root


def _copy(dst: nn.Parameter | torch.Tensor, src: torch.Tensor) -> None:
    with torch.no_grad():
        dst.copy_(src.detach().reshape(dst.shape))


def expand_first_conv(root: nn.Module, image_channels: int = 3) -> nn.Conv2d:
    """Step 1: the first ``Conv2d`` (in ``root.modules()`` order) takes the ``[x, 1-x]`` encoding.

    Its weight ``W`` becomes ``cat(W, -W, dim=1) / 2``: on the normalised encoding ``(y, -y)`` it
    computes exactly ``W y``, the original convolution of the normalised image. Returns the new conv.
    """
    found = next(((n, m) for n, m in root.named_modules() if isinstance(m, nn.Conv2d)), None)
    if found is None:
        raise InputError("the model has no Conv2d to take the [x, 1-x] input encoding")
    name, conv = found
    if conv.in_channels != image_channels or conv.groups != 1:
        raise InputError(
            f"the first convolution {name!r} takes {conv.in_channels} channels (groups={conv.groups}); "
            f"B-cosification expects {image_channels} image channels and groups=1"
        )
    new = nn.Conv2d(
        2 * image_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    _copy(new.weight, torch.cat([conv.weight, -conv.weight], dim=1) / 2)
    if conv.bias is not None:
        _copy(new.bias, conv.bias)
    replace_modules(root, lambda _n, m: new if m is conv else None)
    return new


def remove_biases(root: nn.Module) -> nn.Module:
    """Step 2: drop the bias of every ``Conv2d``/``Linear`` (a bias is not attributable to any pixel)."""
    for m in root.modules():
        if isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None:
            m.bias = None
        if isinstance(m, nn.MultiheadAttention):
            m.in_proj_bias, m.out_proj.bias = None, None
    return root


def convert_norms(root: nn.Module, layer_norm: str = "centered") -> nn.Module:
    """Step 3: ``BatchNorm2d`` -> :class:`~alignnet.layers.BatchNormUncentered2d` (scale and running
    variance kept, mean and bias dropped); ``LayerNorm``/``LayerNorm2d`` -> :class:`DetachableLayerNorm`
    (weight kept, bias dropped; ``layer_norm="centered"`` keeps the mean subtraction, ``"uncentered"`` drops it)."""
    if layer_norm not in ("centered", "uncentered"):
        raise InputError(f"layer_norm must be 'centered' or 'uncentered', got {layer_norm!r}")

    def convert(_name: str, m: nn.Module) -> nn.Module | None:
        if isinstance(m, nn.BatchNorm2d):
            new = BatchNormUncentered2d(m.num_features, m.eps, m.momentum, m.affine)
            if m.affine:
                _copy(new.weight, m.weight)
            if m.track_running_stats and m.running_var is not None:
                _copy(new.running_var, m.running_var)
                _copy(new.num_batches_tracked, m.num_batches_tracked)
            return new
        if isinstance(m, nn.LayerNorm):
            if len(m.normalized_shape) != 1:
                raise InputError(f"LayerNorm over {tuple(m.normalized_shape)} is not supported (one dimension only)")
            channels_first = type(m).__name__ == "LayerNorm2d"  # torchvision.ops.misc / convnext
            new = DetachableLayerNorm(m.normalized_shape[0], m.eps, layer_norm == "centered", channels_first)
            if m.weight is not None:
                _copy(new.weight, m.weight)
            return new
        return None

    return replace_modules(root, convert)


def _conv_args(conv: nn.Conv2d, name: str) -> tuple:
    if conv.dilation not in ((1, 1), 1) or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise InputError(
            f"cannot B-cosify {name!r}: {conv} (dilation, padding_mode other than zeros and string padding "
            "are not supported by B-cos convolutions)"
        )
    return conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.groups


def convert_to_bcos(root: nn.Module, b: float = 2.0) -> nn.Module:
    """Step 4: bias-free ``Conv2d``/``Linear`` -> :class:`BcosifiedConv2d`/:class:`BcosifiedLinear` with the
    same, unnormalised weights; ``nn.MultiheadAttention`` -> :class:`BcosifiedAttention`. A layer that
    still has a bias raises ``ValueError`` (run :func:`remove_biases` first)."""

    def convert(name: str, m: nn.Module) -> nn.Module | None:
        if isinstance(m, nn.MultiheadAttention):
            if not m._qkv_same_embed_dim or m.in_proj_bias is not None or m.out_proj.bias is not None:
                raise InputError(f"cannot B-cosify {name!r}: biased or key/value-dimension attention")
            new = BcosifiedAttention(m.embed_dim, m.num_heads, b, m.dropout, m.batch_first)
            new = new.to(m.in_proj_weight.device, m.in_proj_weight.dtype)
            _copy(new.in_proj.weight, m.in_proj_weight)
            _copy(new.out_proj.weight, m.out_proj.weight)
            return new
        if isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None:
            raise InputError(f"{name!r} still has a bias: remove biases before converting to B-cos")
        if isinstance(m, nn.Conv2d):
            new = BcosifiedConv2d(*_conv_args(m, name)[:5], groups=m.groups, b=b)
        elif isinstance(m, nn.Linear):
            new = BcosifiedLinear(m.in_features, m.out_features, b=b)
        else:
            return None
        new = new.to(m.weight.device, m.weight.dtype)
        _copy(new.weight, m.weight)
        return new

    return replace_modules(root, convert)


def replace_max_pools(root: nn.Module) -> nn.Module:
    """Step 5: ``MaxPool2d(k, s, p)`` -> ``AvgPool2d(k, s, p)`` (ResNet/DenseNet: ``AvgPool2d(3, 2, 1)``).
    A max pool is a selection (dynamic-linear) but it makes explanations sparse; the paper averages."""

    def convert(name: str, m: nn.Module) -> nn.Module | None:
        if isinstance(m, nn.MaxPool2d):
            if m.dilation not in (1, (1, 1)):
                raise InputError(f"cannot replace {name!r}: dilated max pooling")
            return AvgPool2d(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode)
        return None

    return replace_modules(root, convert)


def convert_activations(root: nn.Module, keep_activation: bool = True) -> nn.Module:
    """Step 6: ``ReLU`` stays (a non-in-place gate) and ``GELU``/``SiLU`` become :class:`DetachableGate`
    (same values; explanation mode detaches the gate); with ``keep_activation=False`` (the paper's
    "no activation" ablation) all of them become ``Identity``."""

    def convert(_name: str, m: nn.Module) -> nn.Module | None:
        if isinstance(m, nn.ReLU | nn.GELU | nn.SiLU) and not keep_activation:
            return nn.Identity()
        if isinstance(m, nn.ReLU):
            return nn.ReLU()  # in-place ReLUs would overwrite tensors the B-cos backward keeps
        if isinstance(m, nn.GELU):
            return DetachableGate("gelu", m.approximate)
        if isinstance(m, nn.SiLU):
            return DetachableGate("silu")
        return None

    return replace_modules(root, convert)


def linear_as_conv(linear: nn.Linear, kernel_size: tuple[int, int] = (1, 1)) -> nn.Conv2d:
    """A ``Linear`` on flattened ``(C, kh, kw)`` maps as the equivalent ``Conv2d(C, out, (kh, kw))``."""
    kh, kw = kernel_size
    if linear.in_features % (kh * kw):
        raise InputError(f"{linear} does not act on flattened {kh}x{kw} maps")
    conv = nn.Conv2d(linear.in_features // (kh * kw), linear.out_features, (kh, kw), bias=linear.bias is not None)
    _copy(conv.weight, linear.weight)
    if linear.bias is not None:
        _copy(conv.bias, linear.bias)
    return conv


def classifier_to_conv(classifier: nn.Linear | nn.Conv2d, num_classes: int | None = None) -> nn.Conv2d:
    """Step 7: the classifier as a bias-free 1x1 convolution, to run on every position *before* global
    average pooling ("GAP reorder"). ``num_classes`` other than the classifier's: a new random head."""
    if isinstance(classifier, nn.Conv2d):
        if classifier.kernel_size != (1, 1):
            raise InputError(f"the classifier convolution must be 1x1, got {classifier}")
        conv = classifier
    elif isinstance(classifier, nn.Linear):
        conv = linear_as_conv(classifier)
    else:
        raise TypeError(f"the classifier must be nn.Linear or a 1x1 nn.Conv2d, got {type(classifier).__name__}")
    if num_classes is not None and num_classes != conv.out_channels:
        conv = linear_as_conv(nn.Linear(conv.in_channels, num_classes))
    conv.bias = None
    return conv


def logit_bias(num_classes: int) -> LogitLayer:
    """Step 8: the fixed logit bias ``-log(C - 1)`` (the BCE prior of one class among C)."""
    if num_classes < 2:
        raise InputError(f"B-cosification needs at least 2 classes, got {num_classes}")
    return LogitLayer(bias=-math.log(num_classes - 1))
