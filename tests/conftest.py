"""Tiny seeded networks shared by the tests."""

import math

import pytest
import torch
from torch import nn

from alignnet.layers import (
    AddInverse,
    BatchNormUncentered2d,
    BcosConv2d,
    BcosLinear,
    DAUConv2d,
    GlobalAvgPool2d,
    GlobalSumPool2d,
    LayerNormUncentered,
    LogitLayer,
)

LOGIT_BIAS = math.log(0.1 / 0.9)


class TinyResidual(nn.Module):
    """A small B-cos ResNet-like net: residual add, uncentered BN, max pool, linear head."""

    def __init__(self, b=2.0, max_out=1):
        super().__init__()
        self.enc = AddInverse()
        self.stem = BcosConv2d(6, 8, 3, padding=1, b=b, max_out=max_out)
        self.bn = BatchNormUncentered2d(8)
        self.block = BcosConv2d(8, 8, 3, padding=1, b=b, max_out=max_out)
        self.pool = nn.MaxPool2d(2)
        self.down = BcosConv2d(8, 12, 1, b=b)
        self.head = nn.Sequential(GlobalAvgPool2d(), LayerNormUncentered(12), BcosLinear(12, 5, b=b, max_out=max_out))
        self.logit = LogitLayer(temperature=2.0, bias=LOGIT_BIAS)

    def forward(self, x):
        x = self.bn(self.stem(self.enc(x)))
        x = x + self.block(x)
        x = self.down(self.pool(x))
        return self.logit(self.head(x))


def tiny_bcos(b=2.0, max_out=1):
    return nn.Sequential(
        AddInverse(),
        BcosConv2d(6, 8, 3, padding=1, b=b, max_out=max_out, scale="v1"),
        BcosConv2d(8, 8, 3, stride=2, padding=1, b=b, max_out=max_out),
        BcosConv2d(8, 10, 1, b=b, max_out=max_out),
        GlobalAvgPool2d(),
        LogitLayer(bias=LOGIT_BIAS),
    )


def tiny_coda(norm="squash"):
    return nn.Sequential(
        AddInverse(),
        DAUConv2d(6, 8, 3, rank=4, padding=1, norm=norm),
        DAUConv2d(8, 8, 3, rank=4, stride=2, padding=1, norm=norm),
        DAUConv2d(8, 10, 1, rank=4, norm=norm),
        GlobalSumPool2d(),
        LogitLayer(temperature=10.0, bias=LOGIT_BIAS),
    )


@pytest.fixture
def images():
    torch.manual_seed(0)
    return torch.rand(3, 3, 12, 12)
