"""Issue 13: layers and explanations under real use (inference mode, weight edits, torch.func,
half precision, registration order, errors, logit bias, state, API traps, protocol details)."""

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.utils.parametrize
import torch.nn.utils.prune
from torch import nn

import alignnet
from alignnet.attribution import get_attributor, list_attributors
from alignnet.explanation import explain, layer_contributions
from alignnet.layers import (
    AddInverse,
    BcosConv2d,
    BcosLinear,
    DAUConv2d,
    GlobalAvgPool2d,
    LogitLayer,
)
from alignnet.layers.bcos import _BcosScaling
from conftest import LOGIT_BIAS, tiny_bcos, tiny_coda

WEIGHTS = Path(alignnet.__file__).parent / "weights"
FAST = {"lime": {"n_samples": 20}, "rise": {"n_masks": 16}, "intgrad": {"n_steps": 4}}


def _fresh_copy(model):
    """An independent copy of the model (its own tensors, nothing shared with ``model``)."""
    return copy.deepcopy(model)


# 1. inference mode ---------------------------------------------------------------------------


@pytest.mark.parametrize("make", [tiny_bcos, tiny_coda])
def test_inference_mode_then_explain_and_input_gradients(make):
    torch.manual_seed(0)
    model = make().double().eval()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    with torch.inference_mode():
        model(x)
    e = explain(model, x)
    assert e.completeness_error() < 1e-12
    xr = x.clone().requires_grad_(True)
    model(xr).sum().backward()  # plain input gradients after inference mode
    assert xr.grad is not None and torch.isfinite(xr.grad).all()
    with torch.inference_mode():  # explain inside inference mode, on inference-mode images
        xi = x.clone()
        e2 = explain(model, xi)
    torch.testing.assert_close(e2.weights, e.weights, rtol=0, atol=0)


# 2. no stale weight state ----------------------------------------------------------------------


def _edits():
    def one_element(m):
        with torch.no_grad():
            m[1].weight[3, 1, 0, 0] += 1

    def data_one_element(m):  # the reproduction: ``.data`` has its own version counter
        m[1].weight.data[3, 1, 0, 0] += 1

    def data_copy(m):
        m[2].weight.data.copy_(torch.randn_like(m[2].weight))

    def tied(m):  # a parametrization: the weight is recomputed from another tensor at every access
        shift = torch.randn_like(m[1].weight)

        class Shift(nn.Module):
            def forward(self, w):
                return w + shift

        torch.nn.utils.parametrize.register_parametrization(m[1], "weight", Shift())

    def through_detach(m):
        m[2].weight.detach()[0, 0, 1, 1] -= 0.5

    def load_state(m):
        sd = {k: v + 0.1 * torch.randn_like(v) for k, v in m.state_dict().items()}
        m.load_state_dict(sd)

    def optimizer_step(m):
        opt = torch.optim.SGD(m.parameters(), lr=0.3)
        m(torch.rand(2, 3, 8, 8, dtype=next(m.parameters()).dtype)).sum().backward()
        opt.step()

    def adam_step(m):
        opt = torch.optim.Adam(m.parameters(), lr=0.1)
        m(torch.rand(2, 3, 8, 8, dtype=next(m.parameters()).dtype)).sum().backward()
        opt.step()

    def prune(m):
        torch.nn.utils.prune.random_unstructured(m[1], "weight", amount=0.3)

    return {
        "one_element": one_element,
        "data_one_element": data_one_element,
        "data_copy": data_copy,
        "parametrization": tied,
        "through_detach": through_detach,
        "load_state_dict": load_state,
        "sgd_step": optimizer_step,
        "adam_step": adam_step,
        "prune": prune,
    }


@pytest.mark.parametrize("edit", list(_edits()))
def test_forward_after_weight_edit_equals_a_fresh_model(edit):
    torch.manual_seed(0)
    model = tiny_bcos().eval()
    x = torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        before = model(x)  # a forward before the edit (this filled the old normalised-weight cache)
    _edits()[edit](model)
    with torch.no_grad():
        after = model(x)
        fresh = _fresh_copy(model)(x)
    torch.testing.assert_close(after, fresh, rtol=0, atol=0)
    assert (after - before).abs().max() > 1e-4  # the edit did change the output


def _reference_conv(layer: BcosConv2d, x):
    """The layer's linear part written out independently: a convolution with ``w / ||w||``."""
    w = layer.weight.detach()
    return torch.nn.functional.conv2d(x, w / w.flatten(1).norm(dim=1)[:, None, None, None], padding=layer.padding)


