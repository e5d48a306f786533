"""What the commands share: the ``--model``/``--resize``/``--device`` arguments, reading image files
for a model, class names for printing, and the no-silent-overwrite rule.

Model resolution (:func:`alignnet.models.resolve_model`) and image preparation
(:func:`alignnet.data.fit_to_model`) are library functions; this module only adapts them to argparse.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from torch import Tensor, nn

from ..data import RESIZE_POLICIES, fit_to_model
from ..errors import InputError
from ..models.resolve import DEFAULT_MODEL
from ..pretrained import get_weights, list_pretrained

__all__ = [
    "MODEL_HELP",
    "RESIZE_HELP",
    "add_model_arguments",
    "check_new_files",
    "class_name",
    "load_images",
]

RESIZE_HELP = (
    "how images are fitted to the model's input: 'crop' (default) resizes the shorter side (to 256 for the "
    "224-pixel ImageNet models, else to the input size) and centre-crops; 'stretch' resizes to exactly the "
    "input size ignoring the aspect ratio; 'none' keeps each image's own size (convolutional models accept any "
    "size). Images of any mode (grey, RGBA over white, palette, 16-bit) become RGB in [0, 1] first; for the "
    "Fashion-MNIST models they are made grey, a light background is inverted and the item is padded as in "
    "Fashion-MNIST"
)
_SHIPPED = ", ".join(n for n in list_pretrained() if get_weights(n).file is not None)
MODEL_HELP = (
    f"pretrained weights name (default {DEFAULT_MODEL}; shipped: {_SHIPPED}; ImageNet: e.g. "
    "bcos_resnet50, downloaded once and cached; list: 'alignnet models --pretrained'), a .safetensors file "
    "written by alignnet.save_model, or an architecture name (random weights, with a warning: 'alignnet models')"
)


def add_model_arguments(parser: argparse.ArgumentParser, device: str = "cpu") -> None:
    """``--model``, ``--resize``, ``--device`` as every explaining command has them."""
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME_OR_PATH", help=MODEL_HELP)
    parser.add_argument("--resize", choices=RESIZE_POLICIES, default="crop", help=RESIZE_HELP)
    parser.add_argument("--device", default=device, help=f"torch device to run on (default: {device})")


def class_name(model: nn.Module, index: int) -> str:
    """Human-readable name of class ``index`` (``class_names`` attribute if the model has one)."""
    names = getattr(model, "class_names", None)
    if names is not None and 0 <= index < len(names):
        return f"{names[index]} ({index})"
    return f"class {index}"


def load_images(paths: Sequence[str | os.PathLike], model: nn.Module, policy: str = "crop") -> list[Tensor]:
    """Read image files as the model's input: a list of ``(3, H, W)`` tensors in [0, 1].

    Every unreadable path is listed in one ``ValueError``.
    """
    if not paths:
        raise InputError("no image given")
    out, problems = [], []
    for p in paths:
        try:
            out.append(fit_to_model(model, p, policy))
        except (FileNotFoundError, ValueError) as exc:
            problems.append(str(exc))
    if problems:
        raise InputError(f"{len(problems)} of {len(paths)} images could not be read: " + "; ".join(problems))
    return out


def check_new_files(paths: Iterable[Path], force: bool) -> None:
    """Raise ``FileExistsError`` naming the files that exist, unless ``force``."""
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not force:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise FileExistsError(f"would overwrite {shown}; pass --force to overwrite or choose another --out")
