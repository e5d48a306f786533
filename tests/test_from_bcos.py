"""Against the ``bcos`` package (skipped where it cannot be imported): equal parameter counts, the
34 official release files mapped to our models, and ``from_bcos`` giving the same logits and the
same explanations as the package's own models, in float64.

The package's ``model.state_dict()`` is exactly the layout of its release ``.pth`` files: its
``pretrained`` entrypoints build the model and ``load_state_dict`` the downloaded file strictly.
"""

import math
import os
import re
import warnings
from functools import partial

import pytest
import torch

import alignnet
from alignnet.layers import BatchNormUncentered2d, BcosConv2d
from alignnet.models import create_model, from_bcos, list_models
from alignnet.models.convert import BCOS_NAMES, OFFICIAL_RELEASE, STANDARD_NAMES, _rename
from alignnet.models.convnext import ConvNeXt, PositionNorm2d
from alignnet.models.io import load_weights

pytest.importorskip("einops", reason="the bcos ViTs need einops")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pretrained = pytest.importorskip("bcos.models.pretrained", reason="the bcos package is not installed")

IMAGENET_BIAS = -math.log(999)  # their configs' logit bias, whatever the number of classes


def _bcos_model(name: str, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(pretrained, BCOS_NAMES[name])(pretrained=False, **kwargs)


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _their_input(name: str, x: torch.Tensor) -> torch.Tensor:
    """What their model takes for images ``x`` in [0, 1]: ``[x, 1 - x]`` (B-cos) or ImageNet-normalised RGB."""
    if name in STANDARD_NAMES:
        from bcos.data.presets import IMAGENET_MEAN, IMAGENET_STD

        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype)[:, None, None]
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype)[:, None, None]
        return (x - mean) / std
    return torch.cat([x, 1 - x], dim=1)


def _calibrate_theirs(model, x):
    """Random running statistics of the right scale: one training-mode batch with momentum 1."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


# ------------------------------------------------------------------------ architectures, release files
@pytest.mark.parametrize("name", sorted(BCOS_NAMES))
def test_parameter_counts_equal_bcos(name):
    with torch.device("meta"):
        ours = create_model(name)
        theirs = _bcos_model(name)
    assert _params(ours) == _params(theirs)
    # same tensor names and shapes up to the renaming from_bcos does
    bcos = name not in STANDARD_NAMES
    theirs_shapes = {_rename(k, bcos): tuple(v.shape) for k, v in theirs.state_dict().items()}
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items() if k != "logit_layer.bias"}
    assert ours_shapes == theirs_shapes


def _release_stems() -> dict[str, str]:
    """File stem -> URL of every file in the package's ``URLS`` (names ``<stem>-<10 hex>.pth``)."""
    stems = {}
    for group in pretrained.URLS.values():
        for url in group.values():
            match = re.fullmatch(r"(.+)-([0-9a-f]{10})\.pth", os.path.basename(url))
            assert match, url
            stems[match.group(1)] = url
    return stems


def test_official_release_lists_every_file():
    stems = _release_stems()
    assert len(stems) == 34 == len(OFFICIAL_RELEASE)
    assert set(OFFICIAL_RELEASE) == set(stems)
    registered = set(list_models())
    for ours, entry in OFFICIAL_RELEASE.values():
        assert ours in registered and entry in pretrained.list_available()


@pytest.mark.parametrize("stem", sorted(OFFICIAL_RELEASE))
def test_official_release_file_fits_our_model(stem, monkeypatch):
    """The entrypoint named for ``stem`` downloads exactly that file, and builds a model with our
    model's parameter count and tensor shapes (both built on the meta device)."""
    ours_name, entry = OFFICIAL_RELEASE[stem]
    requested = []

    class Requested(Exception):
        pass

    def fake_download(url, *args, **kwargs):
        requested.append(url)
        raise Requested

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Requested):
            getattr(pretrained, entry)(pretrained=True, progress=False)
        theirs = getattr(pretrained, entry)(pretrained=False)
        ours = create_model(ours_name)
    assert [os.path.basename(u).rsplit("-", 1)[0] for u in requested] == [stem]
    assert _params(ours) == _params(theirs)
    bcos = ours_name not in STANDARD_NAMES
    theirs_shapes = {_rename(k, bcos): tuple(v.shape) for k, v in theirs.state_dict().items()}
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items() if k != "logit_layer.bias"}
    assert ours_shapes == theirs_shapes