@pytest.mark.parametrize("through", ["no_grad", "data"])
def test_one_element_edit_changes_exactly_what_a_fresh_layer_gives(through):
    """The issue's reproduction (``weight.data[3, 1, 0, 0] += 1``) on a layer large enough that no
    sample of its values would notice; b=1 makes the output the linear part itself."""
    torch.manual_seed(1)
    layer = BcosConv2d(32, 32, 3, padding=1, b=1).double()
    x = torch.rand(2, 32, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        layer(x)
        for idx in [(3, 1, 0, 0), (5, 3, 2, 2), (0, 0, 0, 1)]:
            if through == "data":
                layer.weight.data[idx] += 1
            else:
                layer.weight[idx] += 1
            torch.testing.assert_close(layer(x), _reference_conv(layer, x), rtol=1e-12, atol=1e-12)
            fresh = BcosConv2d(32, 32, 3, padding=1, b=1).double()
            fresh.weight.copy_(layer.weight)
            torch.testing.assert_close(layer(x), fresh(x), rtol=0, atol=0)


@pytest.mark.parametrize("convert", ["double", "to_double", "half_then_double"])
def test_dtype_conversion_then_forward_equals_a_fresh_model(convert):
    torch.manual_seed(0)
    model = tiny_bcos().eval()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        model(x.float())
    if convert == "double":
        model.double()
    elif convert == "to_double":
        model.to(torch.float64)
    else:
        model.half().double()
    with torch.no_grad():
        out = model(x)
    assert out.dtype == torch.float64
    ref = _fresh_copy(model)
    with torch.no_grad():  # the same (inference) path as ``out``
        torch.testing.assert_close(out, ref(x), rtol=0, atol=0)
    assert all(not k.startswith("_w_hat") for m in model.modules() for k in vars(m))  # no per-module weight state


def test_forward_makes_no_weight_copy_and_no_device_sync():
    """Unit-norm rows without a normalised copy: the convolution gets the parameter itself, no op
    produces a weight-sized tensor, and nothing reads a value back to the host (a device sync).

    (The input is small enough -- 72 output positions, not more than the 72 weights per row -- that inference
    does not take the per-call scaled weight of large outputs either; test_inference_scales_the_weight_per_call.)"""
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    torch.manual_seed(0)
    layer = BcosConv2d(8, 16, 3, padding=1, max_out=2)
    x = torch.rand(2, 8, 6, 6)

    class Record(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.conv_weights = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is torch.nn.functional.conv2d:
                self.conv_weights.append(args[1])
            return func(*args, **(kwargs or {}))

    class Shapes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.ops.append((str(func), tuple(out.shape) if isinstance(out, torch.Tensor) else None))
            return out

    for grad in (False, True):
        with torch.set_grad_enabled(grad), Record() as rec, Shapes() as shapes:
            layer(x)
        assert len(rec.conv_weights) == 1 and rec.conv_weights[0] is layer.weight
        assert not [op for op, shape in shapes.ops if shape == tuple(layer.weight.shape)], shapes.ops
        assert not [op for op, _ in shapes.ops if "equal" in op or "_local_scalar_dense" in op or "item" in op]


def test_inference_scales_the_weight_per_call_and_keeps_nothing():
    """Without autograd, a layer with more output positions than weights per row convolves with ``w / ||w||``
    computed in that call: the value follows every edit, also through ``.data``, and no module keeps it."""
    torch.manual_seed(2)
    layer = BcosConv2d(8, 16, 3, padding=1, b=1).double()
    x = torch.rand(2, 8, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        assert layer._normalise_weight_first(x)
        for idx in [(3, 1, 0, 0), (5, 3, 2, 2)]:
            layer.weight.data[idx] += 1
            torch.testing.assert_close(layer(x), _reference_conv(layer, x), rtol=1e-12, atol=1e-12)
    assert set(vars(layer)) == set(vars(BcosConv2d(8, 16, 3, padding=1, b=1)))


# 3. torch.func ----------------------------------------------------------------------------------


@pytest.mark.parametrize("b", [2.0, 1.5, 2.5])
def test_gradcheck_and_gradgradcheck_of_the_scaling_function(b):
    torch.manual_seed(0)
    lin = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    norm = lin.detach().abs().amax(1, keepdim=True) + torch.rand(2, 1, 4, 4, dtype=torch.float64) + 0.5
    norm.requires_grad_(True)  # broadcast over the channels, as in the layers

    def f(lin, norm):
        return _BcosScaling.apply(lin, norm, b, False)

    assert torch.autograd.gradcheck(f, (lin, norm))
    assert torch.autograd.gradgradcheck(f, (lin, norm))


@pytest.mark.parametrize("b", [2.0, 1.5, 2.5])
def test_detached_scaling_has_the_constant_factor_gradients(b):
    """Explanation mode: first and second derivatives are those of ``lin * factor`` with the factor constant."""
    torch.manual_seed(0)
    lin = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    norm = (lin.detach().abs().amax(1, keepdim=True) + 0.5).requires_grad_(True)
    grad_out = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    from alignnet.layers.bcos import _dynamic_factor

    ours = _BcosScaling.apply(lin, norm, b, True)
    ref = lin * _dynamic_factor(lin.detach(), norm.detach(), b)
    torch.testing.assert_close(ours, ref, rtol=1e-14, atol=0)
    (g_ours,) = torch.autograd.grad(ours, lin, grad_out, create_graph=True)
    (g_ref,) = torch.autograd.grad(ref, lin, grad_out, create_graph=True)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-14, atol=0)
    (gg_ours,) = torch.autograd.grad(g_ours.sum(), grad_out)
    (gg_ref,) = torch.autograd.grad(g_ref.sum(), grad_out)
    torch.testing.assert_close(gg_ours, gg_ref, rtol=1e-14, atol=0)


def _func_layers():
    torch.manual_seed(0)
    return {
        "conv": (BcosConv2d(3, 4, 3, padding=1, max_out=2).double(), torch.randn(3, 3, 5, 5, dtype=torch.float64)),
        "conv_b25": (BcosConv2d(3, 4, 3, b=2.5).double(), torch.randn(3, 3, 5, 5, dtype=torch.float64)),
        "linear": (BcosLinear(5, 4).double(), torch.randn(3, 5, dtype=torch.float64)),
        "dau": (DAUConv2d(3, 4, 3, rank=2, padding=1).double(), torch.randn(3, 3, 5, 5, dtype=torch.float64)),
    }


@pytest.mark.parametrize("name", ["conv", "conv_b25", "linear", "dau"])
@pytest.mark.parametrize("detach", [False, True])
def test_torch_func_grad_vmap_jacrev_equal_autograd(name, detach):
    layer, x = _func_layers()[name]
    layer.detach = detach
    params = {k: v.detach() for k, v in layer.named_parameters()}

    def loss(p, xi):  # one sample
        return torch.func.functional_call(layer, p, (xi[None],)).pow(2).sum()

    # torch.func.grad w.r.t. the input, vs autograd
    xr = x.clone().requires_grad_(True)
    layer(xr).pow(2).sum().backward()
    g_in = torch.func.grad(lambda xx: layer(xx).pow(2).sum())(x)
    torch.testing.assert_close(g_in, xr.grad, rtol=1e-10, atol=1e-12)
    # per-sample parameter gradients with vmap(grad), vs one autograd pass per sample
    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(params, x)
    for i in range(x.shape[0]):
        layer.zero_grad()
        layer(x[i : i + 1]).pow(2).sum().backward()
        for k, p in layer.named_parameters():
            expected = torch.zeros_like(p) if p.grad is None else p.grad  # detached: no gradient reaches it
            torch.testing.assert_close(per_sample[k][i], expected, rtol=1e-10, atol=1e-12)
    # jacrev of the output w.r.t. the input
    jac = torch.func.jacrev(layer)(x[:1])
    xr1 = x[:1].clone().requires_grad_(True)
    out1 = layer(xr1).flatten()
    rows = [torch.autograd.grad(out1[j], xr1, retain_graph=True)[0] for j in range(out1.numel())]
    torch.testing.assert_close(
        jac.reshape(out1.numel(), -1), torch.stack(rows).reshape(out1.numel(), -1), rtol=1e-10, atol=1e-12
    )
    layer.detach = False


def test_weight_gradient_under_torch_func_with_a_frozen_parameter():
    """Under torch.func the in-place inference shortcuts must not cut the weight gradient."""
    torch.manual_seed(0)
    layer = BcosLinear(5, 3).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    layer.weight.requires_grad_(False)
    with torch.no_grad():
        layer(x)
    w = layer.weight.detach().clone()
    g = torch.func.grad(lambda w_: torch.func.functional_call(layer, {"weight": w_}, (x,)).sum())(w)
    layer.weight.requires_grad_(True)
    layer.zero_grad()
    layer(x).sum().backward()
    torch.testing.assert_close(g, layer.weight.grad, rtol=1e-10, atol=1e-12)


# 4. half precision ---------------------------------------------------------------------------

# max |logit - float32 logit| / max |float32 logit| over 64 embedded test images (measured:
# float16 bcos 0.0010, coda 0.0008; bfloat16 bcos 0.008, coda 0.008; autocast bf16 ~0.005)
HALF_BOUNDS = {"float16": 0.005, "bfloat16": 0.03, "autocast_bfloat16": 0.03, "autocast_float16": 0.005}


@pytest.fixture(scope="module")
def fmnist_images():
    from alignnet.data.datasets import load_embedded

    x, _ = load_embedded("test").tensors()
    return x[:64]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fmnist_bcos", "fmnist_coda"])
@pytest.mark.parametrize("mode", list(HALF_BOUNDS))
def test_shipped_models_in_half_precision_match_float32(name, mode, fmnist_images):
    model = alignnet.load_model(WEIGHTS / f"{name}.safetensors").eval()
    x = fmnist_images
    with torch.no_grad():
        ref = model(x)
        if mode.startswith("autocast"):
            dtype = torch.bfloat16 if mode.endswith("bfloat16") else torch.float16
            with torch.autocast("cpu", dtype=dtype):
                out = model(x).float()
        else:
            dtype = getattr(torch, mode)
            out = copy.deepcopy(model).to(dtype)(x.to(dtype)).float()
    assert torch.isfinite(out).all()
    rel = float((out - ref).abs().max() / ref.abs().max())
    assert rel < HALF_BOUNDS[mode], f"{name} {mode}: relative logit error {rel:.4f}"
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.95


def test_patch_norms_do_not_overflow_in_float16():
    from alignnet.layers import patch_norms

    x = torch.full((1, 16, 4, 4), 300.0)  # 300^2 = 90000 > float16 max 65504
    n16 = patch_norms(x.half(), 3, padding=1)
    n32 = patch_norms(x, 3, padding=1)
    assert n16.dtype == torch.float16 and torch.isfinite(n16).all()
    torch.testing.assert_close(n16.float(), n32, rtol=1e-3, atol=0)
    lin = BcosLinear(16, 4)
    v = torch.full((2, 16), 300.0)
    with torch.no_grad():
        torch.testing.assert_close(copy.deepcopy(lin).half()(v.half()).float(), lin(v), rtol=5e-3, atol=0.5)


# 5. registration order -------------------------------------------------------------------------


class HeadFirst(nn.Module):
    """A valid model whose head (16 input channels) is registered before its stem."""

    def __init__(self):
        super().__init__()
        self.head = BcosConv2d(16, 10, 1)
        self.pool = GlobalAvgPool2d()
        self.logit = LogitLayer(bias=LOGIT_BIAS)
        self.stem = BcosConv2d(6, 16, 3, padding=1)
        self.enc = AddInverse()

    def forward(self, x):
        return self.logit(self.pool(self.head(self.stem(self.enc(x)))))


@pytest.mark.parametrize("method", sorted(set(list_attributors()) - {"guided_backprop"}))
def test_head_first_model_works_everywhere(method):
    torch.manual_seed(0)
    model = HeadFirst().double().eval()
    x = torch.rand(2, 3, 10, 10, dtype=torch.float64)
    assert alignnet.explanation.expected_input_channels(model, x) == 3
    if method == "ours":
        assert explain(model, x).completeness_error() < 1e-12
    out = get_attributor(method, model, **FAST.get(method, {})).attribute(x, torch.tensor([1, 2]))
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="expects images with 3 channels"):
        explain(model, torch.rand(2, 4, 10, 10, dtype=torch.float64))


# 6. one error for out-of-range targets ---------------------------------------------------------


@pytest.mark.parametrize("method", sorted(set(list_attributors()) - {"guided_backprop"}))
@pytest.mark.parametrize("bad", [10, -1, [0, 12]])
def test_out_of_range_target_is_one_clear_error(method, bad):
    torch.manual_seed(0)
    model = tiny_bcos().eval()
    x = torch.rand(2, 3, 8, 8)
    att = get_attributor(method, model, **FAST.get(method, {}))
    with pytest.raises(ValueError, match=r"model has 10 outputs, so targets must lie in 0\.\.9"):
        att.attribute(x, bad)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        att.attribute_maps(x, torch.tensor([[0, 10], [1, 2]]))
    if method == "ours":
        with pytest.raises(ValueError, match=r"0\.\.9"):
            explain(model, x, bad)


# 7. logit bias ----------------------------------------------------------------------------------


def test_logit_bias_is_exact_after_double_and_follows_the_module():
    layer = LogitLayer(temperature=2.0, bias=LOGIT_BIAS)
    x = torch.randn(3, 10, dtype=torch.float64)
    layer.half().double()
    assert layer.bias.dtype == torch.float64 and layer.bias.item() == LOGIT_BIAS
    assert torch.equal(layer(x), x / 2.0 + LOGIT_BIAS)
    assert layer(x.float()).dtype == torch.float32 and layer(x.half()).dtype == torch.float16
    assert "bias" in dict(layer.named_buffers()) and "bias" in layer.state_dict()
    model = tiny_bcos().double()
    x6 = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    e = explain(model, x6)
    assert e.completeness_error() < 1e-13
    assert float(e.bias[0]) == LOGIT_BIAS


@pytest.mark.parametrize("name", ["fmnist_bcos", "fmnist_coda"])
def test_shipped_checkpoints_with_float32_bias_still_load(name):
    from safetensors.torch import load_file

    model = alignnet.load_model(WEIGHTS / f"{name}.safetensors")
    stored = load_file(WEIGHTS / f"{name}.safetensors")["logit_layer.bias"]
    assert stored.dtype == torch.float32
    assert model.logit_layer.bias.item() == stored.item()  # the stored value, unchanged
    learned = LogitLayer(bias=0.5, learn_bias=True).double()
    assert isinstance(learned.bias, nn.Parameter) and learned.bias.dtype == torch.float64


# 8. one mechanism for state; layer_contributions --------------------------------------------------


def test_explain_uses_eval_mode(monkeypatch):
    import alignnet.explanation.dynamic_linear as dl

    used = []
    real = dl.eval_mode

    def spy(model):
        used.append(model)
        return real(model)

    monkeypatch.setattr(dl, "eval_mode", spy)
    model = tiny_bcos().train()
    explain(model, torch.rand(1, 3, 8, 8))
    assert used and used[-1] is model and model.training


def test_compare_figure_restores_flags_after_an_exception():
    from alignnet.metrics.plots import compare_figure

    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(3, 2)

        def forward(self, x):
            raise RuntimeError("boom")

    model = Boom().train()
    with pytest.raises(RuntimeError, match="boom"):
        compare_figure(model, torch.rand(1, 3, 4, 4))
    assert model.training and model.inner.training


def test_layer_contributions_sum_to_the_logit_and_leave_state_alone():
    torch.manual_seed(0)
    model = tiny_bcos().double().train()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    model[2].weight.requires_grad_(False)
    image = torch.rand(3, 8, 8, dtype=torch.float64)
    maps = layer_contributions(model, image, 4)
    assert [n for n, _ in maps] == ["1", "2", "3"]
    with torch.no_grad(), alignnet.layers.eval_mode(model):
        logit = model(image[None])[0, 4]
    for _name, m in maps:
        torch.testing.assert_close(m.sum() + LOGIT_BIAS, logit, rtol=1e-12, atol=1e-12)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())  # .grad untouched
    assert [p.requires_grad for p in model.parameters()] == [True, False, True]
    assert not any(getattr(m, "detach", False) for m in model.modules())
    maps4 = layer_contributions(model, image[None], 4)  # (1, C, H, W) works too
    assert all(torch.equal(a[1], b[1]) for a, b in zip(maps, maps4, strict=True))
    with pytest.raises(ValueError, match=r"0\.\.9"):
        layer_contributions(model, image, 10)
    with pytest.raises(TypeError, match="int class index"):
        layer_contributions(model, image, 1.5)


