"""B-cos VGG-11 (v2 with uncentered batch norm "BNU", and the v1 style with MaxOut).

Configuration "A" of VGG with average instead of max pooling and no activations; the
classifier is convolutional (7x7 then two 1x1 B-cos convolutions) and runs before global
average pooling, as in the ``bcos`` package, so any input size works.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..layers import AddInverse, AvgPool2d, GlobalAvgPool2d, LogitLayer
from ._common import check_num_classes, layer_types, v2_logit_layer
from ._registry import PAPER_BCOS_V1, PAPER_BCOS_V2, annotate, register_model

__all__ = ["VGG", "bcos_vgg11_bnu", "bcos_vgg11_v1"]

_CFG_A = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]


class VGG(nn.Module):
    """B-cos VGG: ``(N, 3, H, W)`` in [0, 1] -> ``(N, num_classes)``.

    ``cfg`` lists conv widths and ``"M"`` for a 2x2 average pool; ``norm_layer`` follows each conv.
    """

    def __init__(
        self,
        cfg: list[int | str],
        num_classes: int,
        conv_layer,
        norm_layer,
        logit_layer: LogitLayer,
        hidden: int = 4096,
    ) -> None:
        super().__init__()
        self.encode = AddInverse()
        layers: list[nn.Module] = []
        c_in = 6
        for v in cfg:
            if v == "M":
                layers.append(AvgPool2d(kernel_size=2, stride=2))
            else:
                layers.append(conv_layer(c_in, v, 3, padding=1))
                if norm_layer is not None:
                    layers.append(norm_layer(v))
                c_in = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            conv_layer(c_in, hidden, 7, padding=3),
            conv_layer(hidden, hidden, 1),
            conv_layer(hidden, num_classes, 1),
        )
        self.avgpool = GlobalAvgPool2d()
        self.logit_layer = logit_layer

    def forward(self, x: Tensor) -> Tensor:
        return self.logit_layer(self.avgpool(self.classifier(self.features(self.encode(x)))))


@register_model
def bcos_vgg11_bnu(
    num_classes: int = 1000, b: float = 2.0, logit_bias: float | None = None, learn_logit_bias: bool = False
) -> VGG:
    """B-cos v2 VGG-11 with uncentered batch norm after every convolution (132.9M parameters)."""
    num_classes = check_num_classes(num_classes)
    conv, norm = layer_types("v2", b)
    model = VGG(_CFG_A, num_classes, conv, norm, v2_logit_layer(num_classes, logit_bias, learn_bias=learn_logit_bias))
    return annotate(model, (224, 224), PAPER_BCOS_V2)


@register_model
def bcos_vgg11_v1(
    num_classes: int = 1000, b: float = 2.0, logit_bias: float | None = None, temperature: float = 1.0
) -> VGG:
    """B-cos v1-style VGG-11: MaxOut 2, v1 output scale, no normalisation layers."""
    num_classes = check_num_classes(num_classes)
    conv, norm = layer_types("v1", b)
    model = VGG(_CFG_A, num_classes, conv, norm, v2_logit_layer(num_classes, logit_bias, temperature))
    return annotate(model, (224, 224), PAPER_BCOS_V1)
