"""Exact explanations of dynamic-linear networks (docs/algorithms.md#dynamic-linear-models).

In explanation mode the network is ``logits = W(x) x + b`` with ``W(x)`` a constant, so one
backward pass of the selected logits gives ``W(x)[c]`` for the whole batch, and
``contributions = W(x)[c] * x`` sum (with the logit bias) exactly to the logit.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..layers import AddInverse, LogitLayer, eval_mode, explanation_mode
from ..layers.encoding import recording_encodings

__all__ = [
    "Explanation",
    "as_model_input",
    "check_images",
    "check_target_range",
    "explain",
    "expected_input_channels",
    "explaining",
    "input_gradients_only",
    "resolve_target_alias",
]


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


def _compiled_original(model: nn.Module) -> nn.Module | None:
    """The eager module inside a ``torch.compile(module)`` wrapper (an ``OptimizedModule``), else None."""
    original = getattr(model, "_orig_mod", None)
    if type(model).__name__ == "OptimizedModule" and isinstance(original, nn.Module):
        return original
    return None


def _uncompiled(model: nn.Module) -> nn.Module:
    """``model`` without its ``torch.compile`` wrappers: the module tree its flags, hooks and names live on."""
    while (original := _compiled_original(model)) is not None:
        model = original
    return model


def _is_compiled(model: nn.Module) -> bool:
    """``torch.compile(model)`` or ``model.compile()`` (which compiles the module's call in place)."""
    return _compiled_original(model) is not None or getattr(_uncompiled(model), "_compiled_call_impl", None) is not None


def _eager_call(model: nn.Module):
    """A callable that runs ``model`` eagerly, also when it was compiled (wrapped or in place)."""
    model = _uncompiled(model)
    if getattr(model, "_compiled_call_impl", None) is not None:
        return model._call_impl
    return model


def _fullgraph(model: nn.Module) -> bool:
    """Whether a ``torch.compile``'d wrapper was compiled with ``fullgraph=True`` (no graph break allowed)."""
    return bool(getattr(getattr(model, "dynamo_ctx", None), "fullgraph", False))


class _FirstLayer(Exception):
    """Raised by the probe's hook to stop the forward pass at the first layer with ``in_channels``."""


def expected_input_channels(model: nn.Module, images: Tensor | None = None) -> int | None:
    """Channels the model expects in its images (None if unknown).

    Found in *execution* order, not registration order: the model runs (in eval mode, without
    gradients) on ``images[:1]`` (or a ``(1, 3, 8, 8)`` zero probe) until the first submodule with an
    integer ``in_channels`` is called, and stops there; an :class:`AddInverse` that ran before it
    halves the count. A model whose head is registered before its stem is read correctly. None
    when no such layer runs, or when the model fails before reaching one. A ``torch.compile``'d model is
    probed eagerly: hooks inside a compiled graph are not guarded, and the probe would compile a graph.
    """
    run = _eager_call(model)
    model = _uncompiled(model)
    added_inverse: list[bool] = []
    handles = []

    def saw_inverse(_module, _args):
        added_inverse.append(True)

    def stop(module, _args):
        raise _FirstLayer(module.in_channels)

    for module in model.modules():
        if module is model:
            continue
        if isinstance(module, AddInverse):
            handles.append(module.register_forward_pre_hook(saw_inverse))
        elif isinstance(getattr(module, "in_channels", None), int):
            handles.append(module.register_forward_pre_hook(stop))
    if not handles:
        return None
    if images is None or images.dim() < 1 or images.shape[0] < 1:
        param = next(iter(model.parameters()), None)
        kw = {} if param is None else {"device": param.device, "dtype": param.dtype}
        probe = torch.zeros(1, 3, 8, 8, **kw)
    else:
        probe = images[:1].detach()
    try:
        with torch.no_grad(), eval_mode(model):
            run(probe)
    except _FirstLayer as found:
        channels = int(found.args[0])
        return channels // 2 if added_inverse else channels
    except Exception:  # the model cannot run on this input at all: its own error will say why
        return None
    finally:
        for h in handles:
            h.remove()
    return None


def check_images(model: nn.Module, images: Tensor) -> None:
    """Raise a clear ``TypeError``/``ValueError`` unless ``images`` is a finite float ``(N, C, H, W)`` batch
    with the channel count the model expects."""
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise InputError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if images.shape[0] < 1:
        raise InputError("images is an empty batch (N=0)")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor in [0, 1], got dtype {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise InputError("images contain NaN or infinite values; explanations of them would be meaningless")
    expected = expected_input_channels(model, images)
    if expected is not None and images.shape[1] != expected:
        raise InputError(
            f"the model expects images with {expected} channels, got {images.shape[1]} "
            f"(images of shape {tuple(images.shape)})"
        )


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating-point parameter (None if it has none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def as_model_input(model: nn.Module, images: Tensor) -> Tensor:
    """``images`` detached and in the model's floating-point dtype (float32 images for a float64 model
    and the other way round are converted rather than failing inside the first layer)."""
    dtype = model_dtype(model)
    images = images.detach()
    return images if dtype is None or images.dtype == dtype else images.to(dtype)


def check_target_range(targets: Tensor, num_outputs: int) -> None:
    """Raise ``ValueError`` naming the valid range unless every entry of ``targets`` is in ``[0, num_outputs)``.

    The one out-of-range error of :func:`explain` and every attribution method.
    """
    bad = (targets < 0) | (targets >= num_outputs)
    if targets.numel() and bool(bad.any()):
        raise InputError(
            f"target out of range: the model has {num_outputs} outputs, so targets must lie in "
            f"0..{num_outputs - 1}; got {targets[bad].unique().tolist()[:10]}"
        )


def resolve_target_alias(targets, target, name: str = "targets"):
    """Accept captum's keyword ``target=`` as an alias of alignnet's ``targets=`` (not both)."""
    if target is None:
        return targets
    if targets is not None:
        raise TypeError(f"got both {name}= and target=; pass the class indices once ({name}= or captum's target=)")
    return target


@contextlib.contextmanager
def input_gradients_only(model: nn.Module) -> Iterator[nn.Module]:
    """Switch the parameters' ``requires_grad`` off for the block (restored on exit, exceptions included).

    Gradients w.r.t. the input then skip the parameters' part of the graph (no weight gradients are
    computed) and leave every ``.grad`` untouched.
    """
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


@contextlib.contextmanager
def explaining(model: nn.Module) -> Iterator[nn.Module]:
    """The state one explanation pass needs, restored on exit: gradients on (also inside a caller's
    inference-mode block), eval mode, input gradients only, explanation mode (dynamic factors detached).
    A ``torch.compile``'d model's flags are set on the module it wraps."""
    model = _uncompiled(model)
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        eval_mode(model),
        input_gradients_only(model),
        explanation_mode(model),
    ):
        yield model


def _normalise_targets(targets, logits: Tensor, explained: Tensor) -> Tensor:
    """Targets as a long tensor ``(N,)`` or ``(N, K)``, range-checked against ``explained``."""
    n, k = explained.shape
    if targets is None:
        t = logits.argmax(dim=1)
    elif isinstance(targets, str):
        if targets != "all":
            raise InputError(f"targets must be None, an int, a sequence of ints, 'all' or a tensor; got {targets!r}")
        t = torch.arange(k, device=explained.device).expand(n, k)
    else:
        try:
            t = torch.as_tensor(targets, device=explained.device)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"targets must be None, an int, a sequence of ints, 'all' or an integer tensor; got {targets!r}"
            ) from None
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"targets must be integers, got dtype {t.dtype}")
        t = t.long()
        if t.dim() == 0:
            t = t.expand(n)
        elif t.dim() > 2 or t.shape[0] != n:
            raise InputError(f"targets must be an int, (N,) or (N, K) with N={n}; got shape {tuple(t.shape)}")
    check_target_range(t, k)
    return t