# 9. API traps ----------------------------------------------------------------------------------


def test_colour_explanation_column_and_deprecated_target():
    torch.manual_seed(0)
    model = tiny_bcos().eval()
    e = explain(model, torch.rand(2, 3, 8, 8), torch.tensor([[7, 2], [5, 1]]))
    a = alignnet.colour_explanation(e, 1, column=1)
    with pytest.warns(DeprecationWarning, match="use column="):
        b = alignnet.colour_explanation(e, 1, target=1)
    assert np.array_equal(a, b)
    assert np.array_equal(alignnet.colour_explanation(e, 1, 1), a)  # positional stays the column
    with pytest.raises(IndexError, match="column 2 out of range: 2 classes"):
        alignnet.colour_explanation(e, 1, column=2)
    with pytest.raises(TypeError, match="both column= and"):
        alignnet.colour_explanation(e, 1, column=1, target=1)


@pytest.mark.parametrize("method", ["ours", "grad", "occlusion5"])
def test_attributors_and_explain_accept_captums_target_keyword(method):
    torch.manual_seed(0)
    model = tiny_bcos().double().eval()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    att = get_attributor(method, model)
    torch.testing.assert_close(att.attribute(x, target=3), att.attribute(x, 3), rtol=0, atol=0)
    with pytest.raises(TypeError, match="both targets= and target="):
        att.attribute(x, 3, target=3)
    t = torch.tensor([[1, 2], [3, 4]])
    torch.testing.assert_close(att.attribute_maps(x, target=t), att.attribute_maps(x, t), rtol=0, atol=0)
    torch.testing.assert_close(explain(model, x, target=3).weights, explain(model, x, 3).weights, rtol=0, atol=0)


