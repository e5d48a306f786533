"""The model zoo: the papers' architectures behind one registry, with safe save/load.

``create_model(name, **kw)``, ``list_models(pattern)``, ``@register_model``;
``save_model``/``load_model`` (safetensors + metadata), ``from_bcos`` (convert ``bcos`` checkpoints) and ``freeze``
(an inference snapshot with the weight rows normalised and batch norms folded).
"""

from ._registry import InputSpec, create_model, list_models, model_entrypoint, register_model
from .convert import from_bcos
from .frozen import freeze, is_frozen
from .io import load_model, save_model
from .resolve import resolve_model

__all__ = [
    "InputSpec",
    "create_model",
    "freeze",
    "from_bcos",
    "is_frozen",
    "list_models",
    "load_model",
    "model_entrypoint",
    "register_model",
    "resolve_model",
    "save_model",
]
