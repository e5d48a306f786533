"""alignnet.explain: completeness, brute-force weights, batching, targets, state restore, errors."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import alignnet
from alignnet.layers import AddInverse, BcosConv2d, GlobalAvgPool2d, LogitLayer
from conftest import LOGIT_BIAS, TinyResidual, tiny_bcos, tiny_coda

NETS = {
    "bcos": tiny_bcos,
    "bcos_b1": lambda: tiny_bcos(b=1.0),
    "bcos_b1.25_maxout": lambda: tiny_bcos(b=1.25, max_out=2),
    "bcos_b2.5": lambda: tiny_bcos(b=2.5),
    "coda_squash": tiny_coda,
    "coda_l2": lambda: tiny_coda("l2"),
    "residual": TinyResidual,
    "residual_b1.25_maxout": lambda: TinyResidual(b=1.25, max_out=2),
}


def _prepare(net, dtype):
    torch.manual_seed(0)
    net = net().to(dtype)
    net.train()
    for _ in range(2):  # give the uncentered batch norms real running statistics
        net(torch.rand(4, 3, 12, 12, dtype=dtype))
    return net.eval()


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
def test_completeness(name, dtype, tol):
    net = _prepare(NETS[name], dtype)
    x = torch.rand(3, 3, 12, 12, dtype=dtype)
    e = alignnet.explain(net, x)
    assert e.weights.shape == (3, 6, 12, 12) and e.contributions.shape == (3, 12, 12)
    torch.testing.assert_close(e.logits, net(x).detach())
    assert torch.equal(e.targets, e.logits.argmax(1))
    torch.testing.assert_close(e.bias, torch.full((3,), LOGIT_BIAS, dtype=dtype))
    assert e.completeness_error() < tol
    # the same identity relative to the linear part alone, so a dominant logit bias cannot hide an error
    linear = e.outputs - e.bias
    assert float(linear.abs().max()) > 1e-3
    rel = float((e.contributions.sum((-2, -1)) - linear).abs().max() / linear.abs().max())
    assert rel < (1e-3 if dtype == torch.float32 else 1e-10)
    total = e.contributions.sum((-2, -1)) + e.bias
    torch.testing.assert_close(total, e.outputs, rtol=tol * 10, atol=tol * float(e.outputs.abs().max()))


def test_weights_equal_bruteforce_dynamic_matrix():
    """One B-cos conv + pool: build W(x) from F.unfold by hand and compare."""
    torch.manual_seed(0)
    conv = BcosConv2d(6, 4, 3, padding=1, b=2.5).double()
    net = nn.Sequential(AddInverse(), conv, GlobalAvgPool2d(), LogitLayer(bias=0.5)).double()
    x = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    enc = torch.cat([x, 1 - x], 1)
    cols = F.unfold(enc, 3, padding=1)  # (N, 54, 25)
    w_hat = conv.weight.flatten(1) / conv.weight.flatten(1).norm(dim=1, keepdim=True)  # (4, 54)
    lin = torch.einsum("od,ndl->nol", w_hat, cols)
    cos = lin / (cols.pow(2).sum(1, keepdim=True) + 1e-6).sqrt()
    scale = (cos.abs() + 1e-6).pow(1.5)  # the dynamic factor, a constant for the explanation
    # W(x)[c] as a (6, 5, 5) image: fold the scaled weight back onto the pixels, then average
    for c in range(4):
        per_pos = (scale[:, c, None, :] * w_hat[c][None, :, None]) / 25  # (N, 54, L)
        w_ref = F.fold(per_pos, (5, 5), 3, padding=1)
        e = alignnet.explain(net, x, targets=c)
        torch.testing.assert_close(e.weights, w_ref, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(e.outputs, (w_ref * enc).sum((1, 2, 3)) + 0.5)


def test_batched_equals_per_image():
    net = _prepare(TinyResidual, torch.float64)
    x = torch.rand(4, 3, 12, 12, dtype=torch.float64)
    batch = alignnet.explain(net, x, targets=[0, 1, 2, 3])
    for i in range(4):
        single = alignnet.explain(net, x[i : i + 1], targets=i)
        torch.testing.assert_close(batch.weights[i], single.weights[0])


@pytest.mark.parametrize("name", ["bcos", "coda_squash", "residual"])
def test_multiple_targets(name):
    net = _prepare(NETS[name], torch.float64)
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    k = net(x).shape[1]
    e = alignnet.explain(net, x, targets="all")
    assert e.weights.shape == (2, k, 6, 12, 12) and e.contributions.shape == (2, k, 12, 12)
    assert e.completeness_error() < 1e-10
    for c in (0, k - 1):
        single = alignnet.explain(net, x, targets=c)
        torch.testing.assert_close(e.weights[:, c], single.weights)
    pairs = torch.tensor([[1, 3], [0, 2]])
    e2 = alignnet.explain(net, x, targets=pairs)
    torch.testing.assert_close(e2.weights[1, 1], e.weights[1, 2])
    rgba = alignnet.colour_explanation(e2, index=1, column=1)
    assert rgba.shape == (12, 12, 4)


def test_int_and_tensor_targets():
    net = _prepare(tiny_bcos, torch.float32)
    x = torch.rand(3, 3, 12, 12)
    a = alignnet.explain(net, x, targets=4)
    b = alignnet.explain(net, x, targets=torch.tensor([4, 4, 4]))
    assert a.targets.tolist() == [4, 4, 4]
    torch.testing.assert_close(a.weights, b.weights)


def test_layer_unit_explanation():
    net = _prepare(tiny_bcos, torch.float64)
    x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    acts = {}
    handle = net[2].register_forward_hook(lambda m, i, o: acts.update(o=o.detach()))
    net(x)
    handle.remove()
    e = alignnet.explain(net, x, layer="2", channel=3)
    torch.testing.assert_close(e.outputs, acts["o"][:, 3].sum((-2, -1)))
    assert e.completeness_error() < 1e-10 and torch.all(e.bias == 0)
    p = alignnet.explain(net, x, layer="2", channel=3, position=(1, 2))
    torch.testing.assert_close(p.outputs, acts["o"][:, 3, 1, 2])
    assert p.completeness_error() < 1e-10
    # a single position of a stride-2 3x3 conv after a 3x3 conv sees at most a 7x7 window
    nz = p.weights[0].abs().sum(0).nonzero()
    assert int(nz[:, 0].max() - nz[:, 0].min()) < 7
    with pytest.raises(ValueError, match="did you mean"):
        alignnet.explain(net, x, layer="22", channel=0)


def test_state_is_restored():
    net = _prepare(TinyResidual, torch.float32).train()
    net.stem.weight.grad = torch.ones_like(net.stem.weight)
    net.block.weight.requires_grad_(False)
    x = torch.rand(2, 3, 12, 12)
    alignnet.explain(net, x)
    assert net.training and net.bn.training
    assert torch.equal(net.stem.weight.grad, torch.ones_like(net.stem.weight))
    assert not net.block.weight.requires_grad and net.stem.weight.requires_grad
    assert x.grad is None and not x.requires_grad
    assert not any(getattr(m, "detach", False) for m in net.modules() if isinstance(m, alignnet.layers.DynamicLinear))


def test_explanation_mode_restores_after_exception_and_nests():
    net = tiny_bcos()
    layers = [m for m in net.modules() if isinstance(m, alignnet.layers.DynamicLinear)]
    layers[1].detach = True  # a pre-existing state must survive
    with pytest.raises(RuntimeError, match="boom"):
        with alignnet.explanation_mode(net):
            assert all(m.detach for m in layers)
            raise RuntimeError("boom")
    assert [m.detach for m in layers] == [False, True, False]
    with alignnet.explanation_mode(net):
        with alignnet.explanation_mode(net[1]):
            assert all(m.detach for m in layers)
        assert all(m.detach for m in layers)
    assert [m.detach for m in layers] == [False, True, False]


def test_detach_changes_gradient_not_output():
    net = _prepare(tiny_coda, torch.float64)
    x = torch.rand(1, 3, 12, 12, dtype=torch.float64, requires_grad=True)
    y1 = net(x)[0, 0]
    (g1,) = torch.autograd.grad(y1, x)
    with alignnet.explanation_mode(net):
        y2 = net(x)[0, 0]
        (g2,) = torch.autograd.grad(y2, x)
    torch.testing.assert_close(y1, y2)
    assert not torch.allclose(g1, g2)


@pytest.mark.parametrize(
    "images,targets,err,match",
    [
        (torch.rand(3, 12, 12), None, ValueError, r"\(N, C, H, W\)"),
        (torch.rand(2, 1, 12, 12), None, ValueError, "expects images with 3 channels"),
        (torch.rand(2, 3, 12, 12), 10, ValueError, "out of range"),
        (torch.rand(2, 3, 12, 12), [0, 1, 2], ValueError, "N=2"),
        (torch.rand(2, 3, 12, 12), 1.5, TypeError, "integers"),
        (torch.rand(2, 3, 12, 12), "top", ValueError, "'all'"),
        (torch.full((2, 3, 12, 12), float("nan")), None, ValueError, "NaN"),
        (torch.randint(0, 255, (2, 3, 12, 12)), None, TypeError, "floating"),
        (torch.rand(0, 3, 12, 12), None, ValueError, "empty"),
    ],
)
def test_bad_input_is_clear(images, targets, err, match):
    with pytest.raises(err, match=match):
        alignnet.explain(tiny_bcos(), images, targets)


def test_warns_for_non_detachable_module():
    net = nn.Sequential(AddInverse(), BcosConv2d(6, 4, 3), nn.GELU(), GlobalAvgPool2d(), LogitLayer())
    with pytest.warns(UserWarning, match=r"2 \(GELU\)"):
        alignnet.explain(net, torch.rand(1, 3, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alignnet.explain(tiny_coda(), torch.rand(1, 3, 8, 8))  # DAU's inner convs are not reported


def test_plain_linear_pieces_without_add_inverse():
    """Weights refer to the input as given when there is no AddInverse; conv/pool/linear allowed."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),
        BcosConv2d(4, 6, 3),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(6 * 16, 7, bias=False),
    ).double()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    e = alignnet.explain(net, x)
    assert e.inputs.shape == x.shape and e.completeness_error() < 1e-10


def test_eval_mode_restores_every_flag_also_after_an_exception():
    from alignnet.layers import eval_mode

    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.Dropout(), torch.nn.Sequential(torch.nn.ReLU()))
    model.train()
    model[1].eval()  # mixed flags must come back exactly
    before = [m.training for m in model.modules()]
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(model):
            assert not any(m.training for m in model.modules())
            raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == before
