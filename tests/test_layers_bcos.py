"""B-cos layers: pooling-trick norms vs unfold, fast path, b=1, MaxOut, groups, scale, bcos parity."""

import math

import pytest
import torch
import torch.nn.functional as F

from alignnet.layers import BcosConv2d, BcosLinear, patch_norms, v1_scale


def unfold_norms(x, k, stride, padding, groups):
    """Brute force: unfold every patch and take its L2 norm per group."""
    n, c = x.shape[:2]
    cols = F.unfold(x, k, padding=padding, stride=stride)  # (N, C*k*k, L)
    cols = cols.view(n, groups, (c // groups) * k * k, -1)
    h = (x.shape[2] + 2 * padding - k) // stride + 1
    w = (x.shape[3] + 2 * padding - k) // stride + 1
    return (cols.pow(2).sum(2) + 1e-6).sqrt().view(n, groups, h, w)


def reference_bcos_conv(layer: BcosConv2d, x, general: bool = False):
    """The B-cos formula evaluated patch by patch from F.unfold (docs/algorithms.md#b-cos-layer).

    B != 2 (or ``general``) uses ``(|cos| + 1e-6)^(B-1)`` as the bcos package does; B = 2 uses ``|cos|``.
    """
    k, s, p, g = layer.kernel_size[0], layer.stride[0], layer.padding[0], layer.groups
    n = x.shape[0]
    cols = F.unfold(x, k, padding=p, stride=s)  # (N, C*k*k, L)
    cin_g = layer.in_channels // g
    cols = cols.view(n, g, cin_g * k * k, -1)
    w = layer.weight.view(g, -1, cin_g * k * k)  # (G, O*M/G, D)
    w = w / w.norm(dim=2, keepdim=True)
    lin = torch.einsum("god,ngdl->ngol", w, cols).reshape(n, -1, cols.shape[-1])  # (N, O*M, L)
    norms = (cols.pow(2).sum(2) + 1e-6).sqrt()  # (N, G, L)
    if layer.max_out > 1:
        lin = lin.view(n, layer.out_channels, layer.max_out, -1).amax(2)
    norms = norms.repeat_interleave(layer.out_channels // g, dim=1)
    cos = lin / norms
    if layer.b == 1:
        out = lin
    elif layer.b == 2 and not general:
        out = lin * cos.abs()
    else:
        out = lin * (cos.abs() + 1e-6).pow(layer.b - 1)
    if layer.scale is not None:
        out = out / layer.scale
    h = (x.shape[2] + 2 * p - k) // s + 1
    return out.view(n, layer.out_channels, h, -1)


@pytest.mark.parametrize(
    "c,k,stride,padding,groups,size",
    [(3, 3, 1, 1, 1, 8), (4, 3, 2, 1, 2, 9), (6, 5, 2, 2, 3, 11), (8, 1, 1, 0, 4, 7), (2, 4, 3, 0, 1, 13)],
)
def test_patch_norms_match_unfold(c, k, stride, padding, groups, size):
    x = torch.randn(2, c, size, size + 2, dtype=torch.float64)
    ours = patch_norms(x, k, stride, padding, groups)
    torch.testing.assert_close(ours, unfold_norms(x, k, stride, padding, groups), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "c,k,stride,padding,groups,size",
    [(3, 3, 1, 1, 1, 32), (6, 7, 2, 3, 1, 40), (4, 3, 2, 1, 2, 33), (2, 4, 3, 0, 1, 37), (4, 5, 1, 2, 4, 34)],
)
def test_patch_norms_of_large_maps_match_unfold(c, k, stride, padding, groups, size):
    """From 32x32 on, a CPU sums the patches with band-matrix products instead of avg_pool2d."""
    from alignnet.layers import bcos

    assert size * (size + 2) >= bcos._BOX_MATMUL_MIN_PIXELS
    x = torch.randn(2, c, size, size + 2, dtype=torch.float64)
    ours = patch_norms(x, k, stride, padding, groups)
    torch.testing.assert_close(ours, unfold_norms(x, k, stride, padding, groups), rtol=1e-12, atol=1e-12)
    squares = (x * x).unflatten(1, (groups, -1)).sum(2)
    pooled = F.avg_pool2d(squares, k, stride, padding, divisor_override=1)
    torch.testing.assert_close(bcos._box_sums(squares, (k, k), (stride, stride), (padding, padding)), pooled)


@pytest.mark.parametrize("size,weight_first", [(3, False), (12, True)])
@pytest.mark.parametrize("groups", [1, 2])
def test_both_ways_of_unit_norm_rows_match_the_reference(size, weight_first, groups):
    """Small outputs divide the output channels by the row norms, large ones scale the weight rows first:
    the same values and the same gradients (input and weight) either way."""
    torch.manual_seed(3)
    layer = BcosConv2d(8, 6, 3, padding=1, groups=groups, max_out=2).double()
    x = torch.randn(2, 8, size, size, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():  # only inference scales the weight (autograd would keep the scaled copy)
        assert layer._normalise_weight_first(x) is weight_first
    assert not layer._normalise_weight_first(x)
    out = layer(x)
    ref = reference_bcos_conv(layer, x)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, layer.weight), g)
    ref_grads = torch.autograd.grad(ref, (x, layer.weight), g)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    with torch.no_grad():  # the in-place inference path
        torch.testing.assert_close(layer(x), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("b,groups,max_out", [(2.0, 1, 1), (2.0, 4, 1), (2.5, 2, 2), (1.5, 1, 1)])
def test_inference_scaling_in_pieces_equals_the_autograd_path(b, groups, max_out):
    """Large CPU outputs are scaled in place piece by piece (channels of one image at a time) without autograd."""
    from alignnet.layers import bcos

    torch.manual_seed(4)
    layer = BcosConv2d(8, 64, 3, padding=1, groups=groups, b=b, max_out=max_out).double()
    x = torch.randn(2, 8, 70, 70, dtype=torch.float64)
    assert 2 * 64 * 70 * 70 > 2 * bcos._CHUNK_ELEMENTS and 64 % (bcos._CHUNK_ELEMENTS // (70 * 70)) != 0
    with torch.no_grad():
        pieces = layer(x)
    whole = layer(x.requires_grad_(True))  # the autograd.Function, in one piece
    torch.testing.assert_close(pieces, whole.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(pieces, reference_bcos_conv(layer, x.detach()), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("b", [1.0, 1.25, 2.0, 2.5])
@pytest.mark.parametrize("max_out", [1, 2])
@pytest.mark.parametrize("groups,stride,padding", [(1, 1, 1), (2, 2, 0), (3, 2, 1)])
def test_conv_matches_unfold_reference(b, max_out, groups, stride, padding):
    torch.manual_seed(0)
    layer = BcosConv2d(6, 6, 3, stride=stride, padding=padding, groups=groups, b=b, max_out=max_out).double()
    x = torch.randn(2, 6, 9, 9, dtype=torch.float64)
    torch.testing.assert_close(layer(x), reference_bcos_conv(layer, x), rtol=1e-9, atol=1e-12)


def test_b2_fast_path_equals_general_formula():
    torch.manual_seed(1)
    layer = BcosConv2d(4, 5, 3, padding=1, b=2.0).double()
    x = torch.randn(3, 4, 7, 7, dtype=torch.float64)
    fast = layer(x)
    general = reference_bcos_conv(layer, x, general=True)  # (|cos| + 1e-6)^(b-1) at b=2
    # the general path adds 1e-6 to |cos| (as bcos does), so equality is to that precision
    torch.testing.assert_close(fast, general, rtol=0, atol=2e-6 * float(fast.detach().abs().max()))
    layer.b = 2.0000001  # force the general branch inside the layer itself
    torch.testing.assert_close(layer(x), fast, rtol=0, atol=2e-6 * float(fast.detach().abs().max()))


def test_b1_is_unit_norm_convolution():
    layer = BcosConv2d(3, 4, 3, stride=2, padding=1, b=1)
    x = torch.randn(2, 3, 10, 10)
    w = layer.weight / layer.weight.flatten(1).norm(dim=1)[:, None, None, None]
    torch.testing.assert_close(layer(x), F.conv2d(x, w, stride=2, padding=1))


def test_linear_matches_formula():
    torch.manual_seed(2)
    for b in (1.0, 1.5, 2.0):
        layer = BcosLinear(7, 4, b=b, max_out=2).double()
        x = torch.randn(5, 7, dtype=torch.float64)
        w = layer.weight / layer.weight.norm(dim=1, keepdim=True)
        lin = (x @ w.T).view(5, 4, 2).amax(-1)
        cos = lin / (x.norm(dim=1, keepdim=True) + 1e-12)
        ref = lin if b == 1 else lin * (cos.abs() + 1e-6).pow(b - 1) if b != 2 else lin * cos.abs()
        torch.testing.assert_close(layer(x), ref)


def test_scale_and_v1_scale():
    assert v1_scale(3, 64) == pytest.approx(math.sqrt(9 * 64) / 100)
    a = BcosConv2d(4, 4, 3, padding=1, scale="v1")
    b = BcosConv2d(4, 4, 3, padding=1)
    b.weight.data.copy_(a.weight.data)
    x = torch.rand(1, 4, 6, 6)
    torch.testing.assert_close(a(x), b(x) / v1_scale(3, 4))
    assert a.weight.shape == (4, 4, 3, 3)
    assert BcosConv2d(4, 8, 3, max_out=2).weight.shape == (16, 4, 3, 3)
    assert BcosLinear(5, 3, max_out=2).weight.shape == (6, 5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"b": 0.5}, "b must be"),
        ({"max_out": 0}, "max_out"),
        ({"groups": 3}, "divisible"),
        ({"scale": -1.0}, "scale"),
        ({"scale": "v2"}, "scale"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BcosConv2d(4, 4, 3, **kwargs)


def test_wrong_input_shape_is_clear():
    with pytest.raises(ValueError, match=r"expects input \(N, 6, H, W\)"):
        BcosConv2d(6, 4, 3)(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(\.\.\., 5\)"):
        BcosLinear(5, 2)(torch.rand(2, 4))


bcos_modules = pytest.importorskip("bcos.modules", reason="the bcos package is a test-only dependency")


@pytest.mark.parametrize("b", [1, 1.5, 2, 2.5])
@pytest.mark.parametrize("max_out", [1, 2])
@pytest.mark.parametrize("groups", [1, 2])
def test_conv_equals_bcos_package(b, max_out, groups):
    torch.manual_seed(3)
    theirs = bcos_modules.BcosConv2d(4, 6, 3, stride=2, padding=1, groups=groups, b=b, max_out=max_out)
    ours = BcosConv2d(4, 6, 3, stride=2, padding=1, groups=groups, b=b, max_out=max_out)
    ours.load_state_dict({"weight": theirs.linear.weight.detach().clone()})
    x = torch.rand(2, 4, 11, 11)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_conv_with_scale_equals_bcos_package():
    theirs = bcos_modules.BcosConv2dWithScale(6, 8, 3, padding=1, b=2, max_out=2)  # v1 default scale
    ours = BcosConv2d(6, 8, 3, padding=1, b=2, max_out=2, scale="v1")
    ours.weight.data.copy_(theirs.linear.weight.data)
    x = torch.rand(2, 6, 8, 8)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("b", [1, 2, 2.5])
def test_linear_equals_bcos_package(b):
    theirs = bcos_modules.BcosLinear(8, 5, b=b, max_out=2)
    ours = BcosLinear(8, 5, b=b, max_out=2)
    ours.weight.data.copy_(theirs.linear.weight.data)
    x = torch.randn(4, 8)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


def test_output_follows_every_kind_of_weight_change():
    """The layer acts with ``w / ||w||`` of the weight as it is now, whatever changed it."""
    torch.manual_seed(0)
    layer = BcosConv2d(4, 6, 3, padding=1, b=1)
    x = torch.rand(2, 4, 8, 8)

    def check():
        w = layer.weight.detach()
        ref = F.conv2d(x.to(w.dtype), w / w.flatten(1).norm(dim=1)[:, None, None, None], padding=1)
        with torch.no_grad():
            torch.testing.assert_close(layer(x.to(w.dtype)), ref)
            torch.testing.assert_close(layer.normalized_weight(), w / w.flatten(1).norm(dim=1)[:, None, None, None])

    check()
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    layer(x).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    opt.step()
    check()
    layer.load_state_dict({"weight": torch.randn(6, 4, 3, 3)})
    check()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(6, 4, 3, 3))
    check()
    layer.weight.data.copy_(torch.randn(6, 4, 3, 3))  # .data has its own version counter
    check()
    layer.weight.data[3, 1, 0, 0] += 1
    check()
    layer.double()
    check()


@pytest.mark.parametrize("groups", [1, 2])
def test_max_out_inference_path_equals_gradient_path(groups):
    """MaxOut uses ``amax`` without autograd and ``max().values`` with it: same values, and gradients flow."""
    torch.manual_seed(3)
    conv = BcosConv2d(4, 6, 3, padding=1, groups=groups, max_out=2).double()
    lin = BcosLinear(5, 3, max_out=3).double()
    for layer, x in (
        (conv, torch.randn(2, 4, 6, 6, dtype=torch.float64)),
        (lin, torch.randn(4, 5, dtype=torch.float64)),
    ):
        with torch.no_grad():
            fast = layer(x)
        x_req = x.clone().requires_grad_()
        slow = layer(x_req)
        # inference may also scale the weight rows before the convolution (same map, other rounding)
        torch.testing.assert_close(fast, slow.detach(), rtol=1e-12, atol=1e-15)
        slow.sum().backward()
        assert x_req.grad is not None and torch.isfinite(x_req.grad).all() and x_req.grad.abs().sum() > 0


def test_trace_of_a_large_layer_runs_at_other_batch_and_map_sizes():
    """The CPU fast paths (pieces per image, band matrices of one map size) stay out of a trace."""
    torch.manual_seed(5)
    layer = BcosConv2d(8, 64, 3, padding=1).eval()
    with torch.no_grad():
        traced = torch.jit.trace(layer, torch.rand(2, 8, 70, 70), check_trace=False)
        for shape in [(3, 8, 70, 70), (1, 8, 40, 36), (2, 8, 70, 70)]:
            x = torch.rand(shape)
            torch.testing.assert_close(traced(x), layer(x), rtol=1e-5, atol=1e-6)


def test_explanation_keeps_no_copy_of_the_weight_for_the_backward():
    """With frozen weights and an input that needs gradients (explain), autograd keeps the parameter itself,
    never a scaled copy of it, and nothing of the input's size besides the layer's own saved factor."""
    from alignnet.layers import explanation_mode

    layer = BcosConv2d(16, 32, 3, padding=1).requires_grad_(False)
    x = torch.rand(8, 16, 24, 24, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t), explanation_mode(layer):
        layer(x)
    weights = [t for t in saved if t.shape == layer.weight.shape]
    assert weights and all(t.data_ptr() == layer.weight.data_ptr() for t in weights)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("batch,size", [(1, 9), (3, 15), (2, 31)])
@pytest.mark.parametrize("b,max_out", [(2.0, 1), (1.0, 1), (2.5, 2)])
def test_pointwise_matmul_path_matches_the_reference(stride, batch, size, b, max_out):
    """A CPU 1x1 convolution runs as ``W @ x`` (one image, or maps of 14x14 and more): same outputs as the
    unfold reference, with and without autograd, and the same input gradients as ``F.conv2d``'s backward."""
    from alignnet.layers import bcos

    torch.manual_seed(6)
    layer = BcosConv2d(40, 12, 1, stride=stride, b=b, max_out=max_out).double()
    x = torch.randn(batch, 40, size, size, dtype=torch.float64)
    positions = ((size - 1) // stride + 1) ** 2
    args = (layer.kernel_size, layer.stride, layer.padding, layer.groups)
    assert not bcos._pointwise_matmul_pays(x, layer.weight, *args)  # training: the weight needs gradients
    layer.requires_grad_(False)  # inference and explanations
    takes = bcos._pointwise_matmul_pays(x, layer.weight, *args)
    assert takes == (batch == 1 or positions >= bcos._POINTWISE_MATMUL_MIN_POSITIONS)
    with torch.no_grad():
        fast = layer(x)
    torch.testing.assert_close(fast, reference_bcos_conv(layer, x), rtol=1e-10, atol=1e-12)
    xg = x.clone().requires_grad_(True)
    out = layer(xg)
    torch.testing.assert_close(out.detach(), fast, rtol=1e-10, atol=1e-12)
    (grad,) = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum(), xg)
    original = bcos._pointwise_matmul_pays
    try:
        bcos._pointwise_matmul_pays = lambda *args: False  # F.conv2d throughout
        xc = x.clone().requires_grad_(True)
        out_conv = layer(xc)
        (grad_conv,) = torch.autograd.grad(
            (out_conv * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum(), xc
        )
    finally:
        bcos._pointwise_matmul_pays = original
    torch.testing.assert_close(out_conv.detach(), fast, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, grad_conv, rtol=1e-10, atol=1e-12)


def test_pointwise_matmul_path_is_exact_in_explanations():
    """Explanation mode through the matrix-product path: the contributions of a 1x1 B-cos layer sum to its
    output (float64), the output is a plain NCHW tensor, and channels-last inputs keep the convolution."""
    from alignnet.layers import bcos, explanation_mode

    torch.manual_seed(7)
    layer = BcosConv2d(24, 8, 1, stride=2).double().requires_grad_(False)
    x = torch.rand(1, 24, 20, 20, dtype=torch.float64, requires_grad=True)
    with explanation_mode(layer):
        out = layer(x)
        assert out.shape == (1, 8, 10, 10) and out.is_contiguous()
        (w,) = torch.autograd.grad(out[0, 3, 4, 5], x)
    torch.testing.assert_close((w * x).sum(), out[0, 3, 4, 5].detach(), rtol=1e-12, atol=1e-14)
    assert (w[0, :, ::2, ::2] != 0).sum() == 24 and (w != 0).sum() == 24  # one input pixel, every channel
    cl = x.detach().contiguous(memory_format=torch.channels_last)
    assert bcos._pointwise_matmul_pays(x.detach(), layer.weight, (1, 1), (1, 1), (0, 0), 1)
    assert not bcos._pointwise_matmul_pays(cl, layer.weight, (1, 1), (1, 1), (0, 0), 1)
    assert not bcos._pointwise_matmul_pays(x.detach().half(), layer.weight.half(), (1, 1), (1, 1), (0, 0), 1)


@pytest.mark.parametrize("kind", ["conv3x3", "conv1x1", "linear"])
@pytest.mark.parametrize("weights_need_grad", [False, True])
def test_row_norms_folded_into_the_explanation_factor(kind, weights_need_grad):
    """In explanation mode (B = 2, no MaxOut) the row norms go into the detached factor instead of dividing the
    output: the same outputs, input gradients and weight gradients as dividing first (float64), also without
    autograd (where nothing is folded)."""
    from alignnet.layers import bcos, explanation_mode

    torch.manual_seed(8)
    if kind == "linear":
        layer, x = BcosLinear(20, 7).double(), torch.randn(3, 5, 20, dtype=torch.float64)
    else:
        k = 3 if kind == "conv3x3" else 1
        layer, x = BcosConv2d(10, 7, k, padding=k // 2).double(), torch.randn(2, 10, 16, 16, dtype=torch.float64)
    layer.requires_grad_(weights_need_grad)

    def run(fold: bool):
        original = bcos._rows_into_factor
        if not fold:
            bcos._rows_into_factor = lambda *args: False
        try:
            with explanation_mode(layer):
                with torch.no_grad():
                    plain = layer(x)
                xg = x.clone().requires_grad_(True)
                out = layer(xg)
                weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
                inputs = (xg, layer.weight) if weights_need_grad else (xg,)
                grads = torch.autograd.grad((out * weights).sum(), inputs)
        finally:
            bcos._rows_into_factor = original
        return plain, out.detach(), grads

    plain, out, grads = run(True)
    plain_ref, out_ref, grads_ref = run(False)
    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(plain, plain_ref, rtol=1e-12, atol=1e-14)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-13)
    if kind != "linear":
        torch.testing.assert_close(out, reference_bcos_conv(layer, x).detach(), rtol=1e-10, atol=1e-12)
