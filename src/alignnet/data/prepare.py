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

Limits (checked from the image's size *before* anything is decoded, converted or resized, so a tiny file
cannot make preparation allocate gigabytes; both are module attributes read at call time, raise them if you
must):

- :data:`MAX_ASPECT_RATIO` (100): the long side may be at most 100 times the short side, whatever the
  policy. Photos and panoramas are far inside it (a 360-degree panorama is about 10:1), while a 200000x2
  strip would make ``crop`` resize it to 25,600,000x256 pixels (78.6 GB as float32) for a 224-pixel model.
- :data:`MAX_PREPARED_PIXELS` (2**25, about 33.6 megapixels, 403 MB as float32 RGB): the largest image
  preparation produces per input: the resized image before ``crop``'s centre crop, ``stretch``'s output, or
  the image kept as it is by ``none``.

A refused image raises :class:`ImageTooLargeError` (a ``ValueError``) saying which limit and by how much.
Files are also held to Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``, about 89.5
megapixels by default): a larger file is refused with an error naming it instead of a Pillow warning or
``DecompressionBombError`` traceback.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ..errors import InputError

__all__ = [
    "MAX_ASPECT_RATIO",
    "MAX_PREPARED_PIXELS",
    "RESIZE_POLICIES",
    "ImageTooLargeError",
    "check_fit",
    "fit_to_model",
    "fit_to_spec",
    "input_spec_of",
]

RESIZE_POLICIES = ("crop", "stretch", "none")
MAX_ASPECT_RATIO = 100
MAX_PREPARED_PIXELS = 2**25


class ImageTooLargeError(InputError):
    """An image that preparation refuses because of its size or shape (module docstring, "Limits")."""


def input_spec_of(model: nn.Module):
    """The model's :class:`~alignnet.models.InputSpec`, or a 3-channel RGB spec at 224 if it has none."""
    from ..models import InputSpec

    spec = getattr(model, "input_spec", None)
    return spec if isinstance(spec, InputSpec) else InputSpec(size=(224, 224), resize=256)


def _prepared_size(h: int, w: int, size: tuple[int, int], resize_to: int | None, policy: str) -> tuple[int, int]:
    """The ``(H, W)`` that :func:`_fit` resizes an ``h x w`` image to (for ``crop``: before the centre crop)."""
    if policy == "none" or (h, w) == tuple(size):
        return h, w
    if policy == "stretch":
        return int(size[0]), int(size[1])
    if resize_to is None:  # shorter side so that the crop fills the size
        scale = max(size[0] / h, size[1] / w)
    else:
        scale = resize_to / min(h, w)
    return max(size[0], round(h * scale)), max(size[1], round(w * scale))


def _fit_target(spec, h: int, w: int) -> tuple[tuple[int, int], int | None] | None:
    """``(size, resize_to)`` that :func:`fit_to_spec` fits an ``h x w`` image to, or None if it is kept as is."""
    if spec.style == "fashion_mnist":
        inner = (spec.size[0] - 4, spec.size[1] - 4)
        if (h, w) in (tuple(spec.size), inner):  # already Fashion-MNIST-sized: only padded / made grey
            return None
        return inner, None
    return tuple(spec.size), spec.resize


def check_fit(height: int, width: int, spec, resize: str = "crop", name: str | None = None) -> None:
    """Raise :class:`ImageTooLargeError` if :func:`fit_to_spec` would refuse a ``height x width`` image.

    The limits (:data:`MAX_ASPECT_RATIO`, :data:`MAX_PREPARED_PIXELS`) depend only on the size, so callers
    holding an undecoded file (the web server) can refuse it before decoding; ``name`` (a file name) is put
    in the message.
    """
    what = "the image" if name is None else f"image {name}"
    if height < 1 or width < 1:
        raise InputError(f"{what} is empty ({width}x{height} pixels)")
    target = _fit_target(spec, height, width)
    if target is None:
        return
    size, resize_to = target
    if (height, width) == tuple(size):
        return
    head = f"cannot prepare {what} ({width}x{height} pixels, width x height) with resize {resize!r}"
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        shown = f"{ratio:.1f}".removesuffix(".0")  # 100.5:1 must not read as 100:1
        raise ImageTooLargeError(
            f"{head}: its aspect ratio {shown}:1 is over the limit of {MAX_ASPECT_RATIO}:1 "
            "(alignnet.data.prepare.MAX_ASPECT_RATIO); crop it to the part to explain first"
        )
    h, w = _prepared_size(height, width, size, resize_to, resize)
    if h * w > MAX_PREPARED_PIXELS:
        done = {
            "crop": f"it would be resized to {w}x{h} before the centre crop",
            "stretch": f"the model input would be {w}x{h}",
            "none": "the image would be kept at that size",
        }[resize]
        hint = (
            "make the image smaller first" if resize != "none" else "use resize 'crop' or 'stretch', or make it smaller"
        )
        raise ImageTooLargeError(
            f"{head}: {done}, {h * w / 1e6:.1f} megapixels, over the limit of {MAX_PREPARED_PIXELS / 1e6:.1f} "
            f"megapixels (alignnet.data.prepare.MAX_PREPARED_PIXELS); {hint}"
        )


