"""B-cosification (Arya et al., NeurIPS 2024): turn a trained CNN or ViT into a B-cos network.

``bcosify(model, num_classes)`` returns a new, dynamic-linear network; each recipe step is a function
of :mod:`alignnet.bcosification.steps`; :func:`adaptive_clip_grad_` is the fine-tuning recipe's
gradient clipping. docs/bcosification.md.
"""

from ._layers import (
    BcosifiedAttention,
    BcosifiedConv2d,
    BcosifiedLinear,
    DetachableGate,
    DetachableLayerNorm,
    InputEncoding,
    TokenPool,
)
from .convert import BCOSIFIED_NAME, BcosifiedNetwork, bcosify, build_source, from_recipe

__all__ = [
    "BCOSIFIED_NAME",
    "BcosifiedAttention",
    "BcosifiedConv2d",
    "BcosifiedLinear",
    "BcosifiedNetwork",
    "DetachableGate",
    "DetachableLayerNorm",
    "InputEncoding",
    "TokenPool",
    "bcosify",
    "build_source",
    "from_recipe",
]
