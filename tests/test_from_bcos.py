"""Against the ``bcos`` package (skipped where it cannot be imported): equal parameter counts, and
``from_bcos`` gives the same logits and the same explanations as the package's own models."""

import math
import warnings

import pytest
import torch

import alignnet
from alignnet.models import create_model, from_bcos
from alignnet.models.convert import BCOS_NAMES

pytest.importorskip("einops")  # the bcos ViTs need it
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pretrained = pytest.importorskip("bcos.models.pretrained")


def _bcos_model(name: str, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(pretrained, BCOS_NAMES[name])(pretrained=False, **kwargs)


@pytest.mark.parametrize("name", sorted(BCOS_NAMES))
def test_parameter_counts_equal_bcos(name):
    with torch.device("meta"):
        ours = create_model(name)
        theirs = _bcos_model(name)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    # same tensor names and shapes up to the renaming from_bcos does
    from alignnet.models.convert import _rename

    theirs_shapes = {_rename(k): tuple(v.shape) for k, v in theirs.state_dict().items()}
    ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items() if k != "logit_layer.bias"}
    assert ours_shapes == theirs_shapes


@pytest.mark.parametrize(
    "name",
    [
        "bcos_resnet18",
        "bcos_vitc_ti",
        pytest.param("bcos_resnext50_32x4d", marks=pytest.mark.slow),
        pytest.param("bcos_densenet121", marks=pytest.mark.slow),
        pytest.param("bcos_vgg11_bnu", marks=pytest.mark.slow),
    ],
)
def test_from_bcos_logits_and_explanations(name):
    torch.manual_seed(0)
    theirs = _bcos_model(name, num_classes=10)
    x = torch.rand(2, 3, 32, 32)
    x6 = torch.cat([x, 1 - x], dim=1)
    # random running statistics of the right scale: one training-mode batch with momentum 1
    for m in theirs.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 1.0
    theirs.train()
    with torch.no_grad():
        theirs(x6)
    theirs.eval()

    # their configs use the ImageNet logit bias -log(999) whatever the number of classes
    ours = from_bcos(name, theirs.state_dict(), logit_bias=-math.log(999))
    ours_by_their_name = from_bcos(BCOS_NAMES[name], theirs.state_dict(), logit_bias=-math.log(999))
    assert ours.model_name == ours_by_their_name.model_name == name

    # explanations: the gradient of the target logit in their explanation mode (their model.explain)
    x6.requires_grad_(True)
    with theirs.explanation_mode():
        their_logits = theirs(x6)
    target = their_logits.argmax(1)
    their_logits.gather(1, target[:, None]).sum().backward()
    if name.startswith("bcos_vitc"):
        ours.positional_embedding.attribute = False  # their gradient leaves the embedding unattributed
    e = alignnet.explain(ours, x, target)
    assert torch.allclose(e.logits, their_logits.detach(), rtol=1e-5, atol=1e-5)
    scale = x6.grad.abs().max()
    assert scale > 0
    assert torch.allclose(e.weights, x6.grad, atol=1e-5 * float(scale), rtol=1e-4)


def test_from_bcos_errors():
    with pytest.raises(ValueError, match="did you mean"):
        from_bcos("bcos_resnet81", {})
    with pytest.raises(ValueError, match="no counterpart"):
        from_bcos("bcos_cifar10_9l", {})
    with pytest.raises(TypeError, match="dict of tensors"):
        from_bcos("bcos_resnet18", {"a": 1})
    state = _bcos_model("bcos_resnet18", num_classes=10).state_dict()
    with pytest.raises(ValueError, match="no 'classifier.weight'"):
        from_bcos("bcos_densenet121", state)
    state.pop("layer1.0.bn1.weight")
    with pytest.raises(ValueError, match="lacks tensor 'layer1.0.bn1.weight'"):
        from_bcos("bcos_resnet18", state)