# 10. protocol details ---------------------------------------------------------------------------


def test_pixel_removal_breaks_ties_randomly_and_reproducibly():
    from alignnet.metrics.pixel_removal import removal_ranks

    flat = torch.zeros(2, 8, 8)  # every pixel tied
    r0 = removal_ranks(flat, "least", seed=0)
    # raster order would remove pixel 0, 1, 2, ... first; the random order does not favour the top rows
    first_quarter = r0 < 16
    rows = torch.arange(64).view(8, 8)[None].expand(2, -1, -1).reshape(2, 64) // 8
    assert float(rows[first_quarter].float().mean()) > 1.5  # raster order gives 0.5
    assert torch.equal(r0, removal_ranks(flat, "least", seed=0))
    assert not torch.equal(r0, removal_ranks(flat, "least", seed=1))
    assert not torch.equal(r0[0], r0[1])  # each image its own order
    # batching does not change an image's order
    assert torch.equal(removal_ranks(flat[1:], "least", seed=0, first=1), r0[1:])
    # importance still decides where there are no ties
    a = torch.arange(64.0).view(1, 8, 8)
    assert torch.equal(removal_ranks(a, "least", seed=3)[0], torch.arange(64))
    assert torch.equal(removal_ranks(a, "most", seed=3)[0], torch.arange(63, -1, -1))
    # ties only among equals: two levels
    two = (torch.arange(64) >= 32).float().view(1, 8, 8)
    r = removal_ranks(two, "least", seed=5)[0]
    assert bool((r[:32] < 32).all()) and bool((r[32:] >= 32).all())


