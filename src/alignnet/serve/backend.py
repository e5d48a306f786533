"""The web explorer's work, free of any web framework: models, image decoding, explanations.

Everything here is plain Python/torch so it can be tested and benchmarked without a server.

- :class:`ServedModel` holds ``replicas`` deep copies of one model in a queue. A request borrows
  one copy for its whole computation: :func:`alignnet.explain` and the attribution methods attach
  hooks and flip explanation-mode flags on the model they run, so two threads must never share a
  copy, and with one copy per worker thread concurrent users only wait for the CPU, not for each
  other's lock.
- :func:`decode_image` turns untrusted upload bytes into a ``(3, H, W)`` tensor: a fixed list of
  Pillow decoders, a pixel-count limit checked *before* decoding (decompression bombs), and no
  file is ever written.
- :func:`load_upload` is what the server runs per upload: the image's size is read from its header and
  checked against :data:`MAX_PIXELS` and the preparation limits (:func:`alignnet.data.prepare.check_fit`:
  a 200000x2 strip is refused before it is decoded), then it is decoded and prepared while holding its
  pixel count from a :class:`PixelBudget`, so the decodes in progress together hold at most
  :data:`MAX_PIXELS` pixels (about 30 bytes each at the peak of decoding and conversion to float: 1.2 GB)
  however many users upload at once. Explanations are bounded by the model copies (:class:`ServedModel`).
"""

from __future__ import annotations

import base64
import io
import os
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..data import fit_to_model, input_spec_of
from ..data.prepare import ImageTooLargeError, check_fit
from ..errors import InputError

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_METHODS",
    "MAX_METHODS",
    "MAX_PENDING",
    "MAX_PIXELS",
    "MAX_UPLOAD_BYTES",
    "DEFAULT_MODELS",
    "PixelBudget",
    "ServedModel",
    "UploadError",
    "attribute_methods",
    "build_models",
    "decode_image",
    "default_replicas",
    "explain_image",
    "image_size",
    "load_upload",
    "png_bytes",
    "png_data_url",
    "prepare_image",
    "signed_map_rgba",
]

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # 10 MB
MAX_PIXELS = 40_000_000  # refuse to decode larger images (a 10 MB PNG can hold gigapixels)
# requests computed or waiting at once; more get 429 "busy, retry" (below the 40 threads of the
# server's thread pool, which the waiting ones occupy)
MAX_PENDING = 32
# Pillow decoders we accept; anything else (PDF, EPS with Ghostscript, ...) is never tried.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM")
DEFAULT_METHODS = ("gradcam", "intgrad", "occlusion9")
MAX_METHODS = 4
DEFAULT_MODELS = ("fmnist_bcos", "fmnist_coda")


