"""Convert checkpoints of the ``bcos`` package (the B-cos v2 authors' ImageNet weights).

Our architectures use the same module names as that package, so converting is renaming:
its B-cos layers keep their weight in a child module (``conv1.linear.weight``), ours directly
(``conv1.weight``); its ViTs are wrapped in a ``Sequential`` with the logit layer (prefix ``0.``);
its ViT token reshaping is called ``rearrage``. The package is not needed to convert.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ._registry import create_model, model_entrypoint
from .io import load_weights

__all__ = ["from_bcos", "BCOS_NAMES"]

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
    "bcos_vitc_ti": "vitc_ti_patch1_14",
    "bcos_vitc_s": "vitc_s_patch1_14",
}

_FIND_CLASSES = {  # the key of the last layer, whose first dimension is the number of classes
    "resnet": "fc.weight",
    "resnext": "fc.weight",
    "densenet": "classifier.weight",
    "vgg": "classifier.2.weight",
    "vitc": "linear_head.linear.weight",
}


def _rename(key: str) -> str:
    key = re.sub(r"^0\.", "", key)  # ViT: Sequential(model, logit layer)
    key = key.replace(".linear.weight", ".weight") if key.endswith(".linear.weight") else key
    return key.replace("to_patch_embedding.rearrage", "to_patch_embedding.rearrange")


def from_bcos(name: str, state_dict: dict[str, torch.Tensor], **overrides) -> nn.Module:
    """Build ``name`` and load a ``bcos``-package state dict into it.

    Parameters
    ----------
    name:
        One of :data:`BCOS_NAMES` (ours, e.g. ``"bcos_resnet50"``) or the ``bcos`` entrypoint
        name (e.g. ``"resnet50"``).
    state_dict:
        The ``bcos`` model's ``state_dict()`` (e.g. from ``torch.load(url, weights_only=True)``).
    **overrides:
        Further ``create_model`` arguments; ``num_classes`` is read from the weights.

    Returns
    -------
    nn.Module
        The alignnet model in eval mode; it takes 3-channel images in [0, 1] (the ``bcos``
        models take the 6-channel encoding) and gives the same logits.
    """
    reverse = {v: k for k, v in BCOS_NAMES.items()}
    name = reverse.get(name, name)
    if name not in BCOS_NAMES:
        model_entrypoint(name)  # unknown names: error with close matches
        raise ValueError(f"{name!r} has no counterpart in the bcos package; convertible: {sorted(BCOS_NAMES)}")
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise TypeError("state_dict must be a dict of tensors (a model's state_dict())")
    state = {_rename(k): v for k, v in state_dict.items()}
    family = next(f for f in _FIND_CLASSES if name.startswith(f"bcos_{f}"))
    head = _FIND_CLASSES[family]
    if head not in state:
        raise ValueError(f"the state dict has no {head!r} (after renaming): is it a bcos {BCOS_NAMES[name]}?")
    overrides.setdefault("num_classes", int(state[head].shape[0]))
    model = create_model(name, **overrides)
    # the bcos package keeps the logit bias in its config, not in the state dict
    state.setdefault("logit_layer.bias", model.logit_layer.bias.detach().clone())
    load_weights(model, state, source=f"the bcos {BCOS_NAMES[name]} state dict")
    return model.eval()
