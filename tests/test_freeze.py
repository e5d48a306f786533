"""alignnet.freeze: an inference snapshot with unit-norm rows and folded batch norms gives the model's numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import alignnet
from alignnet.errors import InputError
from alignnet.layers import AddInverse, BatchNormUncentered2d, BcosConv2d, GlobalAvgPool2d, LogitLayer
from alignnet.models import frozen as frozen_module
from alignnet.models import is_frozen


def _trained_like(model: nn.Module) -> nn.Module:
    """Batch norms with running variances and signed weights far from their initial 1 (a fold must use them)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BatchNormUncentered2d):
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.25)
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
    return model


def _norms(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, BatchNormUncentered2d)]


def _assert_same_numbers(model: nn.Module, frozen: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected, got = model(x), frozen(x)
    scale = expected.abs().max()
    assert scale > 0
    torch.testing.assert_close(got / scale, expected / scale, rtol=0, atol=1e-12)
    e, f = alignnet.explain(model, x, targets="all"), alignnet.explain(frozen, x, targets="all")
    w = e.weights.abs().max()
    torch.testing.assert_close(f.weights / w, e.weights / w, rtol=0, atol=1e-11)
    total = (f.weights * f.inputs[:, None]).flatten(2).sum(-1) + f.bias
    torch.testing.assert_close(total / scale, f.outputs / scale, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "name,left",
    [
        ("bcos_resnet18", []),  # every norm follows a convolution (the stem's through the average pooling)
        ("bcos_resnext50_32x4d", []),
        ("bcos_convnext_tiny_bnu", None),
        ("bcos_vitc_ti", []),  # no batch norms: only the rows
    ],
)
def test_frozen_model_gives_the_same_logits_and_explanations(name, left):
    torch.manual_seed(0)
    model = _trained_like(alignnet.create_model(name, num_classes=5, logit_bias=0.0).double().eval())
    x = torch.rand(2, 3, *((64, 64) if "vit" not in name else model.input_spec.size), dtype=torch.float64)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    frozen = alignnet.freeze(model, example=x)
    if left is not None:
        assert _norms(frozen) == left
    assert len(_norms(frozen)) < len(_norms(model)) or not _norms(model)
    _assert_same_numbers(model, frozen, x)
    # the original is untouched and still trainable; the snapshot's layers apply their weights as they are
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters()) and not any(p.requires_grad for p in frozen.parameters())
    assert is_frozen(frozen) and not is_frozen(model)
    layer = next(m for m in frozen.modules() if isinstance(m, BcosConv2d | alignnet.layers.BcosLinear))
    assert layer.weight_norms() is None


def test_densenet_keeps_the_norms_whose_input_is_also_concatenated():
    """A transition's pooled output feeds the next block's first norm and its concatenation: that norm stays
    (the autograd graph shows the second reader), every norm that only reads a convolution's output is folded."""
    torch.manual_seed(0)
    model = _trained_like(alignnet.create_model("bcos_densenet121", num_classes=4, logit_bias=0.0).double().eval())
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64)
    frozen = alignnet.freeze(model, example=x)
    left = set(_norms(frozen))
    assert {"features.denseblock2.denselayer1.norm1", "features.denseblock4.denselayer1.norm1"} <= left
    assert not any(n.endswith("norm2") for n in left) and "features.norm0" not in left
    _assert_same_numbers(model, frozen, x)


class _TwoReaders(nn.Module):
    """A convolution whose output a norm and an addition both read: folding the norm would change the sum."""

    def __init__(self):
        super().__init__()
        self.encode, self.conv, self.norm = AddInverse(), BcosConv2d(6, 4, 3, padding=1), BatchNormUncentered2d(4)
        self.pool, self.logits = GlobalAvgPool2d(), LogitLayer()

    def forward(self, x):
        y = self.conv(self.encode(x))
        return self.logits(self.pool(self.norm(y) + y))


def test_a_norm_whose_input_has_another_reader_is_not_folded_and_a_wrong_fold_is_refused(monkeypatch):
    torch.manual_seed(0)
    model = _trained_like(_TwoReaders().double().eval())
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    frozen = alignnet.freeze(model, example=x)
    assert _norms(frozen) == ["norm"]
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), model(x), rtol=1e-12, atol=1e-14)
    monkeypatch.setattr(frozen_module, "_batch_norms_after_convolutions", lambda m, e: {m.conv: m.norm})
    with pytest.raises(RuntimeError, match="differ from the model's"):
        alignnet.freeze(model, example=x)


def test_the_snapshot_refuses_training_new_weights_and_saving(tmp_path):
    model = alignnet.create_model("bcos_resnet18", num_classes=3)
    frozen = alignnet.freeze(model, example=torch.rand(1, 3, 32, 32))
    with pytest.raises(InputError, match="freeze it again"):
        frozen.train()
    with pytest.raises(InputError, match="freeze it again"):
        frozen.load_state_dict(frozen.state_dict())
    with pytest.raises(InputError, match="alignnet.freeze"):
        alignnet.save_model(frozen, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
    frozen.eval()  # evaluation mode stays allowed
    alignnet.save_model(model, tmp_path / "m.safetensors")  # the original saves as before


def test_a_model_frozen_in_explanation_mode_starts_in_normal_mode():
    model = alignnet.create_model("bcos_resnet18", num_classes=3)
    with alignnet.explanation_mode(model):
        frozen = alignnet.freeze(model, example=torch.rand(1, 3, 32, 32))
        assert all(m.detach for m in model.modules() if isinstance(m, alignnet.layers.DynamicLinear))
    assert not any(m.detach for m in frozen.modules() if isinstance(m, alignnet.layers.DynamicLinear))


def test_bad_calls_are_clear_errors():
    model = alignnet.create_model("bcos_resnet18", num_classes=3)
    with pytest.raises(InputError, match="compile the frozen copy"):
        alignnet.freeze(torch.compile(model))
    with pytest.raises(InputError, match="example"):
        alignnet.freeze(_TwoReaders())
    with pytest.raises(InputError, match="floating-point"):
        alignnet.freeze(model, example=torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
