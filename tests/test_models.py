"""Model zoo: registry, pinned parameter counts, and per-model invariants (build, forward,
backward, explain completeness, save/load, TorchScript) parametrised over ``list_models()``."""

import copy
import json
import math

import pytest
import torch
from torch import nn

import alignnet
from alignnet.explanation import expected_input_channels
from alignnet.layers import AddInverse, BatchNormUncentered2d, BcosConv2d, DAUConv2d, LogitLayer
from alignnet.models import InputSpec, create_model, list_models, register_model
from alignnet.models.cifar import B_ABLATION, ablation_overrides
from alignnet.models.convnext import TINY, ConvNeXt, PositionNorm2d
from alignnet.models.vit import Normalize

# Parameter counts with the default number of classes. The v2 ImageNet models and ViTs equal the
# bcos package's models of the same name (checked against the package in test_from_bcos.py).
PARAMS = {
    "bcos_cifar10_9l": 3_772_160,
    "coda_cifar10_9l": 7_782_816,
    "bcos_resnet20": 272_112,
    "bcos_resnet56": 854_064,
    "bcos_resnet18": 11_693_120,
    "bcos_resnet34": 21_797_568,
    "bcos_resnet50": 25_538_880,
    "bcos_resnet101": 44_504_896,
    "bcos_resnet152": 60_125_504,
    "bcos_resnext50_32x4d": 25_003_200,
    "bcos_densenet121": 7_945_440,
    "bcos_densenet161": 28_584_144,
    "bcos_densenet169": 14_078_688,
    "bcos_densenet201": 19_907_808,
    "bcos_vgg11_bnu": 132_855_872,
    "bcos_vitc_ti": 5_318_712,
    "bcos_vitc_s": 20_878_704,
    "bcos_vitc_b": 81_326_016,
    "bcos_vitc_l": 167_444_160,
    "bcos_simple_vit_ti": 5_800_128,
    "bcos_simple_vit_s": 22_217_088,
    "bcos_simple_vit_b": 86_901_504,
    "bcos_simple_vit_l": 178_787_328,
    "bcos_convnext_tiny": 28_543_392,
    "bcos_convnext_base": 88_466_304,
    "bcos_convnext_tiny_bnu": 28_543_392,
    "bcos_convnext_base_bnu": 88_466_304,
    # the standard (non-B-cos) ViT baselines of the B-cos v2 release
    "vitc_ti": 5_334_952,
    "vitc_s": 20_910_184,
    "vitc_b": 81_388_648,
    "vitc_l": 167_541_352,
    "simple_vit_ti": 5_670_184,
    "simple_vit_s": 21_956_200,
    "simple_vit_b": 86_378_728,
    "simple_vit_l": 178_104_296,
    # the standard CNN of the 9-layer network's shape (source of the B-cosified Fashion-MNIST model)
    "plain_cnn_9l": 1_886_922,
    "bcos_resnet34_v1": 43_578_112,
    "bcos_resnet50_v1": 51_024_640,
    "bcos_densenet121_v1": 15_807_232,
    "bcos_vgg11_v1": 265_706_240,
}
# Big or slow to build and run at small inputs: still tested, marked slow.
SLOW = {
    "bcos_vgg11_v1",
    "bcos_vgg11_bnu",
    "bcos_densenet201",
    "bcos_densenet169",
    "bcos_densenet161",
    "bcos_convnext_tiny",
    "bcos_convnext_tiny_bnu",
    "bcos_convnext_base",
    "bcos_convnext_base_bnu",
    "bcos_vitc_b",
    "bcos_vitc_l",
    "bcos_simple_vit_b",
    "bcos_simple_vit_l",
}
# Not B-cos (GELU, softmax attention, biases): no completeness; RGB normalised inside, no logit layer.
STANDARD = {n for n in list_models() if n.startswith(("vitc_", "simple_vit_", "plain_"))}
# Over this many parameters the file round trip writes >250 MB: checked on the state dict instead.
ROUND_TRIP_MAX_PARAMS = 70_000_000


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def calibrate(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """Set batch-norm running statistics from one batch (momentum 1), so signals are O(1) in eval."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    for m, mom in zip(norms, saved, strict=True):
        m.momentum = mom
    return model.eval()


def small_input(model: nn.Module, n: int = 2, dtype=torch.float32) -> torch.Tensor:
    # ImageNet-size nets at 64x64: at 32x32 their last stage sees 1x1 maps, whose training-mode batch
    # variance over N=2 values can vanish (infinite gradients)
    side = 32 if model.input_spec.size[0] <= 32 else 64
    return torch.rand(n, 3, side, side, generator=torch.Generator().manual_seed(1), dtype=dtype)


def _param(name):
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name


ALL = [_param(n) for n in list_models() if n not in STANDARD]


# ------------------------------------------------------------------------------------- registry
def test_every_model_has_a_pinned_count():
    assert set(list_models()) == set(PARAMS)


def test_list_models_pattern():
    assert list_models("bcos_resnet1*") == ["bcos_resnet101", "bcos_resnet152", "bcos_resnet18"]
    assert list_models("coda_*") == ["coda_cifar10_9l"]
    assert list_models("nothing*") == []
    assert alignnet.list_models() == list_models()


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="did you mean.*bcos_resnet18"):
        create_model("bcos_resnet81")
    with pytest.raises(ValueError, match="unknown model"):
        create_model("zzzz")


def test_unknown_argument_is_an_error():
    with pytest.raises(ValueError, match="does not accept.*'widht'.*accepted"):
        create_model("bcos_cifar10_9l", widht=0.5)


def test_non_json_argument_is_an_error():
    with pytest.raises(TypeError, match="JSON"):
        create_model("bcos_cifar10_9l", b=torch.tensor(2.0))


def test_register_model_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_model(alignnet.models.cifar.bcos_cifar10_9l)


@pytest.mark.parametrize("name", list_models())
def test_parameter_count_and_attributes(name):
    with torch.device("meta"):  # no memory, no initialisation cost
        model = create_model(name)
    assert _params(model) == PARAMS[name]
    assert isinstance(model.input_spec, InputSpec) and model.input_spec.channels == 3
    assert len(model.input_spec.size) == 2
    assert isinstance(model.paper, str) and len(model.paper) > 20
    assert model.model_name == name and model.model_args == {}
    modules = list(model.modules())
    if name in STANDARD:
        assert model.input_spec.encoding == "none"
        if "vit" in name:
            assert isinstance(modules[1], Normalize), "the ImageNet normalisation must be the first submodule"
        assert not any(isinstance(m, (AddInverse, LogitLayer)) for m in modules)
    else:
        assert model.input_spec.encoding == "add_inverse"
        assert isinstance(modules[1], AddInverse), "AddInverse must be the first submodule"
        assert sum(isinstance(m, LogitLayer) for m in modules) == 1
    assert expected_input_channels(model) in (3, None)  # None: a simple ViT's first layer is linear
    if model.input_spec.size == (224, 224):
        # the evaluation transform of the B-cos v2 code: 256 (90-epoch recipe), 232 (600-epoch ConvNeXts)
        assert model.input_spec.resize == (232 if "convnext" in name else 256)


def test_model_args_are_recorded():
    model = create_model("coda_cifar10_9l", num_classes=7, temperature=50, norm="l2", width=0.5)
    assert model.model_args == {"num_classes": 7, "temperature": 50, "norm": "l2", "width": 0.5}
    json.dumps(model.model_args)
    assert model.logit_layer.temperature == 50


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="num_classes"):
        create_model("bcos_resnet18", num_classes=1)
    with pytest.raises(ValueError, match="width"):
        create_model("bcos_cifar10_9l", width=0)
    with pytest.raises(ValueError, match="norm"):
        create_model("coda_cifar10_9l", norm="l1")
    with pytest.raises(ValueError, match="norm"):
        create_model("bcos_vitc_ti", norm="batch")
    with pytest.raises(ValueError, match="b must be"):
        create_model("bcos_cifar10_9l", b=0.5)


# ------------------------------------------------------------------- paper configurations
def test_bcos_cifar10_9l_matches_the_paper_config():
    model = create_model("bcos_cifar10_9l")
    convs = [m for m in model.modules() if isinstance(m, BcosConv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 128, 256, 256, 256, 10]
    assert [c.kernel_size[0] for c in convs] == [3] * 8 + [1]
    assert [c.stride[0] for c in convs] == [1, 1, 2, 1, 1, 2, 1, 1, 1]
    assert [c.padding[0] for c in convs] == [1] * 8 + [0]
    assert all(c.max_out == 2 and c.b == 2 for c in convs)
    assert convs[0].scale == pytest.approx(math.sqrt(9 * 6) / 100)
    assert convs[8].scale == pytest.approx(math.sqrt(256) / 100)
    assert model.logit_layer.bias.item() == pytest.approx(math.log(0.1 / 0.9))


def test_b_ablation_table():
    assert ablation_overrides(2.0) == {"b": 2.0, "scale": 10**-1.25, "temperature": 100.0}
    for b, (scale, _) in B_ABLATION.items():
        assert scale == pytest.approx(10 ** (-2 + 1.5 * (2.5 - b)))
    model = create_model("bcos_cifar10_9l", **ablation_overrides(1.5))
    assert all(c.scale == pytest.approx(10**-0.5) and c.b == 1.5 for c in model.modules() if isinstance(c, BcosConv2d))
    assert model.logit_layer.temperature == 1e-2
    with pytest.raises(ValueError, match="ablation"):
        ablation_overrides(3.0)


def test_coda_cifar10_9l_matches_the_paper_config():
    model = create_model("coda_cifar10_9l")
    daus = [m for m in model.modules() if isinstance(m, DAUConv2d)]
    assert [d.out_channels for d in daus] == [16, 16, 32, 32, 32, 64, 64, 64, 10]
    assert [d.rank for d in daus] == [32, 32, 64, 64, 64, 64, 64, 64, 64]
    assert all(d.norm == "squash" for d in daus)
    assert model.logit_layer.temperature == 1000
    assert isinstance(model.pool, alignnet.layers.GlobalSumPool2d)


@pytest.mark.parametrize(
    ("width", "channels", "ranks"),
    [(0.25, [4, 4, 8, 8, 8, 16, 16, 16, 10], [8, 8, 16, 16, 16, 16, 16, 16, 16]), (0.01, [1] * 8 + [10], [1] * 9)],
)
def test_coda_width_scales_channels_and_ranks(width, channels, ranks):
    daus = [m for m in create_model("coda_cifar10_9l", width=width).modules() if isinstance(m, DAUConv2d)]
    assert [d.out_channels for d in daus] == channels
    assert [d.rank for d in daus] == ranks


def test_bcos_width_scales_channels():
    convs = [m for m in create_model("bcos_cifar10_9l", width=0.5).modules() if isinstance(m, BcosConv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 64, 128, 128, 128, 10]


@pytest.mark.parametrize("name", ["bcos_cifar10_9l", "coda_cifar10_9l"])
@pytest.mark.parametrize("width", [0.25])
def test_small_width_trains_on_fashion_mnist_sized_input(name, width):
    """The demo path: a small-width model learns one batch of 28x28 grey images (as 3 channels)."""
    torch.manual_seed(0)
    model = create_model(name, width=width)
    x = torch.rand(4, 1, 28, 28).expand(-1, 3, -1, -1)
    y = torch.nn.functional.one_hot(torch.arange(4) % 10, 10).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # the papers' learning rates are 1e-3 / 2.5e-4
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1e-3
    e = alignnet.explain(model.eval(), x, targets=torch.arange(4))
    assert e.weights.shape == (4, 6, 28, 28)
    assert e.completeness_error() < 1e-4


# ------------------------------------------------------------------------- per-model invariants
def _relative_completeness(e) -> float:
    """Completeness error relative to the explained part ``|output - bias|`` (not the bias)."""
    total = e.contributions.flatten(-2).sum(-1) + e.bias
    explained = (e.outputs - e.bias).abs().max()
    assert explained > 0, "the contributions vanished: the test would not check anything"
    return float((total - e.outputs).abs().max() / explained)


# v1 VGG-11 has no normalisation layers: at random initialisation each MaxOut B-cos layer shrinks the signal by
# ~50x (|cos| ~ 1/sqrt(k*k*C)), so after 11 layers float32 underflows to exactly 0 (1e-30 at layer 10, measured).
# Trained v1 networks are aligned (|cos| >> 1/sqrt(D)); at init the invariants are checked in float64.
FLOAT32_UNDERFLOW = {"bcos_vgg11_v1"}


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_explain_roundtrip(name, tmp_path):
    torch.manual_seed(0)
    # logit_bias=0: random networks give small logits, which a bias of -2.2 would round away
    model = create_model(name, num_classes=3, logit_bias=0.0)
    dtype = torch.float32
    if name in FLOAT32_UNDERFLOW:
        model, dtype = model.double(), torch.float64
    x = small_input(model, dtype=dtype)
    calibrate(model, x)

    # forward + backward (train mode: batch statistics flow into the gradient)
    model.train()
    logits = model(x)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().max() > 0 for g in grads)
    model.zero_grad(set_to_none=True)
    model.eval()

    # completeness in float32: contributions + bias == logit for the predicted and all classes
    e = alignnet.explain(model, x, targets="all")
    assert e.weights.shape == (2, 3, 6, *x.shape[-2:])
    assert _relative_completeness(e) < 1e-3
    # explanation mode keeps the forward. Checked in float64: explanation mode reorders the arithmetic (1x1 layers
    # as matrix products, row norms in the factor), and at random initialisation these deep float32 models
    # amplify rounding to 1e-4 of the logits (as between their own no-grad and autograd forwards)
    if dtype == torch.float64:
        model64, x64, logits64 = model, x, e.logits
    else:
        model64, x64 = copy.deepcopy(model).double(), x.double()
        logits64 = alignnet.explain(model64, x64).logits
    torch.testing.assert_close(logits64, model64(x64).detach(), rtol=1e-9, atol=1e-12)

    # save/load round trip: identical logits
    if _params(model) <= ROUND_TRIP_MAX_PARAMS:
        path = alignnet.save_model(model, tmp_path / "m.safetensors")
        loaded = alignnet.load_model(path)
        assert type(loaded) is type(model) and loaded.model_args == {"num_classes": 3, "logit_bias": 0.0}
        assert torch.equal(loaded(x), model(x).detach())
    else:
        rebuilt = create_model(name, num_classes=3, logit_bias=0.0).to(dtype).eval()
        rebuilt.load_state_dict(model.state_dict())
        assert torch.equal(rebuilt(x), model(x))


@pytest.mark.parametrize(
    "name", ["bcos_cifar10_9l", "coda_cifar10_9l", "bcos_resnet20", "bcos_vitc_ti", "bcos_simple_vit_ti"]
)
def test_completeness_float64(name):
    """In float64 the identity holds to rounding error (1e-10), also with the logit bias."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, **({"width": 0.25} if "9l" in name else {})).double()
    x = small_input(model, dtype=torch.float64)
    calibrate(model, x)
    e = alignnet.explain(model, x, targets="all")
    assert _relative_completeness(e) < 1e-10
    assert e.completeness_error() < 1e-12


@pytest.mark.parametrize("norm", ["position", "batch_uncentered"])
def test_convnext_completeness_float64(norm):
    """The ConvNeXt code (depthwise B-cos convs, centred position norms or uncentered batch norms, layer
    scale, stochastic depth) in a small configuration: completeness to rounding error."""
    torch.manual_seed(0)
    model = ConvNeXt(
        ((8, 1), (16, 1), (24, 2), (32, 1)),
        num_classes=10,
        logit_layer=LogitLayer(bias=-2.0),
        conv_layer=BcosConv2d,
        norm_layer=PositionNorm2d if norm == "position" else BatchNormUncentered2d,
        stochastic_depth_prob=0.5,
    ).double()
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    calibrate(model, x)
    e = alignnet.explain(model, x, targets="all")
    assert _relative_completeness(e) < 1e-10
    assert e.completeness_error() < 1e-12
    model.train()
    torch.manual_seed(0)
    dropped = model(x)  # stochastic depth drops whole residual branches of some samples in training
    assert dropped.shape == (4, 10) and torch.isfinite(dropped).all()


def test_convnext_layout():
    with torch.device("meta"):  # structure only
        model = create_model("bcos_convnext_tiny")
        bnu = create_model("bcos_convnext_tiny_bnu")
    blocks = [m for m in model.modules() if type(m).__name__ == "ConvNeXtBlock"]
    assert len(blocks) == sum(n for _, n in TINY) == 18
    depthwise = blocks[0].block[0]
    assert depthwise.groups == depthwise.in_channels == 96 and depthwise.kernel_size == (7, 7)
    assert blocks[-1].stochastic_depth.p == pytest.approx(0.1)
    assert all(m.eps == 1e-6 for m in model.modules() if isinstance(m, PositionNorm2d))
    assert not any(isinstance(m, PositionNorm2d) for m in bnu.modules())
    assert sum(isinstance(m, BatchNormUncentered2d) for m in bnu.modules()) == 18 + 1 + 3 + 1


@pytest.mark.parametrize("name", ["vitc_ti", "simple_vit_ti"])
def test_standard_vit_forward_backward_roundtrip(name, tmp_path):
    """The non-B-cos baselines build, train and save/load like the others (equal logits vs the bcos
    package: test_from_bcos.py)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=3)
    x = torch.rand(2, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    path = alignnet.save_model(model, tmp_path / "m.safetensors")
    loaded = alignnet.load_model(path)
    assert loaded.input_spec.encoding == "none"
    assert torch.equal(loaded(x), model(x).detach())
    with pytest.raises(ValueError, match="multiples of the patch size"):
        create_model("simple_vit_ti", num_classes=3)(torch.rand(1, 3, 40, 40))


def test_vit_position_embedding_attribution_keeps_forward():
    """The embedding is attributed in explanation mode without changing the logits; switched off,
    the embedding is unattributed and completeness fails by exactly its share."""
    torch.manual_seed(0)
    model = create_model("bcos_vitc_ti", num_classes=10)
    x = small_input(model)
    calibrate(model, x)
    e = alignnet.explain(model, x)
    assert _relative_completeness(e) < 1e-4
    model.positional_embedding.attribute = False
    e_off = alignnet.explain(model, x)
    assert torch.allclose(e_off.logits, e.logits, atol=1e-6)
    assert _relative_completeness(e_off) > 1e-2


@pytest.mark.parametrize("name", ["bcos_cifar10_9l", "coda_cifar10_9l", "bcos_resnet20", "bcos_vitc_ti"])
def test_torchscript_trace(name):
    """TorchScript by tracing (the layers' Python-side argument checks keep torch.jit.script out)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    x = small_input(model)
    traced = torch.jit.trace(model, x, check_trace=False)
    assert torch.allclose(traced(x), model(x), atol=1e-6)
    x2 = torch.rand_like(x)
    assert torch.allclose(traced(x2), model(x2), atol=1e-6)


@pytest.mark.slow
def test_torch_compile_small_model():
    torch.manual_seed(0)
    model = create_model("bcos_cifar10_9l", width=0.25).eval()
    x = small_input(model)
    compiled = torch.compile(model)
    assert torch.allclose(compiled(x), model(x), atol=1e-5)


def test_batch_norm_is_uncentered_in_v2_models():
    model = create_model("bcos_resnet18")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, BatchNormUncentered2d) and m.bias is None for m in norms)
    assert not any(isinstance(m, BatchNormUncentered2d) for m in create_model("bcos_resnet34_v1").modules())
