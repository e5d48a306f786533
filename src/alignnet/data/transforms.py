"""Image transforms for the paper models and a robust image loader.

The models encode their own input (``AddInverse``, docs/algorithms.md#input-encoding), so every transform
here ends in a float tensor in ``[0, 1]`` with **no mean/std normalisation**.

- Fashion-MNIST: ``(28, 28)`` uint8 grey -> zero-pad 2 pixels per side to ``32 x 32`` -> grey
  replicated to 3 channels -> float ``/ 255``: ``(3, 32, 32)`` in ``[0, 1]``.
- 32x32 training augmentation (CIFAR-10, Fashion-MNIST): random crop with zero padding 4 and
  horizontal flip (B-cos v1 / CoDA-Nets recipes).
- 224 training augmentation (ImageNet-style): random resized crop and horizontal flip;
  evaluation: resize 256 (shorter side) and centre crop 224.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms import v2

from ..errors import InputError

__all__ = [
    "CorruptImageError",
    "augment_32",
    "eval_transform",
    "fashion_mnist_to_input",
    "load_image",
    "pil_to_tensor",
    "train_transform",
]


class CorruptImageError(InputError):
    """An image file that cannot be read; the message names the file."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        super().__init__(f"cannot read image {self.path}: {reason}")


def fashion_mnist_to_input(images: Tensor | np.ndarray) -> Tensor:
    """Fashion-MNIST pixels to the paper models' input.

    Parameters
    ----------
    images:
        uint8 ``(28, 28)`` or ``(N, 28, 28)`` (any ``H, W`` works; padding is 2 per side).

    Returns
    -------
    Tensor
        float32 ``(3, 32, 32)`` or ``(N, 3, 32, 32)`` in ``[0, 1]``: zero-padded by 2 pixels per side
        (Fashion-MNIST's background is 0) and the grey channel replicated to RGB.
    """
    x = torch.as_tensor(np.asarray(images))
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 pixels, got {x.dtype}")
    if x.dim() not in (2, 3):
        raise InputError(f"expected (H, W) or (N, H, W) grey images, got shape {tuple(x.shape)}")
    x = x.float().div_(255.0)
    x = torch.nn.functional.pad(x, (2, 2, 2, 2))
    return x.unsqueeze(-3).expand(*x.shape[:-2], 3, *x.shape[-2:]).contiguous()


def _flip(hflip: bool) -> list:
    return [v2.RandomHorizontalFlip()] if hflip else []


def augment_32(padding: int = 4, hflip: bool = True) -> v2.Compose:
    """Random crop (zero padding ``padding``) and horizontal flip (unless ``hflip=False``: digits, text) for
    ``(3, 32, 32)`` float tensors."""
    return v2.Compose([v2.RandomCrop(32, padding=padding), *_flip(hflip)])


def train_transform(image_size: int = 224, hflip: bool = True) -> v2.Compose:
    """Training transform for PIL images: random crop + flip (32 px) or random resized crop + flip
    (no flip with ``hflip=False``)."""
    if image_size <= 64:
        return v2.Compose([pil_to_tensor, v2.RandomCrop(image_size, padding=4), *_flip(hflip)])
    return v2.Compose([pil_to_tensor, v2.RandomResizedCrop(image_size, antialias=True), *_flip(hflip)])


def eval_transform(image_size: int = 224) -> v2.Compose:
    """Evaluation transform for PIL images: as is (32 px) or resize ``size*8/7`` + centre crop."""
    if image_size <= 64:
        return v2.Compose([pil_to_tensor, v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)])
    return v2.Compose([pil_to_tensor, v2.Resize(round(image_size * 8 / 7), antialias=True), v2.CenterCrop(image_size)])


def pil_to_tensor(image: Image.Image, background: float = 1.0) -> Tensor:
    """Any PIL image to a float32 ``(3, H, W)`` tensor in ``[0, 1]``.

    Grey, palette, CMYK and 16-bit/32-bit integer or float images are converted; transparency
    (RGBA, LA, palette with transparency) is composited over a uniform ``background`` grey level
    (white by default).
    """
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        grey = torch.from_numpy(np.clip(arr / top, 0, 1)).float()
        return grey.unsqueeze(0).expand(3, -1, -1).contiguous()
    if mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        top = 1.0 if arr.max(initial=0) <= 1.0 else (255.0 if arr.max() <= 255 else 65535.0)
        grey = torch.from_numpy(np.clip(arr / top, 0, 1)).float()
        return grey.unsqueeze(0).expand(3, -1, -1).contiguous()
    if mode == "P" or mode == "PA":
        image = image.convert("RGBA")
    elif mode == "LA" or mode == "La":
        image = image.convert("RGBA")
    elif mode == "RGBa":
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        rgba = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
        alpha = rgba[3:]
        return rgba[:3] * alpha + background * (1 - alpha)
    rgb = image.convert("RGB")
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0


def load_image(path: str | os.PathLike, size: int | tuple[int, int] | None = None) -> Tensor:
    """Read an image file as a float32 ``(3, H, W)`` tensor in ``[0, 1]``.

    Handles grey, RGBA (composited over white), palette, CMYK and 16-bit images.

    Parameters
    ----------
    path:
        Image file (anything Pillow reads).
    size:
        ``None`` keeps the size; an int resizes the shorter side then centre-crops a square;
        ``(H, W)`` resizes to exactly that size.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    CorruptImageError
        (a ``ValueError``) the file exists but is not a readable image; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            x = pil_to_tensor(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(path, str(exc) or type(exc).__name__) from None
    if size is not None:
        if isinstance(size, int):
            x = v2.functional.center_crop(v2.functional.resize(x, size, antialias=True), size)
        else:
            x = v2.functional.resize(x, list(size), antialias=True)
        x = x.clamp_(0, 1)
    return x
