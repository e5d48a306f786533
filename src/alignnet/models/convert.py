"""Convert checkpoints of the ``bcos`` package (the B-cos v2 authors' ImageNet weights).

Our architectures use the same module names as that package, so converting is renaming:
its B-cos layers keep their weight in a child module (``conv1.linear.weight``), ours directly
(``conv1.weight``); its B-cos ViTs are wrapped in a ``Sequential`` with the logit layer (prefix
``0.``); its ViT token reshaping is called ``rearrage``. Its standard (non-B-cos) ViTs are plain
models whose keys are ours unchanged. The package is not needed to convert.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..errors import InputError
from ..layers import LogitLayer
from ._registry import create_model, model_entrypoint
from .io import load_weights

__all__ = ["from_bcos", "BCOS_NAMES", "OFFICIAL_RELEASE", "STANDARD_NAMES"]

# our name -> the ``bcos.models.pretrained`` entrypoint with the same architecture
BCOS_NAMES: dict[str, str] = {
    "bcos_resnet18": "resnet18",
    "bcos_resnet34": "resnet34",
    "bcos_resnet50": "resnet50",
    "bcos_resnet101": "resnet101",
    "bcos_resnet152": "resnet152",
    "bcos_resnext50_32x4d": "resnext50_32x4d",
    "bcos_densenet121": "densenet121",
    "bcos_densenet161": "densenet161",
    "bcos_densenet169": "densenet169",
    "bcos_densenet201": "densenet201",
    "bcos_vgg11_bnu": "vgg11_bnu",
    "bcos_convnext_tiny": "convnext_tiny",
    "bcos_convnext_base": "convnext_base",
    "bcos_convnext_tiny_bnu": "convnext_tiny_bnu",
    "bcos_convnext_base_bnu": "convnext_base_bnu",
    "bcos_simple_vit_ti": "simple_vit_ti_patch16_224",
    "bcos_simple_vit_s": "simple_vit_s_patch16_224",
    "bcos_simple_vit_b": "simple_vit_b_patch16_224",
    "bcos_simple_vit_l": "simple_vit_l_patch16_224",
    "bcos_vitc_ti": "vitc_ti_patch1_14",
    "bcos_vitc_s": "vitc_s_patch1_14",
    "bcos_vitc_b": "vitc_b_patch1_14",
    "bcos_vitc_l": "vitc_l_patch1_14",
    "simple_vit_ti": "standard_simple_vit_ti_patch16_224",
    "simple_vit_s": "standard_simple_vit_s_patch16_224",
    "simple_vit_b": "standard_simple_vit_b_patch16_224",
    "simple_vit_l": "standard_simple_vit_l_patch16_224",
    "vitc_ti": "standard_vitc_ti_patch1_14",
    "vitc_s": "standard_vitc_s_patch1_14",
    "vitc_b": "standard_vitc_b_patch1_14",
    "vitc_l": "standard_vitc_l_patch1_14",
}

# the standard (non-B-cos) baselines: plain nn.Linear/nn.Conv2d/norm layers, state dicts kept as they are
STANDARD_NAMES = frozenset(name for name in BCOS_NAMES if not name.startswith("bcos_"))

# The 34 release files of the B-cos v2 authors (``bcos.models.pretrained.URLS``; GitHub release
# v0.0.1-weights, files ``<stem>-<first 10 hex digits of the SHA-256>.pth``):
# file stem -> (our registry name, the ``bcos.models.pretrained`` entrypoint that loads it).
OFFICIAL_RELEASE: dict[str, tuple[str, str]] = {
    # 90-epoch CNNs ("bcos_final")
    "resnet_18": ("bcos_resnet18", "resnet18"),
    "resnet_34": ("bcos_resnet34", "resnet34"),
    "resnet_50": ("bcos_resnet50", "resnet50"),
    "resnet_101": ("bcos_resnet101", "resnet101"),
    "resnet_152": ("bcos_resnet152", "resnet152"),
    "resnext_50_32x4d": ("bcos_resnext50_32x4d", "resnext50_32x4d"),
    "densenet_121": ("bcos_densenet121", "densenet121"),
    "densenet_161": ("bcos_densenet161", "densenet161"),
    "densenet_169": ("bcos_densenet169", "densenet169"),
    "densenet_201": ("bcos_densenet201", "densenet201"),
    "vgg_11_bnu": ("bcos_vgg11_bnu", "vgg11_bnu"),
    # 600-epoch CNNs ("bcos_final_long")
    "convnext_tiny_pn": ("bcos_convnext_tiny", "convnext_tiny"),
    "convnext_base_pn": ("bcos_convnext_base", "convnext_base"),
    "convnext_tiny_bnu": ("bcos_convnext_tiny_bnu", "convnext_tiny_bnu"),
    "convnext_base_bnu": ("bcos_convnext_base_bnu", "convnext_base_bnu"),
    "densenet_121_long": ("bcos_densenet121", "densenet121_long"),
    "resnet_50_long": ("bcos_resnet50", "resnet50_long"),
    "resnet_152_long": ("bcos_resnet152", "resnet152_long"),
    # ViTs ("vit_final"), B-cos
    "bcos_simple_vit_ti_patch16_224": ("bcos_simple_vit_ti", "simple_vit_ti_patch16_224"),
    "bcos_simple_vit_s_patch16_224": ("bcos_simple_vit_s", "simple_vit_s_patch16_224"),
    "bcos_simple_vit_b_patch16_224": ("bcos_simple_vit_b", "simple_vit_b_patch16_224"),
    "bcos_simple_vit_l_patch16_224": ("bcos_simple_vit_l", "simple_vit_l_patch16_224"),
    "bcos_vitc_ti_patch1_14": ("bcos_vitc_ti", "vitc_ti_patch1_14"),
    "bcos_vitc_s_patch1_14": ("bcos_vitc_s", "vitc_s_patch1_14"),
    "bcos_vitc_b_patch1_14": ("bcos_vitc_b", "vitc_b_patch1_14"),
    "bcos_vitc_l_patch1_14": ("bcos_vitc_l", "vitc_l_patch1_14"),
    # ViTs, standard (non-B-cos) baselines
    "standard_simple_vit_ti_patch16_224": ("simple_vit_ti", "standard_simple_vit_ti_patch16_224"),
    "standard_simple_vit_s_patch16_224": ("simple_vit_s", "standard_simple_vit_s_patch16_224"),
    "standard_simple_vit_b_patch16_224": ("simple_vit_b", "standard_simple_vit_b_patch16_224"),
    "standard_simple_vit_l_patch16_224": ("simple_vit_l", "standard_simple_vit_l_patch16_224"),
    "standard_vitc_ti_patch1_14": ("vitc_ti", "standard_vitc_ti_patch1_14"),
    "standard_vitc_s_patch1_14": ("vitc_s", "standard_vitc_s_patch1_14"),
    "standard_vitc_b_patch1_14": ("vitc_b", "standard_vitc_b_patch1_14"),
    "standard_vitc_l_patch1_14": ("vitc_l", "standard_vitc_l_patch1_14"),
}

_FIND_CLASSES = {  # our name prefix -> the key (after renaming) whose first dimension is the number of classes
    "bcos_resnet": "fc.weight",
    "bcos_resnext": "fc.weight",
    "bcos_densenet": "classifier.weight",
    "bcos_vgg": "classifier.2.weight",
    "bcos_convnext": "classifier.1.weight",
    "bcos_vitc": "linear_head.linear.weight",
    "bcos_simple_vit": "linear_head.linear.weight",
    "vitc": "linear_head.linear.weight",
    "simple_vit": "linear_head.linear.weight",
}


def _rename(key: str, bcos: bool = True) -> str:
    """A ``bcos``-package state-dict key as ours; the standard models' keys are the same as ours."""
    if not bcos:
        return key
    key = re.sub(r"^0\.", "", key)  # B-cos ViTs: Sequential(model, logit layer)
    key = key.replace(".linear.weight", ".weight") if key.endswith(".linear.weight") else key
    return key.replace("to_patch_embedding.rearrage", "to_patch_embedding.rearrange")


