"""One way to prepare an image for a model, from the model's :class:`~alignnet.models.InputSpec`.

``alignnet explain``/``compare``/``video``, the web explorer and the demo all call
:func:`fit_to_model`, so one image file gives one input (and one set of logits) everywhere.

Resize policies (``resize``):

- ``"crop"`` (default): the shorter side is resized to ``spec.resize`` (256 for the 224-pixel ImageNet
  models) or to the input size, then a centre crop of the input size is taken (the papers' evaluation
  transform);
- ``"stretch"``: resized to exactly the input size, ignoring the aspect ratio;
- ``"none"``: the image keeps its size (convolutional models accept any size).

Models with ``spec.style == "fashion_mnist"`` (the shipped Fashion-MNIST models) expect grey items,
light on a black background, 28 pixels zero-padded to 32: images are made grey, a light background (a
border brighter than 0.5 on average) is inverted, the item is fitted to ``size - 4`` by the policy and
zero-padded by 2 pixels; an image that already has the inner size (a Fashion-MNIST image) is only padded,
one that has the full size is only made grey (and inverted if its background is light).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

__all__ = ["RESIZE_POLICIES", "fit_to_model", "fit_to_spec", "input_spec_of"]

RESIZE_POLICIES = ("crop", "stretch", "none")


def input_spec_of(model: nn.Module):
    """The model's :class:`~alignnet.models.InputSpec`, or a 3-channel RGB spec at 224 if it has none."""
    from ..models import InputSpec

    spec = getattr(model, "input_spec", None)
    return spec if isinstance(spec, InputSpec) else InputSpec(size=(224, 224), resize=256)


def _as_tensor(image: str | os.PathLike | Image.Image | Tensor) -> Tensor:
    from .transforms import load_image, pil_to_tensor

    if isinstance(image, (str, os.PathLike, Path)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return pil_to_tensor(image)
    if not isinstance(image, Tensor):
        raise TypeError(f"image must be a path, a PIL image or a tensor, got {type(image).__name__}")
    if image.dim() not in (3, 4) or image.shape[-3] not in (1, 3):
        raise ValueError(f"image tensors must be (C, H, W) or (N, C, H, W) with C = 1 or 3, got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise ValueError(f"image tensors must be floating point in [0, 1], got {image.dtype}")
    if not bool(torch.isfinite(image).all()):
        raise ValueError("the image contains NaN or infinite values")
    if image.shape[-3] == 1:
        image = image.expand(*image.shape[:-3], 3, *image.shape[-2:])
    return image


def _fit(x: Tensor, size: tuple[int, int], resize_to: int | None, policy: str) -> Tensor:
    from torchvision.transforms.v2 import functional as TF

    if policy == "none" or tuple(x.shape[-2:]) == tuple(size):
        return x
    if policy == "stretch":
        return TF.resize(x, list(size), antialias=True).clamp(0, 1)
    if resize_to is None:  # shorter side so that the crop fills the size
        scale = max(size[0] / x.shape[-2], size[1] / x.shape[-1])
    else:
        scale = resize_to / min(x.shape[-2], x.shape[-1])
    new = [max(size[0], round(x.shape[-2] * scale)), max(size[1], round(x.shape[-1] * scale))]
    return TF.center_crop(TF.resize(x, new, antialias=True), list(size)).clamp(0, 1)


def fit_to_spec(image: Tensor, spec, resize: str = "crop", notes: dict | None = None) -> Tensor:
    """:func:`fit_to_model` given the input spec instead of the model."""
    if resize not in RESIZE_POLICIES:
        raise ValueError(f"resize policy must be one of {', '.join(RESIZE_POLICIES)}, got {resize!r}")
    x = _as_tensor(image)
    if notes is not None:
        notes["original_size"] = [int(x.shape[-2]), int(x.shape[-1])]
    if spec.style == "fashion_mnist":
        inner = (spec.size[0] - 4, spec.size[1] - 4)
        grey = x.mean(-3, keepdim=True)
        full = tuple(grey.shape[-2:]) == tuple(spec.size)  # already padded (e.g. the embedded test images)
        if not full and tuple(grey.shape[-2:]) != inner:  # Fashion-MNIST-sized images stay exactly as they are
            grey = _fit(grey, inner, None, resize)
        edges = [grey[..., 0, :], grey[..., -1, :], grey[..., :, 0], grey[..., :, -1]]
        border = torch.cat([e.flatten(-2) for e in edges], -1).mean(-1)  # one value per image
        invert = (border > 0.5).reshape(*grey.shape[:-3], 1, 1, 1)
        if notes is not None:
            notes["inverted"] = bool(invert.any())
        grey = torch.where(invert, 1 - grey, grey)
        out = grey if full else F.pad(grey, (2, 2, 2, 2))
        out = out.expand(*out.shape[:-3], 3, *out.shape[-2:])
    else:
        out = _fit(x, spec.size, spec.resize, resize)
    return out.contiguous()


def fit_to_model(
    model: nn.Module, image: str | os.PathLike | Image.Image | Tensor, resize: str = "crop", notes: dict | None = None
) -> Tensor:
    """Prepare ``image`` as ``model``'s input (module docstring): a float ``(3, H, W)`` tensor in [0, 1].

    ``image``: a file path, a PIL image, or a float tensor ``(C, H, W)`` / ``(N, C, H, W)`` in [0, 1]
    (the batch dimension is kept). ``notes``: a dict to receive what was done (original size, inversion).
    Raises ``FileNotFoundError``/``ValueError`` (``CorruptImageError``) for unreadable files and bad tensors.
    """
    return fit_to_spec(image, input_spec_of(model), resize, notes)
