"""Exact explanations of dynamic-linear networks (REFERENCE.md section 1).

In explanation mode the network is ``logits = W(x) x + b`` with ``W(x)`` a constant, so one
backward pass of the selected logits gives ``W(x)[c]`` for the whole batch, and
``contributions = W(x)[c] * x`` sum (with the logit bias) exactly to the logit.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..layers import AddInverse, LogitLayer, explanation_mode

__all__ = ["Explanation", "check_images", "explain", "expected_input_channels"]


@dataclass(frozen=True)
class Explanation:
    """Result of :func:`explain` for a batch of N images.

    Attributes
    ----------
    inputs:
        ``(N, C, H, W)`` the input the weights refer to: the 6-channel encoding when the model
        starts with :class:`~alignnet.layers.AddInverse`, else the images as given.
    weights:
        ``(N, C, H, W)``, or ``(N, K, C, H, W)`` for K targets per image: the rows ``W(x)[c]``.
    logits:
        ``(N, num_classes)`` the model output.
    targets:
        ``(N,)`` or ``(N, K)`` explained class indices (the channel for a layer explanation).
    outputs:
        ``(N,)`` or ``(N, K)`` the explained values (the target logits, or the unit's value).
    bias:
        Same shape as ``outputs``: the part of each output not attributed to any pixel (the
        logit layer's bias).
    """

    inputs: Tensor
    weights: Tensor
    logits: Tensor
    targets: Tensor
    outputs: Tensor
    bias: Tensor

    @property
    def contributions(self) -> Tensor:
        """``(N, [K,] H, W)`` per-pixel contributions ``sum_channels(W(x)[c] * x)``."""
        x = self.inputs if self.weights.dim() == 4 else self.inputs.unsqueeze(1)
        return (self.weights * x).sum(dim=-3)

    @property
    def channel_contributions(self) -> Tensor:
        """``(N, [K,] C, H, W)`` contributions before summing over channels."""
        x = self.inputs if self.weights.dim() == 4 else self.inputs.unsqueeze(1)
        return self.weights * x

    def completeness_error(self) -> float:
        """``max |sum(contributions) + bias - output| / max |output|`` (0 is exact)."""
        total = self.contributions.flatten(-2).sum(-1) + self.bias
        scale = self.outputs.abs().max().clamp_min(torch.finfo(self.outputs.dtype).tiny)
        return float((total - self.outputs).abs().max() / scale)

    def __len__(self) -> int:
        return self.inputs.shape[0]


def expected_input_channels(model: nn.Module) -> int | None:
    """Channels the model expects in its images, read from its first layer (None if unknown).

    An :class:`AddInverse` before the first layer halves the count.
    """
    add_inverse = False
    for module in model.modules():
        if isinstance(module, AddInverse):
            add_inverse = True
        channels = getattr(module, "in_channels", None)
        if isinstance(channels, int) and module is not model:
            return channels // 2 if add_inverse else channels
    return None


def check_images(model: nn.Module, images: Tensor) -> None:
    """Raise a clear ``TypeError``/``ValueError`` unless ``images`` is a finite float ``(N, C, H, W)`` batch
    with the channel count the model expects."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[0] < 1:
        raise ValueError("images is an empty batch (N=0)")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor in [0, 1], got dtype {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contain NaN or infinite values; explanations of them would be meaningless")
    expected = expected_input_channels(model)
    if expected is not None and images.shape[1] != expected:
        raise ValueError(
            f"the model expects images with {expected} channels, got {images.shape[1]} "
            f"(images of shape {tuple(images.shape)})"
        )


def _normalise_targets(targets, logits: Tensor, explained: Tensor) -> Tensor:
    """Targets as a long tensor ``(N,)`` or ``(N, K)``, range-checked against ``explained``."""
    n, k = explained.shape
    if targets is None:
        t = logits.argmax(dim=1)
    elif isinstance(targets, str):
        if targets != "all":
            raise ValueError(f"targets must be None, an int, a sequence of ints, 'all' or a tensor; got {targets!r}")
        t = torch.arange(k, device=explained.device).expand(n, k)
    else:
        t = torch.as_tensor(targets, device=explained.device)
        if t.is_floating_point() or t.dtype == torch.bool:
            raise TypeError(f"targets must be integers, got dtype {t.dtype}")
        t = t.long()
        if t.dim() == 0:
            t = t.expand(n)
        elif t.dim() > 2 or t.shape[0] != n:
            raise ValueError(f"targets must be an int, (N,) or (N, K) with N={n}; got shape {tuple(t.shape)}")
    if bool(((t < 0) | (t >= k)).any()):
        raise ValueError(
            f"target index out of range: the model has {k} outputs, got targets {t.unique().tolist()[:10]}"
        )
    return t


def _find_module(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        close = difflib.get_close_matches(name, [n for n in modules if n], n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"the model has no module named {name!r}{hint}")
    return modules[name]


def _unit_values(out: Tensor, channel: int | None, position: Sequence[int] | None) -> Tensor:
    """Reduce a layer output to ``(N, C)`` (per channel), summing or picking the spatial position."""
    if out.dim() == 2:
        return out
    if position is not None:
        idx = tuple(int(p) for p in position)
        if len(idx) != out.dim() - 2:
            raise ValueError(f"position needs {out.dim() - 2} indices for a layer output of shape {tuple(out.shape)}")
        return out[(slice(None), slice(None), *idx)]
    return out.flatten(2).sum(-1)


def explain(
    model: nn.Module,
    images: Tensor,
    targets: int | Sequence[int] | Tensor | str | None = None,
    *,
    layer: str | None = None,
    channel: int | None = None,
    position: Sequence[int] | None = None,
) -> Explanation:
    """Explain a batch with one forward and one backward pass in explanation mode.

    Parameters
    ----------
    model:
        Any module built from alignnet's dynamic layers and linear pieces.
    images:
        ``(N, C, H, W)`` floating point, in [0, 1] for models that start with ``AddInverse``.
    targets:
        ``None`` (the predicted class), an int, ``N`` ints, ``"all"`` or an ``(N, K)`` tensor of
        class indices to explain several classes per image (batched gradients).
    layer, channel, position:
        Explain an intermediate unit instead of a logit: the output channel ``channel`` of the
        module named ``layer`` (see ``model.named_modules()``), summed over its spatial positions
        or taken at ``position`` (e.g. ``(row, col)``). ``targets`` is ignored then.

    The model's train/eval mode, the parameters' ``requires_grad`` and ``.grad`` and the
    caller's ``images`` are left as they were; the model runs in eval mode for the call.
    """
    check_images(model, images)
    captured: dict[str, Tensor] = {}
    hooks = []

    def keep_first(key):
        def hook(_module, _inputs, output):
            captured.setdefault(key, output)

        return hook

    def keep_bias(_module, _inputs, output):
        captured["bias"] = _module.bias.detach().to(output.dtype).expand_as(output)

    for m in model.modules():
        if isinstance(m, AddInverse):
            hooks.append(m.register_forward_hook(keep_first("encoded")))
        elif isinstance(m, LogitLayer):
            hooks.append(m.register_forward_hook(keep_bias))
    if layer is not None:
        if channel is None:
            raise ValueError("explaining a layer needs channel=<output channel index>")
        hooks.append(_find_module(model, layer).register_forward_hook(keep_first("layer")))

    training = {m: m.training for m in model.modules()}
    # gradients w.r.t. the input only: switching the parameters' requires_grad off for the call skips
    # their part of the graph and lets layers reuse cached normalised weights (restored below)
    requires_grad = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    try:
        for p, _ in requires_grad:
            p.requires_grad_(False)
        with torch.enable_grad(), explanation_mode(model):
            x = images.detach().clone().requires_grad_(True)
            logits = model(x)
            if not isinstance(logits, Tensor) or logits.dim() != 2:
                raise ValueError("explain needs a model whose output is a (N, num_classes) tensor")
            source = captured.get("encoded", x)
            if layer is not None:
                explained = _unit_values(captured["layer"], channel, position)
                t = _normalise_targets(int(channel), logits, explained)
                bias_full = torch.zeros_like(explained)
            else:
                explained = logits
                t = _normalise_targets(targets, logits, explained)
                bias_full = captured.get("bias")
                if bias_full is None or bias_full.shape != logits.shape:
                    bias_full = torch.zeros_like(logits)
            if not bool(torch.isfinite(explained).all()):
                raise ValueError("the model produced non-finite outputs for these images")
            outputs = explained.gather(1, t if t.dim() == 2 else t[:, None])
            weights = _input_gradients(outputs, source)
            if t.dim() == 1:
                outputs, weights = outputs[:, 0], weights[:, 0]
    finally:
        for h in hooks:
            h.remove()
        for m, mode in training.items():
            m.training = mode
        for p, flag in requires_grad:
            p.requires_grad_(flag)
    bias = bias_full.gather(1, t if t.dim() == 2 else t[:, None])
    return Explanation(
        inputs=source.detach(),
        weights=weights.detach(),
        logits=logits.detach(),
        targets=t,
        outputs=outputs.detach(),
        bias=(bias if t.dim() == 2 else bias[:, 0]).detach(),
    )


def _input_gradients(outputs: Tensor, source: Tensor) -> Tensor:
    """``d outputs[n, k] / d source[n]`` as ``(N, K, *source.shape[1:])``.

    Images are independent in eval mode, so one backward of the column sum gives every image's
    gradient; K > 1 columns use batched (vmapped) gradients, falling back to K backward passes
    for models whose operations vmap does not support.
    """
    k = outputs.shape[1]
    if k == 1:
        (g,) = torch.autograd.grad(outputs.sum(), source)
        return g.unsqueeze(1)
    eye = torch.eye(k, dtype=outputs.dtype, device=outputs.device)
    grad_outputs = eye[:, None, :].expand(k, outputs.shape[0], k)
    try:
        (g,) = torch.autograd.grad(outputs, source, grad_outputs, retain_graph=True, is_grads_batched=True)
    except RuntimeError:
        g = torch.stack([torch.autograd.grad(outputs[:, j].sum(), source, retain_graph=True)[0] for j in range(k)])
    return g.transpose(0, 1)
