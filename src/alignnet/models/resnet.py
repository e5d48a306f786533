"""B-cos ResNets and ResNeXts (docs/models.md#imagenet-models; B-cos v2).

The torchvision layout without activations (the B-cos non-linearity is in the convolutions):
convolution and norm layer types are passed in, so one definition builds the v2 networks
(uncentered batch norm), the v1 ones (MaxOut 2, v1 scale, no norms) and CIFAR-size ones.
As in the ``bcos`` package, the stem pools by averaging and the classifier is a 1x1 B-cos
convolution applied *before* global average pooling, so module names and state dicts line up
with that package's (up to its ``linear.weight`` naming, see :mod:`.convert`).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from ..errors import InputError
from ..layers import AddInverse, AvgPool2d, GlobalAvgPool2d, LogitLayer
from ..layers._mode import _autograd_needs, _capturing_graph
from ._common import check_num_classes, layer_types, v2_logit_layer
from ._registry import PAPER_BCOS_V1, PAPER_BCOS_V2, annotate, register_model

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "bcos_resnet18",
    "bcos_resnet34",
    "bcos_resnet50",
    "bcos_resnet101",
    "bcos_resnet152",
    "bcos_resnext50_32x4d",
    "bcos_resnet34_v1",
    "bcos_resnet50_v1",
    "bcos_resnet20",
    "bcos_resnet56",
]

ConvLayer = Callable[..., nn.Module]
NormLayer = Callable[[int], nn.Module] | None


def _norm(norm_layer: NormLayer, channels: int) -> nn.Module:
    return nn.Identity() if norm_layer is None else norm_layer(channels)


def _add_shortcut(out: Tensor, shortcut: Tensor) -> Tensor:
    """``out + shortcut``; in place when nothing needs ``out`` afterwards (inference: no new activation-sized
    tensor, as torchvision's ``out += identity``). ``out`` is the block's own fresh output."""
    in_place = not (_autograd_needs(out, shortcut) or _capturing_graph())
    if (
        in_place
        and out.shape == shortcut.shape
        and out.dtype == shortcut.dtype
        and out.data_ptr() != shortcut.data_ptr()
    ):
        return out.add_(shortcut)
    return out + shortcut


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with norms and an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        conv_layer: ConvLayer,
        norm_layer: NormLayer,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise InputError("BasicBlock supports only groups=1 and width_per_group=64")
        self.conv1 = conv_layer(in_planes, planes, 3, stride=stride, padding=1)
        self.bn1 = _norm(norm_layer, planes)
        self.conv2 = conv_layer(planes, planes, 3, stride=1, padding=1)
        self.bn2 = _norm(norm_layer, planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.bn1(self.conv1(x))))
        return _add_shortcut(out, x if self.downsample is None else self.downsample(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, grouped) -> 1x1 convolutions with norms, expansion 4 (ResNet v1.5)."""

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int,
        downsample: nn.Module | None,
        conv_layer: ConvLayer,
        norm_layer: NormLayer,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv_layer(in_planes, width, 1)
        self.bn1 = _norm(norm_layer, width)
        self.conv2 = conv_layer(width, width, 3, stride=stride, padding=1, groups=groups)
        self.bn2 = _norm(norm_layer, width)
        self.conv3 = conv_layer(width, planes * self.expansion, 1)
        self.bn3 = _norm(norm_layer, planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv3(self.bn2(self.conv2(self.bn1(self.conv1(x))))))
        return _add_shortcut(out, x if self.downsample is None else self.downsample(x))


class ResNet(nn.Module):
    """B-cos ResNet: ``(N, 3, H, W)`` images in [0, 1] -> ``(N, num_classes)`` logits.

    Parameters
    ----------
    block, layers:
        Block type and the number of blocks per stage (3 or 4 stages).
    conv_layer, norm_layer:
        Layer types, e.g. from :func:`alignnet.models._common.layer_types`; ``norm_layer=None``
        for none.
    logit_layer:
        The final :class:`LogitLayer` (temperature and bias).
    inplanes:
        Channels of the first stage (64 for ImageNet, 16 for the CIFAR ResNets).
    groups, width_per_group:
        ResNeXt cardinality and width.
    small_inputs:
        3x3 stride-1 stem without pooling (CIFAR); else 7x7 stride-2 and a 3x3 stride-2 average pool.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: list[int],
        num_classes: int,
        conv_layer: ConvLayer,
        norm_layer: NormLayer,
        logit_layer: LogitLayer,
        inplanes: int = 64,
        groups: int = 1,
        width_per_group: int = 64,
        small_inputs: bool = False,
    ) -> None:
        super().__init__()
        if len(layers) not in (3, 4):
            raise InputError(f"layers must list 3 or 4 stages, got {layers}")
        self.encode = AddInverse()
        if small_inputs:
            self.conv1 = conv_layer(6, inplanes, 3, stride=1, padding=1)
            self.pool = nn.Identity()
        else:
            self.conv1 = conv_layer(6, inplanes, 7, stride=2, padding=3)
            self.pool = AvgPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = _norm(norm_layer, inplanes)
        self._in_planes, self._groups, self._base_width = inplanes, groups, width_per_group
        self._conv_layer, self._norm_layer = conv_layer, norm_layer
        stages = []
        for i, blocks in enumerate(layers):
            stages.append(self._make_stage(block, inplanes * 2**i, blocks, stride=1 if i == 0 else 2))
        self.layer1, self.layer2, self.layer3 = stages[:3]
        self.layer4 = stages[3] if len(stages) == 4 else nn.Identity()
        self.num_features = inplanes * 2 ** (len(layers) - 1) * block.expansion
        self.fc = conv_layer(self.num_features, num_classes, 1)
        self.avgpool = GlobalAvgPool2d()
        self.logit_layer = logit_layer
        del self._conv_layer, self._norm_layer  # layer factories are not module state

    def _make_stage(self, block, planes: int, blocks: int, stride: int) -> nn.Sequential:
        conv_layer, norm_layer = self._conv_layer, self._norm_layer
        downsample = None
        if stride != 1 or self._in_planes != planes * block.expansion:
            downsample = nn.Sequential(
                conv_layer(self._in_planes, planes * block.expansion, 1, stride=stride),
                _norm(norm_layer, planes * block.expansion),
            )
        kw = dict(conv_layer=conv_layer, norm_layer=norm_layer, groups=self._groups, base_width=self._base_width)
        stage = [block(self._in_planes, planes, stride, downsample, **kw)]
        self._in_planes = planes * block.expansion
        stage += [block(self._in_planes, planes, 1, None, **kw) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.bn1(self.conv1(self.encode(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.logit_layer(self.avgpool(self.fc(x)))


def _v2(block, layers, num_classes, b, logit_bias, learn_logit_bias, **kw) -> ResNet:
    num_classes = check_num_classes(num_classes)
    conv, norm = layer_types("v2", b)
    logit = v2_logit_layer(num_classes, logit_bias, learn_bias=learn_logit_bias)
    return ResNet(block, layers, num_classes, conv, norm, logit, **kw)


def _v1(block, layers, num_classes, b, logit_bias, temperature) -> ResNet:
    num_classes = check_num_classes(num_classes)
    conv, norm = layer_types("v1", b)
    return ResNet(block, layers, num_classes, conv, norm, v2_logit_layer(num_classes, logit_bias, temperature))


@register_model
def bcos_resnet18(
    num_classes: int = 1000, b: float = 2.0, logit_bias: float | None = None, learn_logit_bias: bool = False
) -> ResNet:
    """B-cos v2 ResNet-18 (11.69M parameters with 1000 classes)."""
    return annotate(
        _v2(BasicBlock, [2, 2, 2, 2], num_classes, b, logit_bias, learn_logit_bias), (224, 224), PAPER_BCOS_V2
    )


@register_model
def bcos_resnet34(
    num_classes: int = 1000, b: float = 2.0, logit_bias: float | None = None, learn_logit_bias: bool = False
) -> ResNet:
    """B-cos v2 ResNet-34."""
    return annotate(
        _v2(BasicBlock, [3, 4, 6, 3], num_classes, b, logit_bias, learn_logit_bias), (224, 224), PAPER_BCOS_V2
    )


@register_model
def bcos_resnet50(
    num_classes: int = 1000, b: float = 2.0, logit_bias: float | None = None, learn_logit_bias: bool = False
) -> ResNet:
    """B-cos v2 ResNet-50."""
    return annotate(
        _v2(Bottleneck, [3, 4, 6, 3], num_classes, b, logit_bias, learn_logit_bias), (224, 224), PAPER_BCOS_V2
    )


@register_model
def bcos_resnet101(
    num_classes: int = 1000, b: float = 2.0, logit_bias: float | None = None, learn_logit_bias: bool = False
) -> ResNet:
    """B-cos v2 ResNet-101."""
    model = _v2(Bottleneck, [3, 4, 23, 3], num_classes, b, logit_bias, learn_logit_bias)
    return annotate(model, (224, 224), PAPER_BCOS_V2)


@register_model
def bcos_resnet152(
    num_classes: int = 1000, b: float = 2.0, logit_bias: float | None = None, learn_logit_bias: bool = False
) -> ResNet:
    """B-cos v2 ResNet-152."""
    model = _v2(Bottleneck, [3, 8, 36, 3], num_classes, b, logit_bias, learn_logit_bias)
    return annotate(model, (224, 224), PAPER_BCOS_V2)


@register_model
def bcos_resnext50_32x4d(
    num_classes: int = 1000, b: float = 2.0, logit_bias: float | None = None, learn_logit_bias: bool = False
) -> ResNet:
    """B-cos v2 ResNeXt-50 (32 groups of width 4)."""
    model = _v2(Bottleneck, [3, 4, 6, 3], num_classes, b, logit_bias, learn_logit_bias, groups=32, width_per_group=4)
    return annotate(model, (224, 224), PAPER_BCOS_V2)


@register_model
def bcos_resnet34_v1(
    num_classes: int = 1000, b: float = 2.0, logit_bias: float | None = None, temperature: float = 1.0
) -> ResNet:
    """B-cos v1-style ResNet-34: MaxOut 2, v1 output scale, no normalisation layers."""
    return annotate(_v1(BasicBlock, [3, 4, 6, 3], num_classes, b, logit_bias, temperature), (224, 224), PAPER_BCOS_V1)


@register_model
def bcos_resnet50_v1(
    num_classes: int = 1000, b: float = 2.0, logit_bias: float | None = None, temperature: float = 1.0
) -> ResNet:
    """B-cos v1-style ResNet-50: MaxOut 2, v1 output scale, no normalisation layers."""
    return annotate(_v1(Bottleneck, [3, 4, 6, 3], num_classes, b, logit_bias, temperature), (224, 224), PAPER_BCOS_V1)


@register_model
def bcos_resnet20(
    num_classes: int = 10, b: float = 2.0, logit_bias: float | None = None, learn_logit_bias: bool = False
) -> ResNet:
    """B-cos v2 CIFAR ResNet-20: 3x3 stem, 3 stages of 3 basic blocks (16/32/64 channels)."""
    model = _v2(BasicBlock, [3, 3, 3], num_classes, b, logit_bias, learn_logit_bias, inplanes=16, small_inputs=True)
    return annotate(model, (32, 32), PAPER_BCOS_V2)


@register_model
def bcos_resnet56(
    num_classes: int = 10, b: float = 2.0, logit_bias: float | None = None, learn_logit_bias: bool = False
) -> ResNet:
    """B-cos v2 CIFAR ResNet-56: 3 stages of 9 basic blocks (16/32/64 channels)."""
    model = _v2(BasicBlock, [9, 9, 9], num_classes, b, logit_bias, learn_logit_bias, inplanes=16, small_inputs=True)
    return annotate(model, (32, 32), PAPER_BCOS_V2)
