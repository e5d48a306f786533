"""Shared machinery of the attribution registry: the base class, the registry and input encoding.

Every method is built from a model and exposes ``.attribute(images, targets)`` returning a tensor
of the images' shape ``(N, C, H, W)`` (captum's convention). *The per-pixel map of a method is the
sum of its output over the channels*; the metrics only ever use that sum.

Input space. The papers' models start with :class:`~alignnet.layers.AddInverse`, which turns an
RGB image into the 6-channel encoding ``[x, 1 - x]``; "removing" a pixel means zeroing it *in that
encoding* (docs/algorithms.md#input-encoding and docs/metrics.md#pixel-removal). So for such models every method here works on the
encoded input: gradients are taken w.r.t. the 6 encoded channels, Integrated Gradients and
DeepLIFT use the zero *encoding* as baseline, and occlusion / RISE / LIME remove pixels by zeroing
their encoding. The 6-channel attribution ``A`` is mapped back to the image by summing each
colour channel's two encoded channels, ``A_img[c] = A[c] + A[c + 3]``, so the per-pixel sum over
the image's channels equals the sum over all 6 encoded channels. For models without
``AddInverse`` the image itself is the input.
"""

from __future__ import annotations

import difflib
import inspect
import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..explanation.dynamic_linear import as_model_input, check_images, check_target_range, resolve_target_alias
from ..layers import AddInverse, DynamicLinear, eval_mode

__all__ = [
    "AUTO_PIXELS",
    "Attributor",
    "EncodedModel",
    "attributor_parameters",
    "check_forward_batch",
    "copies_per_pass",
    "get_attributor",
    "list_attributors",
    "register_attributor",
]

_REGISTRY: dict[str, type[Attributor]] = {}

#: pixels per forward pass of perturbed copies when ``forward_batch`` is None: a CPU is fastest with small
#: batches whose activations stay in its caches (2-3x faster per copy than 512 copies of a 32x32 or 96x96
#: input, benchmarks/RESULTS.md "Perturbation batches"); a GPU wants large ones (not measured here)
AUTO_PIXELS = {"cpu": 1 << 17, "other": 1 << 23}


def check_forward_batch(forward_batch: int | None, name: str = "forward_batch") -> int | None:
    """``forward_batch`` as an int >= 1, or None (the automatic pixel budget); a clear error for anything else,
    raised where the value is given (an attributor's constructor), not at its first use."""
    if forward_batch is None:
        return None
    if isinstance(forward_batch, bool) or not isinstance(forward_batch, numbers.Integral) or forward_batch < 1:
        default = "leave it out" if name.startswith("--") else "None"  # a command-line option has no None
        raise InputError(
            f"{name} must be an int >= 1 ({default} for the automatic pixel budget), got {forward_batch!r}"
        )
    return int(forward_batch)