def _resolve(name: str) -> str:
    """Our name for ``name``: ours, a ``bcos`` entrypoint name or a release file stem."""
    if name in BCOS_NAMES:
        return name
    aliases = {entry: ours for ours, entry in BCOS_NAMES.items()}
    aliases.update({entry: ours for ours, entry in OFFICIAL_RELEASE.values()})
    aliases.update({stem: ours for stem, (ours, _) in OFFICIAL_RELEASE.items()})
    if name in aliases:
        return aliases[name]
    model_entrypoint(name)  # unknown names: error with close matches
    raise InputError(f"{name!r} has no counterpart in the bcos package; convertible: {sorted(BCOS_NAMES)}")


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _which_architecture(state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Our names whose ``bcos`` state dicts have exactly these keys and shapes (built on the meta device)."""
    found = []
    for name in BCOS_NAMES:
        state = {_rename(k, name not in STANDARD_NAMES): v for k, v in state_dict.items()}
        head = next(h for prefix, h in _FIND_CLASSES.items() if name.startswith(prefix))
        if head not in state or state[head].dim() < 1 or state[head].shape[0] < 2:
            continue
        with torch.device("meta"):
            model = create_model(name, num_classes=int(state[head].shape[0]))
        expected = _shapes(model.state_dict())
        expected.pop("logit_layer.bias", None)
        state.pop("logit_layer.bias", None)
        if expected == _shapes(state):
            found.append(name)
    return found


def from_bcos(name: str, state_dict: dict[str, torch.Tensor], **overrides) -> nn.Module:
    """Build ``name`` and load a ``bcos``-package state dict into it.

    Parameters
    ----------
    name:
        One of :data:`BCOS_NAMES` (ours, e.g. ``"bcos_resnet50"``), the ``bcos`` entrypoint name
        (e.g. ``"resnet50"``, ``"resnet50_long"``) or a release file stem of :data:`OFFICIAL_RELEASE`
        (e.g. ``"resnet_50_long"``).
    state_dict:
        The ``bcos`` model's ``state_dict()``, as the release ``.pth`` files store it (e.g. from
        ``torch.load(path, weights_only=True)``); the B-cos ViTs' ``0.`` prefix (their ``Sequential``
        with the logit layer) may be there or not.
    **overrides:
        Further ``create_model`` arguments; ``num_classes`` is read from the weights.

    Returns
    -------
    nn.Module
        The alignnet model in eval mode; it takes 3-channel images in [0, 1] (the ``bcos`` B-cos
        models take the 6-channel encoding ``[x, 1 - x]``, its standard ViTs ImageNet-normalised
        RGB) and gives the same logits.

    Raises
    ------
    ValueError
        For an unknown name, or a state dict of another architecture (naming the architectures it
        does fit, if any).
    """
    name = _resolve(name)
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise TypeError("state_dict must be a dict of tensors (a model's state_dict())")
    entry = BCOS_NAMES[name]
    state = {_rename(k, name not in STANDARD_NAMES): v for k, v in state_dict.items()}
    head = next(h for prefix, h in _FIND_CLASSES.items() if name.startswith(prefix))
    if head not in state or state[head].dim() < 1:
        raise InputError(
            f"the state dict has no {head!r} (after renaming): it is not a bcos {entry} checkpoint{_hint(state_dict)}"
        )
    overrides.setdefault("num_classes", int(state[head].shape[0]))
    model = create_model(name, **overrides)
    if isinstance(getattr(model, "logit_layer", None), LogitLayer):
        # the bcos package keeps the logit bias in its config, not in the state dict
        state.setdefault("logit_layer.bias", model.logit_layer.bias.detach().clone())
    try:
        load_weights(model, state, source=f"the bcos {entry} state dict")
    except ValueError as exc:
        raise InputError(f"{exc}{_hint(state_dict)}") from None
    return model.eval()


def _hint(state_dict: dict[str, torch.Tensor]) -> str:
    fits = _which_architecture(state_dict)
    if not fits:
        return ""
    return f" (it fits {', '.join(f'{n} (bcos {BCOS_NAMES[n]})' for n in fits)})"