def _find_module(model: nn.Module, name: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        close = difflib.get_close_matches(name, [n for n in modules if n], n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"the model has no module named {name!r}{hint}")
    return modules[name]


def _unit_values(out: Tensor, channel: int | None, position: Sequence[int] | None) -> Tensor:
    """Reduce a layer output to ``(N, C)`` (per channel), summing or picking the spatial position."""
    if out.dim() == 2:
        return out
    if position is not None:
        idx = tuple(int(p) for p in position)
        if len(idx) != out.dim() - 2:
            raise InputError(f"position needs {out.dim() - 2} indices for a layer output of shape {tuple(out.shape)}")
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
    target: int | Sequence[int] | Tensor | str | None = None,
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
    target:
        captum's name for ``targets`` (an alias; give one of the two).

    Notes
    -----
    The model's train/eval mode, the parameters' ``requires_grad`` and ``.grad`` and the
    caller's ``images`` are left as they were; the model runs in eval mode for the call. It also
    works inside ``torch.inference_mode()`` and ``torch.no_grad()`` blocks. Images are converted to
    the model's dtype (e.g. float32 images for a ``.double()`` model).

    A ``torch.compile``'d model (``torch.compile(model)`` or ``model.compile()``) is explained through
    its compiled graphs, with the eager result: explanation mode is a flag that the compiled code
    reads, so dynamo compiles a separate graph for it, and the encoding runs between two graphs so
    that gradients reach it. ``layer=``, models with several logit layers and ``fullgraph=True`` run
    eagerly (docs/compile.md).

    Raises
    ------
    TypeError
        ``images`` not a floating-point tensor, or non-integer targets.
    ValueError
        Wrong shape or channel count, non-finite values, a target outside ``0..num_classes-1``,
        an unknown ``layer``.
    """
    targets = resolve_target_alias(targets, target)
    check_images(model, images)
    root = _uncompiled(model)  # the modules: flags, hooks and layer names live here
    forward = model
    logit_layers = [m for m in root.modules() if isinstance(m, LogitLayer)]
    compiled = _is_compiled(model)
    if compiled and (
        layer is not None
        or len(logit_layers) > 1
        or (_fullgraph(model) and any(isinstance(m, AddInverse) for m in root.modules()))
    ):
        # Hooks inside a compiled graph are not guarded (a graph traced with them is reused without
        # them) and their tensors cannot be differentiated to; fullgraph=True forbids the graph break
        # that makes the encoding differentiable. Explain such calls with the eager model.
        forward, compiled = _eager_call(model), False
    captured: dict[str, Tensor] = {}
    hooks = []

    def keep_first(key):
        def hook(_module, _inputs, output):
            captured.setdefault(key, output)

        return hook

    def keep_bias(_module, _inputs, output):
        captured["bias"] = _module.bias.detach().to(output.dtype).expand_as(output)

    if layer is not None:
        if channel is None:
            raise InputError("explaining a layer needs channel=<output channel index>")
        hooks.append(_find_module(root, layer).register_forward_hook(keep_first("layer")))
    if not compiled:  # a compiled model gets no hooks (see above): its one logit layer's bias is read below
        hooks += [m.register_forward_hook(keep_bias) for m in logit_layers]
    try:
        with explaining(root), recording_encodings(root) as encodings:

            def run() -> tuple[Tensor, Tensor]:
                """One forward pass: the logits and the tensor the weights refer to (the first encoding)."""
                x = as_model_input(root, images).clone().requires_grad_(True)
                first = len(encodings)
                out = forward(x)
                return out, (encodings[first] if len(encodings) > first else x)

            logits, source = run()
            if not isinstance(logits, Tensor) or logits.dim() != 2:
                raise InputError("explain needs a model whose output is a (N, num_classes) tensor")
            if layer is not None:
                explained = _unit_values(captured["layer"], channel, position)
                t = _normalise_targets(int(channel), logits, explained)
                bias_full = torch.zeros_like(explained)
            else:
                explained = logits
                t = _normalise_targets(targets, logits, explained)
                bias_full = _logit_bias(logit_layers[0], logits) if compiled and logit_layers else captured.get("bias")
                if bias_full is None or bias_full.shape != logits.shape:
                    bias_full = torch.zeros_like(logits)
            if not bool(torch.isfinite(explained).all()):
                raise InputError("the model produced non-finite outputs for these images")
            outputs = explained.gather(1, t if t.dim() == 2 else t[:, None])
            if compiled and outputs.shape[1] > 1:
                # A compiled backward frees its buffers (retain_graph is refused): one pass per column.
                columns = [torch.autograd.grad(outputs[:, 0].sum(), source)[0]]
                for j in range(1, outputs.shape[1]):
                    logits_j, source_j = run()
                    columns.append(torch.autograd.grad(logits_j.gather(1, t[:, j : j + 1]).sum(), source_j)[0])
                weights = torch.stack(columns, dim=1)
            else:
                weights = _input_gradients(outputs, source)
            if t.dim() == 1:
                outputs, weights = outputs[:, 0], weights[:, 0]
    finally:
        for h in hooks:
            h.remove()
    bias = bias_full.gather(1, t if t.dim() == 2 else t[:, None])
    return Explanation(
        inputs=source.detach(),
        weights=weights.detach(),
        logits=logits.detach(),
        targets=t,
        outputs=outputs.detach(),
        bias=(bias if t.dim() == 2 else bias[:, 0]).detach(),
    )


def _logit_bias(logit_layer: LogitLayer, logits: Tensor) -> Tensor | None:
    """The logit layer's bias as ``logits``' shape (None if it does not broadcast to it)."""
    try:
        return logit_layer.bias.detach().to(logits.dtype).expand_as(logits)
    except RuntimeError:
        return None


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