class UploadError(InputError):
    """An upload that cannot be explained; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class PixelBudget:
    """At most ``total`` decoded pixels held at once, handed out first come, first served.

    :meth:`hold` waits while earlier holders leave too few pixels; an image larger than ``total`` waits
    for everything before it to finish, then runs alone. Strict arrival order keeps a large image from
    being overtaken forever by small ones.
    """

    def __init__(self, total: int = MAX_PIXELS) -> None:
        if total < 1:
            raise InputError(f"the pixel budget must be >= 1, got {total}")
        self.total = int(total)
        self.used = 0
        self._cond = threading.Condition()
        self._next = 0  # next ticket to hand out
        self._turn = 0  # ticket allowed to take its pixels now

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        pixels = max(1, min(int(pixels), self.total))
        with self._cond:
            ticket, self._next = self._next, self._next + 1
            while ticket != self._turn or self.used + pixels > self.total:
                self._cond.wait()
            self.used += pixels
            self._turn += 1
            self._cond.notify_all()  # the next ticket may fit too
        try:
            yield
        finally:
            with self._cond:
                self.used -= pixels
                self._cond.notify_all()


@dataclass
class ServedModel:
    """One model offered by the server, as ``replicas`` independent copies.

    Attributes
    ----------
    id: short name used in URLs.
    label: what the page shows (says "untrained" for fallback models).
    classes: class names, ``len == num_classes``.
    size: ``(H, W)`` input size.
    style: the model's input style (``"fashion_mnist"`` or ``"rgb"``, see :class:`alignnet.models.InputSpec`).
    trained: False for a randomly initialised stand-in.
    source: file path or registry name it came from.
    """

    id: str
    label: str
    model: nn.Module
    classes: tuple[str, ...]
    size: tuple[int, int]
    style: str
    trained: bool
    source: str
    replicas: int = 1
    threshold: float | None = None  # a multi-label model's: every label with probability >= it is predicted
    parameters: int | None = None  # the model's own count (a frozen copy has its batch norms folded away)
    _pool: queue.Queue = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise InputError(f"replicas must be >= 1, got {self.replicas}")
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)  # explanations need input gradients only
        self._pool = queue.Queue()
        self._pool.put(self.model)
        for _ in range(self.replicas - 1):
            self._pool.put(_copy(self.model))

    @contextmanager
    def borrow(self) -> Iterator[nn.Module]:
        """A copy of the model for this thread alone (waits while all copies are in use)."""
        model = self._pool.get()
        try:
            yield model
        finally:
            self._pool.put(model)

    def info(self) -> dict:
        return {
            "id": self.id,
            "label": self.label,
            "classes": list(self.classes),
            "size": list(self.size),
            "trained": self.trained,
            "source": self.source,
            "parameters": self.parameters
            if self.parameters is not None
            else sum(p.numel() for p in self.model.parameters()),
            "multilabel": self.threshold is not None,
            "threshold": self.threshold,
        }


def _frozen_for_serving(model: nn.Module, spec) -> nn.Module:
    """The server only runs inference: serve :func:`alignnet.freeze`'s snapshot (same logits and explanations,
    no per-call pass over the weights; 7-13 % faster on a CPU). Should freezing fail, the model is served as it
    is, with a warning: a speed-up is no reason not to start."""
    import warnings

    from ..models import freeze
    from ..models.frozen import spec_example

    try:  # ``spec`` rather than the model's own: a model without one is served at the default size
        return freeze(model, example=spec_example(model, spec))
    except (InputError, RuntimeError) as exc:
        warnings.warn(f"serving the model unfrozen ({exc})", RuntimeWarning, stacklevel=2)
        return model


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def _class_names(model: nn.Module) -> tuple[str, ...]:
    num_classes = _num_classes(model)
    names = getattr(model, "class_names", None)
    if isinstance(names, (list, tuple)) and len(names) == num_classes:
        return tuple(str(n) for n in names)
    return tuple(f"class {i}" for i in range(num_classes))


def _num_classes(model: nn.Module) -> int:
    args = getattr(model, "model_args", None) or {}
    if "num_classes" in args:
        return int(args["num_classes"])
    size = input_spec_of(model).size
    with torch.no_grad():
        return int(model.eval()(torch.zeros(1, 3, *size)).shape[1])


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 2
    while out in taken:
        out, i = f"{name}-{i}", i + 1
    return out


def build_models(specs: Sequence[str] = (), replicas: int = 1, progress: bool = True) -> list[ServedModel]:
    """The models to serve.

    Parameters
    ----------
    specs:
        Each anything :func:`alignnet.models.resolve_model` accepts: pretrained weights names, saved model
        files, or architecture names (an untrained model, labelled so). Empty: the two shipped
        Fashion-MNIST models.
    replicas:
        Copies of each model, i.e. how many requests per model run at the same time.
    """
    import warnings

    from ..models import resolve_model
    from ..models.io import multilabel_threshold
    from ..models.resolve import is_trained

    served: list[ServedModel] = []
    taken: set[str] = set()
    for spec in list(specs) or list(DEFAULT_MODELS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # untrained models are labelled on the page instead
            model = resolve_model(spec, progress=progress)
        trained = is_trained(model)
        name = Path(spec).stem if spec.endswith(".safetensors") or Path(spec).is_file() else spec
        if not trained:
            label = f"{spec} (UNTRAINED, random weights)"
        elif getattr(model, "weights_name", None):
            label = f"{spec} (pretrained)"
        else:
            label = f"{name} ({Path(spec).name})"
        model_id = _unique(name, taken)
        taken.add(model_id)
        spec_in = input_spec_of(model)
        parameters = sum(p.numel() for p in model.parameters())
        served.append(
            ServedModel(
                id=model_id,
                label=label,
                model=_frozen_for_serving(model, spec_in),
                parameters=parameters,
                classes=_class_names(model),
                size=spec_in.size,
                style=spec_in.style,
                trained=trained,
                source=getattr(model, "source", spec),
                replicas=replicas,
                threshold=multilabel_threshold(model),
            )
        )
    return served


@contextmanager
def _upload_errors() -> Iterator[None]:
    """Pillow's and the preparation's errors on untrusted bytes -> :class:`UploadError` with a status."""
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except UploadError:
        raise
    except ImageTooLargeError as exc:
        raise UploadError(str(exc), 413) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UploadError(f"the image is too large to decode safely: {exc}", 413) from None
    except MemoryError:
        raise UploadError("the image is too large to decode", 413) from None
    except UnidentifiedImageError:
        raise UploadError(
            f"this file is not an image we can read (accepted: {', '.join(ALLOWED_FORMATS)})", 415
        ) from None
    except Exception as exc:  # noqa: BLE001
        # Pillow's decoders fail on hostile bytes with many exception types (OSError, SyntaxError,
        # struct.error, IndexError, ZeroDivisionError, ...): any of them means the file is damaged, and the
        # answer must be a 4xx, not a 500
        raise UploadError(f"the image file is damaged or truncated ({type(exc).__name__}: {exc})", 415) from None


def _check_upload(data: bytes, max_bytes: int) -> None:
    if not data:
        raise UploadError("the upload is empty: choose an image file or one of the examples")
    if len(data) > max_bytes:
        raise UploadError(f"the file is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB", 413)


def _open(data: bytes, max_pixels: int):
    """The image's header (nothing decoded yet), refused if it has more than ``max_pixels`` pixels."""
    from PIL import Image

    im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise UploadError(f"the image is {w}x{h} pixels; the limit is {max_pixels / 1e6:.0f} megapixels", 413)
    return im


