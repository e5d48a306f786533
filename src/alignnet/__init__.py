"""alignnet: vision models that explain themselves (B-cos networks and CoDA-Nets).

Every model is an input-dependent linear map ``logits = W(x) x + b``; :func:`explain` returns
``W(x)`` and the exact per-pixel contributions in one backward pass.
"""

from ._version import __version__
from .bcosification import bcosify
from .explanation import Explanation, colour_explanation, explain, plot_contribution_map
from .layers import explanation_mode
from .models import create_model, freeze, list_models, load_model, save_model
from .pretrained import list_pretrained, load_pretrained, register_weights

__all__ = [
    "Explanation",
    "__version__",
    "bcosify",
    "colour_explanation",
    "create_model",
    "explain",
    "explanation_mode",
    "finetune",
    "freeze",
    "list_models",
    "list_pretrained",
    "load_pretrained",
    "load_model",
    "plot_contribution_map",
    "register_weights",
    "save_model",
]


def finetune(source, data_dir, output, **kwargs):
    """Fine-tune ``source`` (a pretrained-weights name or a ``.safetensors`` model) on the image folder
    ``data_dir`` with new classes; see :func:`alignnet.train.finetune.finetune` (needs the ``train`` extra:
    Lightning is imported only when this is called)."""
    from .train.finetune import finetune as _finetune

    return _finetune(source, data_dir, output, **kwargs)
