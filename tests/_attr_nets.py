"""Small models with known answers for the attribution and metric tests."""

from __future__ import annotations

import math

import torch
from torch import nn

from alignnet.layers import AddInverse, BcosConv2d, DAUConv2d, GlobalAvgPool2d, GlobalSumPool2d, LogitLayer


def tiny_bcos() -> nn.Module:
    return nn.Sequential(
        AddInverse(),
        BcosConv2d(6, 8, 3, padding=1, scale="v1"),
        BcosConv2d(8, 8, 3, stride=2, padding=1),
        BcosConv2d(8, 10, 1),
        GlobalAvgPool2d(),
        LogitLayer(bias=math.log(1 / 9)),
    )


def tiny_coda() -> nn.Module:
    return nn.Sequential(
        AddInverse(),
        DAUConv2d(6, 8, 3, rank=4, padding=1),
        DAUConv2d(8, 10, 1, rank=4),
        GlobalSumPool2d(),
        LogitLayer(temperature=10.0, bias=math.log(1 / 9)),
    )


def blob_position(c: int) -> tuple[int, int]:
    """Top-left corner of class c's 2x2 blob in an 8x8 image (4x4 arrangement of positions)."""
    return (c // 4) * 2, (c % 4) * 2


class TemplateNet(nn.Module):
    """Linear classifier: ``logit_c = sum of the colour channels over class c's 2x2 blob - 2``.

    Applied blockwise (8x8 blocks, summed over blocks), so on a grid of 8x8 images a class is
    only supported by the cells whose image has that class's blob: the exact contributions
    localise perfectly.
    """

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.enc = AddInverse()
        self.conv = nn.Conv2d(6, classes, 8, stride=8, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            for c in range(classes):
                r, q = blob_position(c)
                self.conv.weight[c, :3, r : r + 2, q : q + 2] = 1.0
        self.pool = GlobalSumPool2d()
        self.logit = LogitLayer(bias=-2.0)

    def forward(self, x):
        return self.logit(self.pool(self.conv(self.enc(x))))


def blob_images(per_class: int = 6, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(per_class * classes, 3, 8, 8)`` images, a 2x2 blob of random intensity at the class's position."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat(per_class)
    images = torch.zeros(len(labels), 3, 8, 8)
    strength = 0.4 + 0.6 * torch.rand(len(labels), generator=g)
    for i, c in enumerate(labels.tolist()):
        r, q = blob_position(c)
        images[i, :, r : r + 2, q : q + 2] = strength[i]
    return images, labels