# --------------------------------------------------------------------- logits and explanations
@pytest.mark.parametrize(
    "name",
    [
        "bcos_resnet18",
        "bcos_vitc_ti",
        "bcos_simple_vit_ti",
        pytest.param("bcos_resnext50_32x4d", marks=pytest.mark.slow),
        pytest.param("bcos_densenet121", marks=pytest.mark.slow),
        pytest.param("bcos_vgg11_bnu", marks=pytest.mark.slow),
        # The full-size ConvNeXts (1-2 min each in float64, the suite's slowest tests) are not repeated here:
        # test_small_convnext_matches_bcos compares the same code in both norms numerically, and
        # test_official_release_file_fits_our_model checks the full-size configurations tensor by tensor.
    ],
)
def test_from_bcos_logits_and_explanations(name):
    torch.manual_seed(0)
    theirs = _bcos_model(name, num_classes=10)
    side = 64 if name.endswith("_bnu") else 32  # bnu: batch statistics of more than 2 values at the last stage
    x = torch.rand(2, 3, side, side, dtype=torch.float64)
    x6 = _their_input(name, x)
    # calibrated in float32, so that our float32 model holds the same statistics as theirs in float64
    _calibrate_theirs(theirs, x6.float()).double()

    ours = from_bcos(name, theirs.state_dict(), logit_bias=IMAGENET_BIAS).double()
    with torch.no_grad():  # the bias was made in float32; the package adds the Python float
        ours.logit_layer.bias.fill_(IMAGENET_BIAS)
    ours_by_their_name = from_bcos(BCOS_NAMES[name], theirs.state_dict(), logit_bias=IMAGENET_BIAS)
    assert ours.model_name == ours_by_their_name.model_name == name

    # explanations: the gradient of the target logit in their explanation mode (their model.explain)
    x6.requires_grad_(True)
    with theirs.explanation_mode():
        their_logits = theirs(x6)
    target = their_logits.argmax(1)
    their_logits.gather(1, target[:, None]).sum().backward()
    if hasattr(ours, "positional_embedding"):
        ours.positional_embedding.attribute = False  # their gradient leaves the embedding unattributed
    e = alignnet.explain(ours, x, target)
    # float64 rounding, amplified by deep random-weight nets: our layers divide the convolution's output by
    # the weight norms where the package normalises the weight first (same value, different rounding); the
    # deepest models here differ by up to ~1e-10 relative (float32 rounding would give ~1e-4)
    torch.testing.assert_close(e.logits, their_logits.detach(), rtol=1e-9, atol=1e-9 * float(their_logits.abs().max()))
    scale = x6.grad.abs().max()
    assert scale > 0
    torch.testing.assert_close(e.weights, x6.grad, rtol=1e-7, atol=1e-9 * float(scale))


