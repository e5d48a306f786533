"""DAUConv2d against a brute-force reference that materialises the per-position weights."""

import pytest
import torch
import torch.nn.functional as F

from alignnet.layers import DAUConv2d, explanation_mode


def reference_dau(layer: DAUConv2d, x):
    """w(x) = W2 (W1 x) + b2 for every unfolded patch, normalised, dotted with the patch."""
    k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
    cols = F.unfold(x, k, padding=p, stride=s)  # (N, D, L)
    h = torch.einsum("rd,ndl->nrl", layer.rank_proj.weight.flatten(1), cols)  # W1 x per patch
    w2 = layer.weight_proj.weight.view(layer.out_channels, layer.patch_dim, layer.rank)
    b2 = layer.weight_proj.bias.view(layer.out_channels, layer.patch_dim)
    w = torch.einsum("odr,nrl->nodl", w2, h) + b2[None, :, :, None]  # (N, O, D, L)
    n = w.norm(dim=2, keepdim=True)
    w = w * n / (1 + n**2) if layer.norm == "squash" else w / n
    out = (w * cols[:, None]).sum(2)
    hh = (x.shape[2] + 2 * p - k) // s + 1
    return out.view(x.shape[0], layer.out_channels, hh, -1), w


@pytest.mark.parametrize("norm", ["squash", "l2"])
@pytest.mark.parametrize("k,stride,padding,rank", [(3, 1, 1, 4), (3, 2, 1, 2), (1, 1, 0, 3), (5, 2, 0, 6)])
def test_dau_matches_bruteforce(norm, k, stride, padding, rank):
    torch.manual_seed(0)
    layer = DAUConv2d(3, 5, k, rank=rank, stride=stride, padding=padding, norm=norm).double()
    x = torch.randn(2, 3, 9, 10, dtype=torch.float64)
    ref, w = reference_dau(layer, x)
    torch.testing.assert_close(layer(x), ref, rtol=1e-9, atol=1e-10)
    dyn = layer.dynamic_weights(x)  # (N, O, C, k, k, H', W')
    torch.testing.assert_close(dyn.flatten(2, 4).flatten(-2), w)
    if norm == "squash":
        assert float(w.detach().norm(dim=2).max()) < 1  # squashed norm n^2 / (1 + n^2) < 1
    else:
        torch.testing.assert_close(w.norm(dim=2), torch.ones_like(w.norm(dim=2)))


def test_dau_explanation_gradient_is_dynamic_weight():
    """In explanation mode d out / d x equals the (detached) predicted weights exactly."""
    torch.manual_seed(1)
    layer = DAUConv2d(2, 3, 3, rank=2, padding=0).double()
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)  # one output position
    with explanation_mode(layer):
        out = layer(x)
    assert out.shape == (1, 3, 1, 1)
    w = layer.dynamic_weights(x.detach())[0, :, :, :, :, 0, 0]  # (O, C, k, k)
    for o in range(3):
        (g,) = torch.autograd.grad(out[0, o, 0, 0], x, retain_graph=True)
        torch.testing.assert_close(g[0], w[o])
        torch.testing.assert_close((g * x).sum(), out[0, o, 0, 0])


def test_dau_bad_arguments():
    with pytest.raises(ValueError, match="norm"):
        DAUConv2d(3, 4, 3, rank=2, norm="softmax")
    with pytest.raises(ValueError, match="rank"):
        DAUConv2d(3, 4, 3, rank=0)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        DAUConv2d(3, 4, 3, rank=2)(torch.rand(1, 6, 5, 5))


def test_dau_memory_is_rank_space():
    """The forward never materialises (N, O, D, L): peak autograd saved tensors stay near O*rank."""
    layer = DAUConv2d(16, 16, 3, rank=4, padding=1)
    x = torch.rand(2, 16, 16, 16)
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x)
    full = 2 * 16 * 16 * 9 * 16 * 16  # N * O * D * L of the materialised weights
    assert max(sizes) <= 2 * 16 * 4 * 16 * 16 * 2 < full / 4
