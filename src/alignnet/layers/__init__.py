"""Dynamic-linear layers: B-cos, CoDA (DAU), uncentered norms, encoding, pooling, logit layer."""

from ._mode import DynamicLinear, eval_mode, explanation_mode, non_detachable_modules
from .bcos import BcosConv2d, BcosLinear, patch_norms, v1_scale
from .coda import DAUConv2d
from .encoding import AddInverse, LogitLayer
from .norms import BatchNormUncentered2d, LayerNormUncentered, LayerNormUncentered2d
from .pooling import AvgPool2d, GlobalAvgPool2d, GlobalSumPool2d

__all__ = [
    "AddInverse",
    "AvgPool2d",
    "BatchNormUncentered2d",
    "BcosConv2d",
    "BcosLinear",
    "DAUConv2d",
    "DynamicLinear",
    "GlobalAvgPool2d",
    "GlobalSumPool2d",
    "LayerNormUncentered",
    "LayerNormUncentered2d",
    "LogitLayer",
    "eval_mode",
    "explanation_mode",
    "non_detachable_modules",
    "patch_norms",
    "v1_scale",
]
