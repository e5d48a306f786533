"""One way to turn a model argument into a model: what ``--model`` means in every command, the web
explorer, the demo, video and evaluation.

A *spec* is, in this order of precedence:

1. a pretrained weights name (``alignnet.list_pretrained()``: the shipped ``fmnist_bcos``, ``fmnist_coda``,
   or an official ImageNet entry such as ``bcos_resnet50``, downloaded once and cached);
2. a ``.safetensors`` file written by :func:`alignnet.save_model` (or any existing path);
3. a registered architecture (``alignnet.list_models()``): random weights, with a warning.
"""

from __future__ import annotations

import difflib
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError

__all__ = ["DEFAULT_MODEL", "resolve_model", "is_trained"]

DEFAULT_MODEL = "fmnist_bcos"


def resolve_model(
    spec: str | os.PathLike | None = None, device: str | torch.device = "cpu", progress: bool = True
) -> nn.Module:
    """The model named by ``spec`` (module docstring), in eval mode on ``device``.

    It carries ``source`` (where it came from) and, when known, ``class_names`` and ``input_spec``.
    Raises ``ValueError`` with close matches for an unknown name, ``FileNotFoundError`` for a missing
    file, and :class:`alignnet.pretrained.WeightsDownloadError` when weights cannot be fetched.
    """
    from ..pretrained import list_pretrained, load_pretrained
    from ._registry import create_model, list_models
    from .io import load_model

    spec = DEFAULT_MODEL if spec is None else spec
    text = os.fspath(spec)
    if text in list_pretrained():
        model = load_pretrained(text, progress=progress)
    elif os.path.exists(text) or Path(text).suffix in (".safetensors", ".pt", ".pth"):
        if Path(text).suffix in (".pt", ".pth"):
            raise InputError(
                f"{text}: pickled checkpoints are not loaded directly; register it with "
                "alignnet.register_weights(name, arch, file=..., sha256=...) or save it with alignnet.save_model"
            )
        model = load_model(text)
        model.source = f"file {text}"
    elif text in list_models():
        warnings.warn(
            f"{text} is an architecture without pretrained weights here: its weights are random, so its "
            "explanations show an untrained network (see alignnet.list_pretrained() for trained ones)",
            RuntimeWarning,
            stacklevel=2,
        )
        model = create_model(text)
        model.source = f"{text} (untrained, random weights)"
        model.untrained = True
    else:
        close = difflib.get_close_matches(text, list_pretrained() + list_models(), n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(
            f"model {text!r} is neither pretrained weights (alignnet models --pretrained), an existing file, "
            f"nor a registered architecture (alignnet models){hint}"
        )
    try:
        return model.to(device).eval()
    except (RuntimeError, AssertionError) as exc:
        raise InputError(f"cannot use device {device!r}: {exc}") from None


def is_trained(model: nn.Module) -> bool:
    """False for a model :func:`resolve_model` built with random weights."""
    return not getattr(model, "untrained", False)