def image_size(data: bytes, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """``(width, height)`` of upload bytes from the image's header, without decoding it.

    Raises :class:`UploadError` like :func:`decode_image`.
    """
    _check_upload(data, max_bytes)
    with _upload_errors(), _open(data, max_pixels) as im:
        return im.size


# rows converted to float at a time by _to_tensor (about 1 megapixel: ~30 MB of temporaries)
BAND_PIXELS = 2**20


def _to_tensor(im) -> Tensor:
    """:func:`alignnet.data.pil_to_tensor` of a decoded image, band of rows by band of rows.

    The same numbers (every conversion it makes is per pixel), but converting a whole 40-megapixel
    image at once holds about 1.3 GB of temporaries (uint8 copies, the float image divided by 255 into a
    second float image, alpha compositing); by bands only the output (12 bytes a pixel) and one band's
    temporaries. Modes ``I`` and ``F`` are scaled by the whole image's maximum, so they are converted at once.
    """
    from ..data import pil_to_tensor

    width, height = im.size
    if im.mode in ("I", "F") or width * height <= BAND_PIXELS:
        return pil_to_tensor(im)
    out = torch.empty(3, height, width)
    rows = max(1, BAND_PIXELS // width)
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        out[:, top:bottom] = pil_to_tensor(im.crop((0, top, width, bottom)))
    return out


def decode_image(data: bytes, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS) -> Tensor:
    """Decode upload bytes as an image: float32 ``(3, H, W)`` in [0, 1].

    Raises :class:`UploadError` (status 400 / 413 / 415) with a message for the page. Images in the 32-bit
    modes ``I`` and ``F`` (converted at once, about 40 bytes a pixel) may have a quarter of ``max_pixels``.
    """
    _check_upload(data, max_bytes)
    with _upload_errors(), _open(data, max_pixels) as im:
        w, h = im.size
        if im.mode in ("I", "F") and 4 * w * h > max_pixels:
            raise UploadError(
                f"the image is {w}x{h} pixels of 32-bit values; the limit for those is "
                f"{max_pixels / 4e6:.0f} megapixels",
                413,
            )
        im.seek(0)  # first frame of animations
        im.load()
        return _to_tensor(im)


def load_upload(
    data: bytes,
    served: ServedModel,
    budget: PixelBudget | None = None,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> tuple[Tensor, dict]:
    """Upload bytes -> ``served``'s input and the preparation notes (:func:`decode_image` + :func:`prepare_image`).

    The size from the header is checked against ``max_pixels`` and the preparation limits before anything
    is decoded; decoding and preparation then hold the image's pixel count from ``budget`` (if given), so
    the full-size image exists only while its pixels are held. Raises :class:`UploadError`.
    """
    width, height = image_size(data, max_bytes, max_pixels)
    with _upload_errors():
        check_fit(height, width, input_spec_of(served.model), "crop")
    with budget.hold(width * height) if budget is not None else nullcontext():
        image = decode_image(data, max_bytes, max_pixels)
        return prepare_image(image, served)


def prepare_image(image: Tensor, served: ServedModel) -> tuple[Tensor, dict]:
    """Convert a decoded ``(3, H, W)`` upload to ``served``'s input with :func:`alignnet.data.fit_to_model`
    (the same preparation as ``alignnet explain``). Returns the input and what was done (shown on the page)."""
    notes: dict = {}
    try:
        x = fit_to_model(served.model, image, "crop", notes=notes)
    except ImageTooLargeError as exc:  # e.g. a 200000x2 strip: its aspect ratio, with the limit
        raise UploadError(str(exc), 413) from None
    return x, notes


def png_bytes(array: np.ndarray) -> bytes:
    """``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` floats in [0, 1] -> PNG file bytes."""
    from PIL import Image

    a = (np.clip(np.asarray(array, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def png_data_url(array: np.ndarray) -> str:
    """``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` floats in [0, 1] -> ``data:image/png;base64,...``."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(array)).decode("ascii")


def signed_map_rgba(values: Tensor | np.ndarray) -> np.ndarray:
    """A signed ``(H, W)`` map in matplotlib's ``bwr`` colours, 0 white, ``+-max|v|`` red/blue: ``(H, W, 4)``."""
    from matplotlib import colormaps

    v = np.asarray(values.detach().cpu().double() if isinstance(values, Tensor) else values, dtype=np.float64)
    lim = float(np.abs(v).max()) if v.size else 0.0
    lim = lim if lim > 0 and np.isfinite(lim) else 1.0
    return colormaps["bwr"](np.clip(v / lim, -1, 1) * 0.5 + 0.5).astype(np.float32)


def explain_image(served: ServedModel, x: Tensor, target: int | None = None, top: int = 5) -> dict:
    """Predict and explain one model input ``(3, H, W)``.

    Returns a JSON-ready dict: ``top`` classes with sigmoid probabilities (the models are trained
    with BCE), for a multi-label model the ``labels`` above its ``threshold``, the explained ``target`` (default: the predicted class), the input, the colour
    explanation and the signed contribution map as PNG data URLs, the logit, bias, sum of
    contributions and completeness error, the time :func:`alignnet.explain` took and the time
    spent waiting for a free copy of the model, in milliseconds.
    """
    from .. import colour_explanation, explain
    from ..metrics.multilabel import labels_above

    num_classes = len(served.classes)
    if target is not None and not 0 <= int(target) < num_classes:
        raise UploadError(f"target must be a class index in [0, {num_classes - 1}], got {target}")
    requested = time.perf_counter()
    with served.borrow() as model:
        start = time.perf_counter()  # after waiting for a free copy of the model
        e = explain(model, x[None], targets=None if target is None else int(target))
        explain_ms = (time.perf_counter() - start) * 1000
    wait_ms = (start - requested) * 1000
    logits = e.logits[0]
    probs = torch.sigmoid(logits)
    order = torch.argsort(logits, descending=True)[: min(top, num_classes)]
    t = int(e.targets[0])
    contributions = e.contributions[0]
    try:
        colour = colour_explanation(e, 0)
    except ValueError:  # a model without the 6-channel encoding has no colour explanation
        colour = None
    return {
        "model": served.id,
        "trained": served.trained,
        "top": [
            {"index": int(i), "name": served.classes[int(i)], "probability": float(probs[i]), "logit": float(logits[i])}
            for i in order
        ],
        "predicted": int(order[0]),
        # a multi-label model: every label with probability >= its threshold, most probable first (else None)
        "threshold": served.threshold,
        "labels": None
        if served.threshold is None
        else [
            {"index": i, "name": served.classes[i], "probability": float(probs[i])}
            for i in labels_above(logits, served.threshold)
        ],
        "target": t,
        "target_name": served.classes[t],
        "target_probability": float(probs[t]),
        "logit": float(e.outputs[0]),
        "bias": float(e.bias[0]),
        "contribution_sum": float(contributions.sum()),
        "completeness_error": e.completeness_error(),
        "input": png_data_url(x.permute(1, 2, 0).numpy()),
        "colour": None if colour is None else png_data_url(colour),
        "contributions": png_data_url(signed_map_rgba(contributions)),
        "explain_ms": explain_ms,
        "wait_ms": wait_ms,
    }


def attribute_methods(served: ServedModel, x: Tensor, target: int | None, methods: Sequence[str]) -> dict:
    """Post-hoc attributions of one input ``(3, H, W)`` for class ``target`` (default: predicted).

    Returns ``{"target", "target_name", "methods"}`` with one dict per method: its name, its signed
    per-pixel map (sum over channels) as a PNG data URL and the time ``attribute`` took in
    milliseconds; a method that fails on this model reports its error instead of a map.
    """
    from ..attribution import get_attributor

    if target is not None and not 0 <= int(target) < len(served.classes):
        raise UploadError(f"target must be a class index in [0, {len(served.classes) - 1}], got {target}")
    out = []
    with served.borrow() as model:
        if target is None:
            with torch.no_grad():
                target = int(model(x[None]).argmax(1))
        for name in methods:
            start = time.perf_counter()
            try:
                maps = get_attributor(name, model).attribute(x[None], int(target))
            except (ValueError, TypeError, RuntimeError, NotImplementedError) as exc:
                out.append({"method": name, "error": str(exc), "ms": (time.perf_counter() - start) * 1000})
                continue
            ms = (time.perf_counter() - start) * 1000
            pixel_map = maps[0].sum(0)
            out.append({"method": name, "map": png_data_url(signed_map_rgba(pixel_map)), "ms": ms})
    return {"target": int(target), "target_name": served.classes[int(target)], "methods": out}


def default_replicas() -> int:
    """Model copies per model: the CPU count, at most 4."""
    return max(1, min(4, os.cpu_count() or 1))
