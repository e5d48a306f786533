"""Contribution maps of one logit at the input of every dynamic layer (docs/algorithms.md#layer-wise-contributions).

In explanation mode the network is linear in the input ``a`` of each of its dynamic layers, so the
logit's contribution map at that layer is ``sum_channels(d logit / d a * a)`` at that layer's
resolution. For a plain stack of dynamic layers (no skip connections, no biases) every map sums to
``logit - bias`` exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..layers import DynamicLinear
from .dynamic_linear import _eager_call, _uncompiled, as_model_input, check_images, check_target_range, explaining

__all__ = ["layer_contributions", "top_level_dynamic_layers"]


def top_level_dynamic_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the dynamic layers that are not inside another dynamic layer, in registration order."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, DynamicLinear) and not any(name.startswith(p + ".") for p, _ in found):
            found.append((name, module))
    return found


def layer_contributions(model: nn.Module, image: Tensor, target: int) -> list[tuple[str, Tensor]]:
    """Contribution map of logit ``target`` at the input of every dynamic layer.

    Parameters
    ----------
    model:
        A dynamic-linear classifier ``(N, C, H, W) -> (N, num_classes)``.
    image:
        ``(C, H, W)`` or ``(1, C, H, W)`` in [0, 1].
    target:
        The explained class, ``0 <= target < num_classes``.

    Returns
    -------
    list of ``(layer name, (h, w) map)`` for the layers on the path to the logit whose input is a
    spatial map, in registration order.

    One forward and one backward pass (gradients w.r.t. the layer inputs only). The model's
    train/eval flags, the parameters' ``requires_grad`` and ``.grad`` and the explanation-mode flags
    are left as they were. Raises ``TypeError``/``ValueError`` for bad images or targets, as
    :func:`~alignnet.explanation.explain`. A ``torch.compile``'d model runs eagerly here: the maps come
    from hooks, which a compiled graph neither guards nor lets gradients reach (docs/compile.md).
    """
    if isinstance(image, Tensor) and image.dim() == 3:
        image = image[None]
    check_images(model, image)
    if image.shape[0] != 1:
        raise InputError(f"layer_contributions explains one image: (C, H, W) or (1, C, H, W), got {tuple(image.shape)}")
    if (
        isinstance(target, bool)
        or not isinstance(target, (int, Tensor))
        or (isinstance(target, Tensor) and (target.numel() != 1 or target.is_floating_point()))
    ):
        raise TypeError(f"target must be an int class index, got {target!r}")
    target = int(target)
    run, model = _eager_call(model), _uncompiled(model)
    layers = top_level_dynamic_layers(model)
    if not layers:
        raise InputError("the model has no dynamic (B-cos / CoDA) layers to show per-layer maps of")
    captured: dict[str, Tensor] = {}

    def keep(name):
        def hook(_module, inputs):
            captured.setdefault(name, inputs[0])

        return hook

    hooks = [m.register_forward_pre_hook(keep(n)) for n, m in layers]
    try:
        with explaining(model):
            x = as_model_input(model, image).clone().requires_grad_(True)
            logits = run(x)
            if not isinstance(logits, Tensor) or logits.dim() != 2:
                raise InputError("layer_contributions needs a model whose output is a (N, num_classes) tensor")
            check_target_range(torch.tensor([target]), logits.shape[1])
            names = [n for n, _ in layers if n in captured and captured[n].requires_grad]
            grads = torch.autograd.grad(logits[0, target], [captured[n] for n in names], allow_unused=True)
    finally:
        for h in hooks:
            h.remove()
    out = []
    for name, g in zip(names, grads, strict=True):
        a = captured[name]
        if g is None or a.dim() != 4:
            continue  # not on the path to the logit, or not a spatial map
        out.append((name, (g * a).sum(1)[0].detach()))
    return out
