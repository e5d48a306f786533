"""One registry of model constructors: ``create_model(name, **kw)`` over ``@register_model``.

Entrypoints are small functions that only set architecture arguments; :func:`create_model`
records the name and the keyword arguments on the model (``model.model_name``,
``model.model_args``) so :func:`alignnet.load_model` can rebuild it from a file's metadata.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import InputError

__all__ = ["InputSpec", "create_model", "list_models", "register_model", "model_entrypoint", "annotate"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


@dataclass(frozen=True)
class InputSpec:
    """What a model expects as input; :func:`alignnet.data.fit_to_model` prepares images from it.

    Attributes
    ----------
    size:
        ``(H, W)`` the training resolution (convolutional models accept other sizes too).
    channels:
        Image channels before encoding (3 for RGB in [0, 1]).
    encoding:
        ``"add_inverse"``: the model itself turns ``x`` into ``[x, 1 - x]`` (docs/algorithms.md);
        ``"none"``: the model takes the image as it is (its own normalisation, if any, is inside it).
    resize:
        The shorter side is resized to this before the centre crop to ``size`` (256 for the 224-pixel
        ImageNet models, the papers' evaluation transform); ``None``: resized straight to ``size``.
    style:
        ``"rgb"``: photos as they are. ``"fashion_mnist"``: the model was trained on Fashion-MNIST
        (grey items, light on a black background, 28 pixels padded to 32): images are made grey, a light
        background is inverted and the item is fitted to ``size - 4`` and zero-padded by 2.
    """

    size: tuple[int, int]
    channels: int = 3
    encoding: str = "add_inverse"
    resize: int | None = None
    style: str = "rgb"

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1:
            raise InputError(f"input size must be (H, W) with positive entries, got {self.size}")
        if self.style not in ("rgb", "fashion_mnist"):
            raise InputError(f"input style must be 'rgb' or 'fashion_mnist', got {self.style!r}")
        if self.encoding not in ("add_inverse", "none"):
            raise InputError(f"input encoding must be 'add_inverse' or 'none', got {self.encoding!r}")
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))

    def to_dict(self) -> dict:
        return {
            "size": list(self.size),
            "channels": self.channels,
            "encoding": self.encoding,
            "resize": self.resize,
            "style": self.style,
        }

    @classmethod
    def from_dict(cls, data: dict) -> InputSpec:
        return cls(**{**data, "size": tuple(data["size"])})


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its ``__name__`` (which must be new)."""
    name = fn.__name__
    if name in _MODELS:
        raise InputError(f"a model named {name!r} is already registered")
    _MODELS[name] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching the shell-style ``pattern``, sorted."""
    _ensure_registered()
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The constructor registered as ``name``; unknown names raise ``ValueError`` with close matches."""
    _ensure_registered()
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string, got {type(name).__name__}")
    if name not in _MODELS:
        close = difflib.get_close_matches(name, list(_MODELS), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see alignnet.list_models()"
        raise InputError(f"unknown model {name!r}{hint}")
    return _MODELS[name]


def create_model(name: str, pretrained: bool | str = False, **kwargs) -> nn.Module:
    """Build a registered model.

    Parameters
    ----------
    name:
        A name from :func:`list_models`.
    pretrained:
        ``True``: the architecture's default pretrained weights (downloaded once and cached, see
        :mod:`alignnet.pretrained`); a string: those weights by name (:func:`alignnet.list_pretrained`).
        ``False`` (default): random weights.
    **kwargs:
        ``num_classes`` and architecture overrides of that model (e.g. ``b=1.5``, ``width=0.25``).
        Unknown keywords raise ``ValueError`` listing the accepted ones; with ``pretrained`` they
        must agree with the weights.

    Returns
    -------
    nn.Module
        Takes ``(N, 3, H, W)`` images in [0, 1] and returns ``(N, num_classes)`` logits; it carries
        ``input_spec``, ``paper``, ``model_name`` and ``model_args`` (and ``class_names`` when pretrained).
    """
    fn = model_entrypoint(name)
    params = inspect.signature(fn).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise InputError(f"model {name!r} does not accept {unknown}; accepted arguments: {sorted(params)}")
    if pretrained:
        return _create_pretrained(name, pretrained, kwargs)
    try:
        json.dumps(kwargs)
    except TypeError as exc:
        raise TypeError(f"model arguments must be JSON-serialisable (numbers, strings, lists): {exc}") from None
    model = fn(**kwargs)
    model.model_name = name
    model.model_args = dict(kwargs)
    return model


def _create_pretrained(name: str, pretrained: bool | str, kwargs: dict) -> nn.Module:
    from ..pretrained import default_weights, get_weights, load_pretrained

    entry = default_weights(name) if pretrained is True else get_weights(str(pretrained))
    if entry.arch != name:
        raise InputError(f"the weights {entry.name!r} are for {entry.arch!r}, not {name!r}")
    model = load_pretrained(entry.name)
    defaults = inspect.signature(model_entrypoint(name)).parameters
    differ = {k: v for k, v in kwargs.items() if model.model_args.get(k, defaults[k].default) != v}
    if differ:
        raise InputError(
            f"the weights {entry.name!r} were trained with {model.model_args}; the arguments {differ} do not fit "
            "them (build with pretrained=False and load your own weights instead)"
        )
    return model


def annotate(model: nn.Module, size: tuple[int, int], paper: str, **spec) -> nn.Module:
    """Attach ``input_spec`` and ``paper`` to a freshly built model and return it.

    ``spec``: further :class:`InputSpec` fields; 224-pixel models default to ``resize=256`` (the
    ImageNet evaluation transform of the B-cos papers: shorter side to 256, centre crop 224).
    """
    if tuple(size) == (224, 224):
        spec.setdefault("resize", 256)
    model.input_spec = InputSpec(size=tuple(size), **spec)
    model.paper = paper
    return model


def _ensure_registered() -> None:
    """Import the architecture modules, whose decorators fill the registry."""
    from . import cifar, convnext, densenet, resnet, vgg, vit  # noqa: F401


# Reference strings carried by the models as ``model.paper``.
PAPER_BCOS_V1 = "Böhle, Fritz, Schiele. B-cos Networks: Alignment is All We Need for Interpretability. CVPR 2022"
PAPER_BCOS_V2 = (
    "Böhle, Singh, Fritz, Schiele. B-cos Alignment for Inherently Interpretable CNNs and Vision Transformers. "
    "TPAMI 2024"
)
PAPER_CODA = (
    "Böhle, Fritz, Schiele. Convolutional Dynamic Alignment Networks for Interpretable Classifications. CVPR 2021"
)
