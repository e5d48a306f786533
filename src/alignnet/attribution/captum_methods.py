"""Post-hoc baselines through captum (docs/metrics.md#post-hoc-baselines).

All of them run on the model as a function of its encoded input (see :mod:`._base`), and return
the attribution mapped back to the image's channels.

Adapters and refusals, for methods whose captum implementation relies on rules that B-cos and
CoDA layers do not trigger:

- ``deeplift``: captum's DeepLift replaces the gradient of the non-linear *modules* it knows
  (ReLU, Sigmoid, MaxPool, ...). The non-linearities of B-cos / DAU layers are tensor operations
  inside those layers, which captum would silently differentiate as usual (the result would be
  Input x Gradient). Our adapter applies DeepLIFT's rescale rule to them instead: with the zero
  reference every dynamic-linear layer maps 0 to 0, so the rescale multiplier of a layer
  ``y = W(x) x`` is ``W(x)``, i.e. its dynamic factor treated as a constant. That is exactly what
  explanation mode does, so the adapter runs captum's DeepLift inside
  :func:`~alignnet.layers.explanation_mode`. On a bias-free dynamic-linear network the result
  equals ``ours`` (tested); a non-zero reference has no such rule and is not offered.
- ``guided_backprop``: captum's GuidedBackprop only changes the backward pass of ``nn.ReLU``
  modules. On a network without them it would return the plain gradient under another name, so it
  is refused with a clear error for such models (and for models with dynamic layers, whose
  non-linearities it cannot reach).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..layers import DynamicLinear, explanation_mode
from ._base import Attributor, check_forward_batch, copies_per_pass, has_dynamic_layers, register_attributor

__all__ = [
    "DeepLiftAttributor",
    "GradCamAttributor",
    "GradientAttributor",
    "GuidedBackpropAttributor",
    "InputXGradientAttributor",
    "IntegratedGradientsAttributor",
    "OcclusionAttributor",
    "last_spatial_layer",
]


@register_attributor("grad")
class GradientAttributor(Attributor):
    """The signed gradient of the target logit (captum ``Saliency`` with ``abs=False``, as the papers)."""

    def __init__(self, model: nn.Module, batch_size: int = 64, abs: bool = False) -> None:
        super().__init__(model, batch_size=batch_size)
        self.abs = bool(abs)

    def config(self) -> dict:
        return {"abs": self.abs}

    def _attribute(self, images: Tensor, targets: Tensor) -> Tensor:
        from captum.attr import Saliency

        x = self.encoded.encode(images).requires_grad_(True)
        attr = Saliency(self.encoded).attribute(x, target=targets, abs=self.abs)
        return self.encoded.decode_attribution(attr)


@register_attributor("ixg")
class InputXGradientAttributor(Attributor):
    """Input x Gradient (captum ``InputXGradient``), on the encoded input."""

    def __init__(self, model: nn.Module, batch_size: int = 64) -> None:
        super().__init__(model, batch_size=batch_size)

    def _attribute(self, images: Tensor, targets: Tensor) -> Tensor:
        from captum.attr import InputXGradient

        x = self.encoded.encode(images).requires_grad_(True)
        return self.encoded.decode_attribution(InputXGradient(self.encoded).attribute(x, target=targets))


@register_attributor("intgrad")
class IntegratedGradientsAttributor(Attributor):
    """Integrated Gradients with the zero (encoded) baseline, ``n_steps`` Gauss-Legendre steps (50).

    ``forward_batch``: path points per forward/backward pass (captum's ``internal_batch_size``, at least one
    per image); None: the pixel budget of the other perturbation methods (:func:`copies_per_pass`: 128
    points of a 32x32 input on a CPU, 14 of a 96x96 grid), so memory stays bounded on 96x96 grids and
    224x224 images (512 points of a 96x96 CoDA grid needed 10 GB).
    """

    def __init__(
        self, model: nn.Module, batch_size: int = 64, n_steps: int = 50, forward_batch: int | None = None
    ) -> None:
        super().__init__(model, batch_size=batch_size)
        if int(n_steps) < 1:
            raise InputError(f"n_steps must be >= 1, got {n_steps}")
        self.n_steps, self.forward_batch = int(n_steps), check_forward_batch(forward_batch)

    def config(self) -> dict:
        return {"n_steps": self.n_steps, "baseline": "zero encoding"}

    def _attribute(self, images: Tensor, targets: Tensor) -> Tensor:
        from captum.attr import IntegratedGradients

        x = self.encoded.encode(images)
        attr = IntegratedGradients(self.encoded).attribute(
            x,
            baselines=torch.zeros_like(x),
            target=targets,
            n_steps=self.n_steps,
            internal_batch_size=max(copies_per_pass(self.forward_batch, *x.shape[-2:], x.device), x.shape[0]),
        )
        return self.encoded.decode_attribution(attr)


@register_attributor("deeplift")
class DeepLiftAttributor(Attributor):
    """DeepLIFT (rescale rule) with the zero reference; see the module docstring for the adapter."""

    def __init__(self, model: nn.Module, batch_size: int = 64) -> None:
        super().__init__(model, batch_size=batch_size)
        self.adapter = has_dynamic_layers(model)

    def config(self) -> dict:
        return {
            "reference": "zero encoding",
            "dynamic_layer_rule": "rescale (explanation mode)" if self.adapter else None,
        }

    def _attribute(self, images: Tensor, targets: Tensor) -> Tensor:
        from captum.attr import DeepLift

        x = self.encoded.encode(images).requires_grad_(True)
        with torch.enable_grad(), explanation_mode(self.model, warn=False) if self.adapter else _null():
            with warnings.catch_warnings():  # captum announces its (temporary) hooks on every call
                warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
                attr = DeepLift(self.encoded).attribute(x, baselines=torch.zeros_like(x), target=targets)
        return self.encoded.decode_attribution(attr)


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@register_attributor("guided_backprop")
class GuidedBackpropAttributor(Attributor):
    """Guided backpropagation (captum ``GuidedBackprop``); only for networks with ``nn.ReLU`` modules."""

    def __init__(self, model: nn.Module, batch_size: int = 64) -> None:
        super().__init__(model, batch_size=batch_size)
        has_relu = any(isinstance(m, nn.ReLU) for m in model.modules())
        if has_dynamic_layers(model) or not has_relu:
            raise InputError(
                "guided_backprop is not defined for this model: captum's GuidedBackprop only changes the "
                "backward pass of nn.ReLU modules, and this model's non-linearities are "
                + ("inside its B-cos/CoDA layers" if has_dynamic_layers(model) else "not nn.ReLU modules")
                + ", so it would silently return the plain gradient. Use 'grad' for that, or 'ours'."
            )

    def _attribute(self, images: Tensor, targets: Tensor) -> Tensor:
        from captum.attr import GuidedBackprop

        x = self.encoded.encode(images).requires_grad_(True)
        return self.encoded.decode_attribution(GuidedBackprop(self.encoded).attribute(x, target=targets))


def last_spatial_layer(model: nn.Module, images: Tensor) -> str:
    """Name of the last module (in execution order) whose output is a spatial map ``(N, C, h, w)``, h*w > 1.

    Dynamic layers (B-cos, DAU) and modules without children are considered, so this is the
    last convolution-like layer before the global pooling.
    """
    seen: list[str] = []
    hooks = []
    dynamic = [n + "." for n, m in model.named_modules() if isinstance(m, DynamicLinear) and n]
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in dynamic):
            continue  # the parameter holders inside a B-cos / DAU layer are not feature maps
        if name and (isinstance(module, DynamicLinear) or not any(True for _ in module.children())):

            def hook(_m, _i, out, name=name):
                if isinstance(out, Tensor) and out.dim() == 4 and out.shape[-1] * out.shape[-2] > 1:
                    seen.append(name)

            hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(images[:1])
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise InputError("gradcam needs a spatial feature map (N, C, h, w) with h*w > 1; the model has none")
    return seen[-1]


@register_attributor("gradcam")
class GradCamAttributor(Attributor):
    """GradCAM on the last spatial feature map, ReLU'd (as the original paper), upsampled to the image.

    Parameters
    ----------
    layer:
        Module name (``model.named_modules()``); default: :func:`last_spatial_layer`.
    interpolate:
        Upsampling mode for ``F.interpolate`` (``"nearest"`` as captum's default, or ``"bilinear"``).
    """

    per_pixel = True

    def __init__(
        self, model: nn.Module, batch_size: int = 64, layer: str | None = None, interpolate: str = "nearest"
    ) -> None:
        super().__init__(model, batch_size=batch_size)
        if layer is not None and layer not in dict(model.named_modules()):
            raise InputError(f"the model has no module named {layer!r}")
        if interpolate not in ("nearest", "bilinear", "bicubic", "area"):
            raise InputError(f"interpolate must be nearest, bilinear, bicubic or area, got {interpolate!r}")
        self.layer, self.interpolate = layer, interpolate

    def config(self) -> dict:
        return {"layer": self.layer, "interpolate": self.interpolate, "relu": True}

    def prepare(self, images: Tensor) -> dict:
        """Choose the default layer (:func:`last_spatial_layer`) for images like these; the config
        then records the layer actually used."""
        if self.layer is None:
            self.layer = last_spatial_layer(self.model, images)
        return self.config()

    def _attribute(self, images: Tensor, targets: Tensor) -> Tensor:
        from captum.attr import LayerGradCam

        self.prepare(images)
        module = dict(self.model.named_modules())[self.layer]
        x = self.encoded.encode(images)
        cam = LayerGradCam(self.encoded, module).attribute(x, target=targets, relu_attributions=True)
        if cam.dim() != 4:
            raise InputError(f"layer {self.layer!r} does not output a spatial map; choose another with layer=")
        cam = cam.sum(1, keepdim=True)
        kwargs = {} if self.interpolate in ("nearest", "area") else {"align_corners": False}
        cam = F.interpolate(cam, size=images.shape[-2:], mode=self.interpolate, **kwargs)[:, 0]
        return self._spread(cam, images.shape[1])


class OcclusionAttributor(Attributor):
    """Occlusion: the drop of the target logit when a ``size`` x ``size`` patch is removed (zeroed in
    the encoding), averaged over the patches (stride ``stride``) covering each pixel; captum ``Occlusion``.

    ``forward_batch`` bounds the number of images per forward pass (perturbations are batched; None: a
    pixel budget for the device, :func:`~alignnet.attribution.copies_per_pass`).
    """

    per_pixel = True
    default_size = 5

    def __init__(
        self,
        model: nn.Module,
        batch_size: int = 64,
        size: int | None = None,
        stride: int = 2,
        forward_batch: int | None = None,
    ) -> None:
        super().__init__(model, batch_size=batch_size)
        size = self.default_size if size is None else int(size)
        if size < 1 or int(stride) < 1 or int(stride) > size:
            raise InputError(f"need 1 <= stride <= size, got size={size}, stride={stride}")
        self.size, self.stride, self.forward_batch = size, int(stride), check_forward_batch(forward_batch)

    def config(self) -> dict:
        return {"size": self.size, "stride": self.stride, "baseline": "zero encoding"}

    def _check_size(self, images: Tensor) -> None:
        if self.size > min(images.shape[-2:]):
            raise InputError(
                f"{self.name}: the {self.size}x{self.size} occlusion window is larger than the images "
                f"({images.shape[-2]}x{images.shape[-1]}); choose size <= {min(images.shape[-2:])}"
            )

    def _attribute(self, images: Tensor, targets: Tensor) -> Tensor:
        from captum.attr import Occlusion

        self._check_size(images)
        x = self.encoded.encode(images)
        c = x.shape[1]
        with torch.no_grad():
            attr = Occlusion(self.encoded).attribute(
                x,
                sliding_window_shapes=(c, self.size, self.size),
                strides=(c, self.stride, self.stride),
                baselines=0.0,
                target=targets,
                perturbations_per_eval=max(
                    1, copies_per_pass(self.forward_batch, *x.shape[-2:], x.device) // x.shape[0]
                ),
            )
        return self._spread(attr.mean(1), images.shape[1])

    def window_masks(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """``(P, H, W)`` masks, 1 inside each occluding window, row-major.

        Captum's positions: ``ceil((L - size) / stride) + 1`` windows per side at multiples of the
        stride, the last one cut off at the border, so every pixel is covered.
        """
        rows, cols = self._window_sides(height, width, device)
        return (rows[:, None, :, None] & cols[None, :, None, :]).flatten(0, 1).to(dtype)

    def _window_sides(self, height: int, width: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(R, H)`` and ``(Q, W)`` boolean membership of the window rows and columns (P = R * Q windows)."""

        def side(length: int) -> Tensor:
            count = max(0, math.ceil((length - self.size) / self.stride)) + 1
            starts = torch.arange(count, device=device) * self.stride
            idx = torch.arange(length, device=device)
            return (idx >= starts[:, None]) & (idx < starts[:, None] + self.size)

        return side(height), side(width)

    @torch.no_grad()
    def _attribute_maps(self, images: Tensor, targets: Tensor) -> Tensor:
        # Written by hand because captum's Occlusion explains one output per example: this evaluates
        # every occluded copy once and reads all K classes from it (K times fewer forward passes for
        # localisation grids). Same windows, zero-encoding baseline and averaging as captum's
        # (tests/test_attribution.py compares the two).
        self._check_size(images)
        x = self.encoded.encode(images)  # (n, C, H, W)
        # The P windows are built and evaluated in chunks of at most forward_batch copies, so memory stays
        # bounded for large inputs (a 448x448 ImageNet grid has 48,400 windows of 9x9 at stride 2).
        n, k = targets.shape
        rows, cols = self._window_sides(*x.shape[-2:], x.device)  # (R, H), (Q, W)
        base = self.encoded(x).gather(1, targets)  # (n, K)
        total = x.new_zeros(n, k, *x.shape[-2:])
        covered = x.new_zeros(x.shape[-2:])
        forward_batch = copies_per_pass(self.forward_batch, *x.shape[-2:], x.device)
        per_pass = max(1, forward_batch // n)
        for j in range(0, rows.shape[0] * cols.shape[0], per_pass):
            p = torch.arange(j, min(j + per_pass, rows.shape[0] * cols.shape[0]), device=x.device)
            windows = (rows[p // cols.shape[0], :, None] & cols[p % cols.shape[0], None, :]).to(x.dtype)  # (c, H, W)
            drop = base[:, None, :] - self._masked_logits(x, 1 - windows, targets, forward_batch)  # (n, c, K)
            total += torch.einsum("nck,chw->nkhw", drop, windows)
            covered += windows.sum(0)
        return total / covered.clamp(min=1)


@register_attributor("occlusion5")
class Occlusion5Attributor(OcclusionAttributor):
    """Occlusion with 5x5 patches, stride 2."""

    default_size = 5


@register_attributor("occlusion9")
class Occlusion9Attributor(OcclusionAttributor):
    """Occlusion with 9x9 patches, stride 2."""

    default_size = 9
