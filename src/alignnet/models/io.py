"""Save and load models as safetensors files with their name and constructor arguments.

The weights are plain tensors (no pickle): a file can never run code when loaded. The header
metadata holds ``alignnet.model`` (registry name), ``alignnet.args`` (JSON constructor
arguments) and ``alignnet.version``, so :func:`load_model` rebuilds the model with no other input.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from ._registry import create_model

__all__ = ["save_model", "load_model", "load_weights"]

_NAME, _ARGS, _VERSION = "alignnet.model", "alignnet.args", "alignnet.version"
_CLASSES, _SPEC = "alignnet.class_names", "alignnet.input_spec"


def save_model(model: nn.Module, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write ``model``'s state dict and its ``model_name``/``model_args`` to a safetensors file.

    The model must come from :func:`alignnet.create_model` (or :func:`load_model`), which sets
    those attributes. Returns the path written.
    """
    from safetensors.torch import save_file

    from .._version import __version__

    name, args = getattr(model, "model_name", None), getattr(model, "model_args", None)
    if not isinstance(name, str) or not isinstance(args, dict):
        raise ValueError(
            "save_model needs a model built by alignnet.create_model (it has no model_name/model_args); "
            "for other modules use safetensors.torch.save_file(model.state_dict(), path)"
        )
    if name == "bcosified" and not isinstance(args.get("source"), dict):
        raise ValueError(
            "this B-cosified model does not know its source architecture (not a torchvision builder or an "
            "alignnet model), so load_model could not rebuild it; save its state dict with safetensors instead"
        )
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {_NAME: name, _ARGS: json.dumps(args, sort_keys=True), _VERSION: __version__, "format": "pt"}
    # what a user of the file needs besides the weights: class names and how to prepare images
    names = getattr(model, "class_names", None)
    if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
        metadata[_CLASSES] = json.dumps(list(names))
    spec = getattr(model, "input_spec", None)
    if hasattr(spec, "to_dict"):
        metadata[_SPEC] = json.dumps(spec.to_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)
    return path


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable safetensors file (corrupt or another format): {exc}") from None
    return metadata, tensors


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str = "the file") -> nn.Module:
    """Copy ``state`` into ``model`` after checking names and shapes.

    Raises ``ValueError`` naming the first missing, unexpected or mismatched tensor with its shape.
    """
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise ValueError(f"{source} lacks tensor {key!r} of shape {tuple(value.shape)}: wrong architecture?")
        if state[key].shape != value.shape:
            raise ValueError(
                f"tensor {key!r} has shape {tuple(state[key].shape)} in {source} but "
                f"{tuple(value.shape)} in the model: wrong architecture or arguments?"
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise ValueError(
            f"{source} has tensor {extra[0]!r} of shape {tuple(state[extra[0]].shape)} that the model lacks "
            f"({len(extra)} unexpected in all): wrong architecture?"
        )
    model.load_state_dict(state, strict=True)
    return model


def load_model(path: str | os.PathLike) -> nn.Module:
    """Rebuild a model saved by :func:`save_model`: architecture from the metadata, then weights.

    Returns the model in eval mode. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` for a corrupt file, missing metadata, an unknown model name or weights that do
    not fit the architecture.
    """
    path = Path(path)
    metadata, state = _read(path)
    if _NAME not in metadata or _ARGS not in metadata:
        raise ValueError(
            f"{path} is a safetensors file without alignnet metadata ({_NAME!r}, {_ARGS!r}); "
            "build the model with create_model and load the tensors with alignnet.models.io.load_weights"
        )
    try:
        args = json.loads(metadata[_ARGS])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: the metadata {_ARGS!r} is not valid JSON: {exc}") from None
    if not isinstance(args, dict):
        raise ValueError(f"{path}: the metadata {_ARGS!r} must be a JSON object, got {type(args).__name__}")
    if metadata[_NAME] == "bcosified":  # alignnet.bcosify's output: rebuilt from its recorded recipe
        from ..bcosification import from_recipe

        model = from_recipe(args)
    else:
        model = create_model(metadata[_NAME], **args)
    load_weights(model, state, source=str(path))
    _restore_extras(model, metadata, path)
    return model.eval()


def _restore_extras(model: nn.Module, metadata: dict[str, str], path: Path) -> None:
    """``class_names`` and ``input_spec`` saved by :func:`save_model` (files of older versions lack them)."""
    from ._registry import InputSpec

    try:
        if _CLASSES in metadata:
            model.class_names = tuple(json.loads(metadata[_CLASSES]))
        if _SPEC in metadata:
            model.input_spec = InputSpec.from_dict(json.loads(metadata[_SPEC]))
    except (json.JSONDecodeError, TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{path}: unreadable class names or input spec in the metadata: {exc}") from None