def copies_per_pass(forward_batch: int | None, height: int, width: int, device: torch.device | str) -> int:
    """Perturbed copies of an ``height x width`` input per forward pass: ``forward_batch`` when given, else
    :data:`AUTO_PIXELS` of the device divided by the input's pixels (128 copies of 32x32 on a CPU, 14 of 96x96)."""
    forward_batch = check_forward_batch(forward_batch)
    if forward_batch is not None:
        return forward_batch
    budget = AUTO_PIXELS["cpu" if torch.device(device).type == "cpu" else "other"]
    return max(1, budget // (int(height) * int(width)))


def register_attributor(name: str) -> Callable[[type[Attributor]], type[Attributor]]:
    """Class decorator adding an :class:`Attributor` subclass to the registry under ``name``."""

    def wrap(cls: type[Attributor]) -> type[Attributor]:
        if name in _REGISTRY:
            raise InputError(f"an attribution method named {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def list_attributors() -> list[str]:
    """Names of the registered attribution methods, in registration order."""
    _load_builtin()
    return sorted(_REGISTRY, key=lambda n: n != "ours")  # ours first, then in registration order


def get_attributor(name: str, model: nn.Module, **config) -> Attributor:
    """Build the attribution method ``name`` for ``model``.

    Parameters
    ----------
    name:
        One of :func:`list_attributors` (``"ours"``, ``"grad"``, ``"ixg"``, ``"intgrad"``, ...).
    model:
        A classifier ``(N, C, H, W) -> (N, num_classes)``.
    **config:
        The method's keyword arguments (see its class); unknown names raise ``ValueError``.
    """
    allowed = attributor_parameters(name)  # loads the built-in methods, checks the name
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise InputError(
            f"method {name!r} does not take {', '.join(unknown)}; it takes {', '.join(allowed) or 'nothing'}"
        )
    return _REGISTRY[name](model, **config)


def attributor_parameters(name: str) -> list[str]:
    """The keyword arguments that the attribution method ``name`` takes (``ValueError`` for an unknown name)."""
    _load_builtin()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"unknown attribution method {name!r}{hint} (known: {', '.join(_REGISTRY)})")
    params = inspect.signature(_REGISTRY[name].__init__).parameters
    return [p for p in params if p not in ("self", "model")]


def _load_builtin() -> None:
    # the built-in methods register themselves on import
    from . import captum_methods, lime, ours, rise  # noqa: F401


def find_add_inverse(model: nn.Module) -> AddInverse | None:
    """The model's first :class:`AddInverse` module, or None."""
    return next((m for m in model.modules() if isinstance(m, AddInverse)), None)


def has_dynamic_layers(model: nn.Module) -> bool:
    """Whether the model contains B-cos / CoDA (dynamic-linear) layers."""
    return any(isinstance(m, DynamicLinear) for m in model.modules())


class EncodedModel(nn.Module):
    """The model as a function of its encoded input (the output of its ``AddInverse``).

    ``forward(encoded)`` runs ``model`` with the ``AddInverse`` output replaced by ``encoded``
    (a forward hook), so gradients and perturbations act on the 6 encoded channels. Without an
    ``AddInverse`` this is the model itself and ``encode`` is the identity.

    Shapes: ``encode``: ``(N, C, H, W) -> (N, 2C, H, W)``; ``forward``: ``(N, 2C, H, W) -> (N, K)``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.encoder = find_add_inverse(model)

    @property
    def encodes(self) -> bool:
        return self.encoder is not None

    def encode(self, images: Tensor) -> Tensor:
        return images if self.encoder is None else self.encoder(images)

    def decode_attribution(self, attribution: Tensor) -> Tensor:
        """``(N, 2C, H, W) -> (N, C, H, W)``: sum each colour channel's two encoded channels."""
        if self.encoder is None:
            return attribution
        c = attribution.shape[1] // 2
        return attribution[:, :c] + attribution[:, c:]

    def forward(self, encoded: Tensor) -> Tensor:
        if self.encoder is None:
            return self.model(encoded)
        placeholder = encoded[:, : encoded.shape[1] // 2].detach()

        def replace(_module, inputs, _output):
            if inputs[0] is not placeholder:
                raise InputError(
                    "the model's AddInverse must encode the model's input directly; "
                    "attribution in the encoded space cannot run on this model"
                )
            return encoded

        handle = self.encoder.register_forward_hook(replace)
        try:
            return self.model(placeholder)
        finally:
            handle.remove()


class Attributor:
    """Base class of attribution methods.

    Subclasses implement ``_attribute(images, targets) -> (n, C, H, W)`` for one chunk of at most
    ``batch_size`` images; :meth:`attribute` checks the input, resolves the targets and chunks.

    Parameters
    ----------
    model:
        A classifier ``(N, C, H, W) -> (N, num_classes)``; it runs in eval mode during the call
        and its train/eval flags are restored afterwards.
    batch_size:
        Images per call of ``_attribute`` (bounds the memory of perturbation methods).
    """

    name: str = ""
    #: whether the method gives one value per pixel (spread evenly over the channels)
    per_pixel: bool = False

    def __init__(self, model: nn.Module, batch_size: int = 64) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if int(batch_size) < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.batch_size = int(batch_size)
        self.encoded = EncodedModel(model)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, config={self.config()})"

    def config(self) -> dict:
        """The settings that determine the result (used in result files and cache keys)."""
        return {}

    def prepare(self, images: Tensor) -> dict:
        """Resolve every setting that depends on the input (e.g. GradCAM's default layer) for images
        like ``images`` and return :meth:`config`; call it before recording the config."""
        return self.config()

    def attribute(
        self,
        images: Tensor,
        targets: int | Sequence[int] | Tensor | None = None,
        *,
        target: int | Sequence[int] | Tensor | None = None,
    ) -> Tensor:
        """Attribute the ``targets`` logits to the pixels of ``images``.

        Parameters
        ----------
        images:
            ``(N, C, H, W)`` floating point, in [0, 1] for models starting with ``AddInverse``.
        targets:
            Class per image: an int, ``N`` ints / an ``(N,)`` tensor, or None for the predicted class.
        target:
            captum's name for ``targets`` (an alias; give one of the two).

        Returns
        -------
        ``(N, C, H, W)`` attributions; their sum over channels is the per-pixel map.

        Raises
        ------
        TypeError
            ``images`` not a floating-point tensor, or non-integer targets.
        ValueError
            Wrong image shape or channel count, non-finite values, a target outside
            ``0..num_classes-1`` (the message names the range), targets of the wrong shape.
        """
        targets = resolve_target_alias(targets, target)
        dtype = images.dtype if isinstance(images, Tensor) else None
        images = _check_images(self.model, images)
        with eval_mode(self.model):
            t = self._resolve_targets(images, targets)
            out = [
                self._attribute(images[i : i + self.batch_size], t[i : i + self.batch_size])
                for i in range(0, images.shape[0], self.batch_size)
            ]
        result = torch.cat(out).detach().to(dtype)
        if result.shape != images.shape:
            raise RuntimeError(f"{self.name} returned shape {tuple(result.shape)} for images {tuple(images.shape)}")
        return result

    def attribute_maps(self, images: Tensor, targets: Tensor | None = None, *, target: Tensor | None = None) -> Tensor:
        """Per-pixel maps for several classes per image: ``(N, C, H, W), (N, K) -> (N, K, H, W)``.

        The default repeats each image K times through :meth:`attribute`. Methods whose work is
        shared between classes implement ``_attribute_maps`` (``ours``: one forward pass; the
        perturbation methods evaluate every perturbed copy once and read all K logits from it).
        ``target`` is captum's name for ``targets``. Errors as :meth:`attribute`.
        """
        targets = resolve_target_alias(targets, target)
        if targets is None:
            raise TypeError("attribute_maps needs targets: an (N, K) tensor of class indices")
        dtype = images.dtype if isinstance(images, Tensor) else None
        images = _check_images(self.model, images)
        targets = _check_target_values(_as_target_tensor(targets, images.device))
        if targets.dim() != 2 or targets.shape[0] != images.shape[0]:
            raise InputError(f"targets must have shape (N, K) with N={images.shape[0]}, got {tuple(targets.shape)}")
        n, k = targets.shape
        with eval_mode(self.model):
            check_target_range(targets, self._num_outputs(images))
        if type(self)._attribute_maps is Attributor._attribute_maps:
            maps = self.attribute(images.repeat_interleave(k, 0), targets.reshape(-1)).sum(1).to(dtype)
            return maps.view(n, k, *maps.shape[-2:])
        step = max(1, self.batch_size // k)  # at most batch_size maps per chunk
        with eval_mode(self.model):
            out = [self._attribute_maps(images[i : i + step], targets[i : i + step]) for i in range(0, n, step)]
        return torch.cat(out).detach().to(dtype)

    def _attribute_maps(self, images: Tensor, targets: Tensor) -> Tensor:
        """Optional: ``(n, C, H, W), (n, K) -> (n, K, H, W)`` for one chunk, sharing work between classes."""
        raise NotImplementedError

    @torch.no_grad()
    def _masked_logits(self, x: Tensor, masks: Tensor, targets: Tensor, forward_batch: int | None) -> Tensor:
        """Logits of the ``(n, K)`` targets for each encoded image ``x`` ``(n, C, H, W)`` multiplied by each
        mask ``(P, H, W)``: ``(n, P, K)``, with at most ``forward_batch`` masked copies per forward pass
        (None: :func:`copies_per_pass`)."""
        n, k = targets.shape
        per_pass = max(1, copies_per_pass(forward_batch, *x.shape[-2:], x.device) // n)
        out = []
        for j in range(0, masks.shape[0], per_pass):
            m = masks[j : j + per_pass]
            logits = self.encoded((x[:, None] * m[None, :, None]).flatten(0, 1)).view(n, m.shape[0], -1)
            out.append(logits.gather(2, targets[:, None, :].expand(n, m.shape[0], k)))
        return torch.cat(out, 1)

    @torch.no_grad()
    def _num_outputs(self, images: Tensor) -> int:
        """The model's number of outputs (classes), from one image (in the caller's eval mode)."""
        out = self.model(images[:1])
        if not isinstance(out, Tensor) or out.dim() != 2:
            raise InputError("attribution needs a model whose output is a (N, num_classes) tensor")
        return out.shape[1]

    def _resolve_targets(self, images: Tensor, targets) -> Tensor:
        n = images.shape[0]
        if targets is None:
            with torch.no_grad():
                preds = [self.model(images[i : i + 256]).argmax(1) for i in range(0, n, 256)]
            return torch.cat(preds)
        t = _check_target_values(_as_target_tensor(targets, images.device))
        if t.dim() == 0:
            t = t.expand(n)
        if t.shape != (n,):
            raise InputError(f"targets must be an int or have shape ({n},), got shape {tuple(t.shape)}")
        check_target_range(t, self._num_outputs(images))
        return t

    def _attribute(self, images: Tensor, targets: Tensor) -> Tensor:
        raise NotImplementedError

    def _spread(self, pixel_map: Tensor, channels: int) -> Tensor:
        """``(N, H, W) -> (N, C, H, W)`` with each channel ``map / C`` (channel sum = the map)."""
        return (pixel_map / channels).unsqueeze(1).expand(-1, channels, -1, -1).contiguous()


def _as_target_tensor(targets, device) -> Tensor:
    try:
        return torch.as_tensor(targets, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"targets must be an int, a sequence of ints or an integer tensor, got {targets!r}") from None


def _check_target_values(t: Tensor) -> Tensor:
    """Integer class indices as a long tensor (any shape); the range is checked against the model."""
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"targets must be integers, got dtype {t.dtype}")
    return t.long()


def _check_images(model: nn.Module, images: Tensor) -> Tensor:
    check_images(model, images)  # the same checks and messages as alignnet.explain
    return as_model_input(model, images)