def _read_file(path: str | os.PathLike, check) -> Tensor:
    """Read an image file, checking its size with ``check(height, width, name)`` before decoding it.

    This is the one place preparation reads files (the CLI commands and :class:`~alignnet.data.ImageNetVal`
    come through here). Pillow refuses images above ``PIL.Image.MAX_IMAGE_PIXELS`` only with a warning and
    above twice that with ``DecompressionBombError`` (neither a ``ValueError``); both become an
    :class:`ImageTooLargeError` naming the file, so the CLI prints one line instead of a traceback.
    """
    from PIL import UnidentifiedImageError

    from .transforms import CorruptImageError, load_image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        # catch_warnings is process-global (not thread-safe before Python 3.14): at worst a concurrent
        # reader sees this one filter, which only turns the same Pillow warning into an error
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                width, height = im.size
            check(height, width, str(path))
            return load_image(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(
            f"cannot read image {path}: it is too large to decode safely ({exc}); "
            "if you trust the file, raise PIL.Image.MAX_IMAGE_PIXELS"
        ) from None
    except (UnidentifiedImageError, SyntaxError) as exc:  # load_image's own errors are already CorruptImageError
        raise CorruptImageError(path, str(exc) or type(exc).__name__) from None
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise CorruptImageError(path, str(exc) or type(exc).__name__) from None


def _as_tensor(image: str | os.PathLike | Image.Image | Tensor, check) -> Tensor:
    from .transforms import pil_to_tensor

    if isinstance(image, (str, os.PathLike, Path)):
        return _read_file(image, check)
    if isinstance(image, Image.Image):
        check(image.height, image.width)  # before converting to float (12 bytes a pixel)
        return pil_to_tensor(image)
    if not isinstance(image, Tensor):
        raise TypeError(f"image must be a path, a PIL image or a tensor, got {type(image).__name__}")
    if image.dim() not in (3, 4) or image.shape[-3] not in (1, 3):
        raise InputError(f"image tensors must be (C, H, W) or (N, C, H, W) with C = 1 or 3, got {tuple(image.shape)}")
    if not image.is_floating_point():
        raise InputError(f"image tensors must be floating point in [0, 1], got {image.dtype}")
    check(int(image.shape[-2]), int(image.shape[-1]))
    # min and max propagate NaN: no image-sized temporary (isfinite(image).all() holds ~6 bytes a value)
    low, high = torch.aminmax(image) if image.numel() else (image.new_zeros(()), image.new_zeros(()))
    if not bool(torch.isfinite(low) & torch.isfinite(high)):
        raise InputError("the image contains NaN or infinite values")
    if image.shape[-3] == 1:
        image = image.expand(*image.shape[:-3], 3, *image.shape[-2:])
    return image


def _fit(x: Tensor, size: tuple[int, int], resize_to: int | None, policy: str) -> Tensor:
    from torchvision.transforms.v2 import functional as TF

    if policy == "none" or tuple(x.shape[-2:]) == tuple(size):
        return x
    if policy == "stretch":
        return TF.resize(x, list(size), antialias=True).clamp(0, 1)
    new = list(_prepared_size(int(x.shape[-2]), int(x.shape[-1]), size, resize_to, policy))
    return TF.center_crop(TF.resize(x, new, antialias=True), list(size)).clamp(0, 1)


def fit_to_spec(image: Tensor, spec, resize: str = "crop", notes: dict | None = None) -> Tensor:
    """:func:`fit_to_model` given the input spec instead of the model."""
    if resize not in RESIZE_POLICIES:
        raise InputError(f"resize policy must be one of {', '.join(RESIZE_POLICIES)}, got {resize!r}")

    def check(height: int, width: int, name: str | None = None) -> None:
        check_fit(height, width, spec, resize, name)

    x = _as_tensor(image, check)
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
    Raises ``FileNotFoundError``/``ValueError`` (``CorruptImageError``) for unreadable files and bad tensors,
    and :class:`ImageTooLargeError` (a ``ValueError``) for images over the limits (module docstring).
    """
    return fit_to_spec(image, input_spec_of(model), resize, notes)
