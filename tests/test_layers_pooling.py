"""alignnet.layers.AvgPool2d against torch's pooling kernel, and the in-place shortcut of the ResNet blocks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import alignnet
from alignnet.layers import AvgPool2d

CONFIGS = [  # kernel, stride, padding, count_include_pad, ceil_mode
    (3, 2, 1, True, False),  # the ResNet and DenseNet stems
    (2, 2, 0, True, False),  # DenseNet transitions, VGG
    (3, 1, 1, True, False),
    ((3, 2), (2, 1), (1, 0), True, False),
    (3, 2, 1, False, False),  # padding left out of the mean: torch's kernel
    (3, 2, 0, True, True),  # ceil_mode: torch's kernel
]


@pytest.mark.parametrize("kernel,stride,padding,include_pad,ceil", CONFIGS)
def test_values_and_input_gradients_equal_torch_pooling(kernel, stride, padding, include_pad, ceil):
    torch.manual_seed(0)
    ours = AvgPool2d(kernel, stride, padding, ceil_mode=ceil, count_include_pad=include_pad)
    ref = nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil, count_include_pad=include_pad)
    x = torch.randn(3, 5, 13, 10, dtype=torch.float64, requires_grad=True)
    out, expected = ours(x), ref(x)
    torch.testing.assert_close(out, expected, rtol=1e-13, atol=1e-14)
    g = torch.randn_like(out)
    torch.testing.assert_close(
        torch.autograd.grad(out, x, g)[0], torch.autograd.grad(expected, x, g)[0], rtol=1e-13, atol=1e-14
    )
    as_conv = ours._as_convolution(x)
    assert as_conv is (not ceil and (include_pad or padding == 0)), (
        "the convolution runs exactly where it is the same function"
    )
    with torch.no_grad():
        torch.testing.assert_close(ours(x.float()), ref(x.float()), rtol=1e-5, atol=1e-6)


def test_the_convolution_runs_only_where_it_pays_and_is_traceable():
    pool = AvgPool2d(3, 2, 1)
    assert pool._as_convolution(torch.rand(1, 4, 8, 8))
    assert not pool._as_convolution(torch.rand(1, 4, 8, 8).bfloat16())  # torch's kernel for half precision
    assert not pool._as_convolution(torch.rand(4, 8, 8))  # unbatched input: torch's kernel
    torch.testing.assert_close(pool(torch.ones(4, 8, 8))[:, 1:, 1:], torch.ones(4, 3, 3))
    x = torch.rand(2, 4, 9, 9)
    traced = torch.jit.trace(pool, x)
    y = torch.rand(1, 7, 12, 12)  # another batch and channel count: the trace recorded torch's kernel
    torch.testing.assert_close(traced(y), nn.AvgPool2d(3, 2, 1)(y))


def test_models_and_bcosification_use_it_with_unchanged_state():
    model = alignnet.create_model("bcos_resnet18")
    assert type(model.pool) is AvgPool2d and not list(model.pool.state_dict())
    from alignnet.bcosification.steps import replace_max_pools

    net = replace_max_pools(nn.Sequential(nn.MaxPool2d(3, 2, 1)))
    assert type(net[0]) is AvgPool2d and (net[0].kernel_size, net[0].stride, net[0].padding) == (3, 2, 1)


@pytest.mark.parametrize("name", ["bcos_resnet18", "bcos_resnet50"])
def test_in_place_shortcut_gives_the_autograd_values_and_leaves_the_input(name):
    """Without autograd the blocks add the shortcut in place: the same logits as with autograd (float64), the
    input tensor untouched, and the explanation still complete."""
    torch.manual_seed(1)
    model = alignnet.create_model(name, num_classes=7).double().eval()
    x = torch.rand(2, 3, 48, 48, dtype=torch.float64)
    before = x.clone()
    with torch.no_grad():
        fast = model(x)
    assert torch.equal(x, before)
    slow = model(x.clone().requires_grad_(True))
    torch.testing.assert_close(fast, slow.detach(), rtol=1e-12, atol=1e-13)
    e = alignnet.explain(model, x)
    total = (e.weights * e.inputs).flatten(1).sum(1) + e.bias
    torch.testing.assert_close(total, e.outputs, rtol=1e-12, atol=1e-12)