def test_pixel_removal_records_the_seed(tmp_path):
    from alignnet.metrics import evaluate_pixel_removal

    torch.manual_seed(0)
    model = tiny_bcos().eval()
    data = (torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    res = evaluate_pixel_removal(model, data, "gradcam", n_images=4, steps=4, seed=7, progress=False)
    assert res.config["seed"] == 7 and res.config["tie_break"] == "random"
    assert res.config["method_config"]["layer"] is not None
    other = evaluate_pixel_removal(model, data, "gradcam", n_images=4, steps=4, seed=8, progress=False)
    again = evaluate_pixel_removal(model, data, "gradcam", n_images=4, steps=4, seed=7, progress=False, batch_size=1)
    np.testing.assert_allclose(again.curves["least"], res.curves["least"], rtol=1e-6)
    assert other.config["seed"] == 8


def test_localisation_records_the_gradcam_layer(tmp_path):
    from _attr_nets import TemplateNet, blob_images
    from alignnet.metrics import evaluate_localisation

    res = evaluate_localisation(TemplateNet(), blob_images(per_class=4), "gradcam", grid=2, n_grids=2, progress=False)
    assert res.config["method_config"]["layer"] == "conv"
    json_path, _ = res.save(tmp_path)
    assert json.loads(json_path.read_text())["config"]["method_config"]["layer"] == "conv"


def test_explain_of_a_clean_model_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explain(tiny_bcos().eval(), torch.rand(1, 3, 8, 8))