@pytest.mark.parametrize("norm", ["position", "batch_uncentered"])
def test_small_convnext_matches_bcos(norm):
    """Our ConvNeXt code against the package's in a small configuration (the full-size ones: slow test above)."""
    from bcos.models.convnext import BcosConvNeXt, CNBlockConfig
    from bcos.modules import BcosConv2d as TheirConv
    from bcos.modules import norms

    torch.manual_seed(0)
    stages = ((8, 1), (16, 1), (24, 2), (32, 1))
    settings = [
        CNBlockConfig(c, stages[i + 1][0] if i + 1 < len(stages) else None, n) for i, (c, n) in enumerate(stages)
    ]
    their_norm = None if norm == "position" else norms.NoBias(norms.BatchNormUncentered2d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = BcosConvNeXt(
            settings,
            num_classes=5,
            conv_layer=partial(TheirConv, b=2),
            norm_layer=their_norm,
            logit_bias=IMAGENET_BIAS,
            stochastic_depth_prob=0.1,
        ).double()
    ours = ConvNeXt(
        stages,
        5,
        logit_layer=alignnet.layers.LogitLayer(bias=IMAGENET_BIAS),
        conv_layer=partial(BcosConv2d, b=2.0),
        norm_layer=partial(PositionNorm2d, eps=1e-6) if norm == "position" else BatchNormUncentered2d,
        stochastic_depth_prob=0.1,
    ).double()
    x = torch.rand(4, 3, 64, 64, dtype=torch.float64)
    x6 = torch.cat([x, 1 - x], dim=1)
    _calibrate_theirs(theirs, x6)  # both models are float64 here: no rounding of the statistics
    state = {_rename(k): v for k, v in theirs.state_dict().items()}
    load_weights(ours, {**state, "logit_layer.bias": ours.logit_layer.bias.detach().clone()})
    with torch.no_grad():
        ours.logit_layer.bias.fill_(IMAGENET_BIAS)
    ours.eval()

    x6.requires_grad_(True)
    with theirs.explanation_mode():
        their_logits = theirs(x6)
    their_logits[:, 0].sum().backward()
    e = alignnet.explain(ours, x, torch.zeros(4, dtype=torch.long))
    assert torch.allclose(e.logits, their_logits.detach(), rtol=1e-12, atol=1e-12)
    assert torch.allclose(e.weights, x6.grad, rtol=1e-9, atol=1e-10 * float(x6.grad.abs().max()))
    assert e.completeness_error() < 1e-12
    # training mode: the same batch statistics and the same stochastic-depth draws from the same seed
    ours.train(), theirs.train()
    torch.manual_seed(1)
    a = ours(x)
    torch.manual_seed(1)
    assert torch.allclose(a, theirs(x6.detach()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "name", ["vitc_ti", "simple_vit_ti", pytest.param("vitc_s", marks=pytest.mark.slow), "simple_vit_s"]
)
def test_standard_vits_equal_bcos(name):
    """The non-B-cos baselines: RGB in [0, 1] in, the ImageNet normalisation inside, equal logits."""
    torch.manual_seed(0)
    theirs = _bcos_model(name, num_classes=10).double().eval()
    ours = from_bcos(name, theirs.state_dict()).double()
    assert ours.input_spec.encoding == "none" and ours.input_spec.channels == 3
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(_their_input(name, x)), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------- names, errors
def test_from_bcos_accepts_release_stems_entrypoints_and_unprefixed_vits():
    torch.manual_seed(0)
    state = _bcos_model("bcos_resnet18", num_classes=4).state_dict()
    assert from_bcos("resnet_18", state).model_name == "bcos_resnet18"
    with torch.device("meta"):  # only the names are checked here
        state50 = _bcos_model("bcos_resnet50", num_classes=4).state_dict()
        assert from_bcos("resnet_50_long", state50).model_name == "bcos_resnet50"
        assert from_bcos("resnet50_long", state50).model_name == "bcos_resnet50"
    # B-cos ViTs are Sequential(model, logit layer) in the files; the bare model's keys work too
    vit = _bcos_model("bcos_vitc_ti", num_classes=4).eval()
    assert all(k.startswith("0.") for k in vit.state_dict())
    bare = from_bcos("bcos_vitc_ti", vit[0].state_dict())
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(bare(x), from_bcos("bcos_vitc_ti", vit.state_dict())(x))


def test_from_bcos_errors():
    with pytest.raises(ValueError, match="did you mean"):
        from_bcos("bcos_resnet81", {})
    with pytest.raises(ValueError, match="no counterpart"):
        from_bcos("bcos_cifar10_9l", {})
    with pytest.raises(TypeError, match="dict of tensors"):
        from_bcos("bcos_resnet18", {"a": 1})
    state = _bcos_model("bcos_resnet18", num_classes=10).state_dict()
    with pytest.raises(ValueError, match="no 'classifier.weight'.*fits bcos_resnet18"):
        from_bcos("bcos_densenet121", state)
    state.pop("layer1.0.bn1.weight")
    with pytest.raises(ValueError, match="lacks tensor 'layer1.0.bn1.weight'"):
        from_bcos("bcos_resnet18", state)


@pytest.mark.parametrize(
    ("name", "wrong"),
    [
        ("bcos_vitc_ti", "vitc_ti"),  # a standard checkpoint for the B-cos model
        ("vitc_ti", "bcos_vitc_ti"),
        ("bcos_convnext_tiny", "bcos_convnext_tiny_bnu"),  # bnu weights for the pn model
        ("bcos_convnext_base", "bcos_convnext_tiny"),
        ("bcos_simple_vit_s", "bcos_vitc_s"),
        ("bcos_resnet50", "bcos_resnext50_32x4d"),
    ],
)
def test_from_bcos_wrong_architecture_is_a_clear_error(name, wrong):
    with torch.device("meta"):  # the check happens before any tensor is copied
        state = _bcos_model(wrong).state_dict()
        with pytest.raises(ValueError, match=rf"it fits {wrong} \(bcos "):
            from_bcos(name, state)
