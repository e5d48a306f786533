"""alignnet: vision models that explain themselves (B-cos networks and CoDA-Nets).

Every model is an input-dependent linear map ``logits = W(x) x + b``; :func:`explain` returns
``W(x)`` and the exact per-pixel contributions in one backward pass.
"""

from ._version import __version__
from .explanation import Explanation, colour_explanation, explain, plot_contribution_map
from .layers import explanation_mode
from .models import create_model, list_models, load_model, save_model

__all__ = [
    "Explanation",
    "__version__",
    "colour_explanation",
    "create_model",
    "explain",
    "explanation_mode",
    "list_models",
    "load_model",
    "plot_contribution_map",
    "save_model",
]
