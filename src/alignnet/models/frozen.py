"""Inference snapshots: :func:`freeze` moves into the weights what a trained B-cos model recomputes on every call.

A B-cos layer applies unit-norm weight rows ``w / ||w||``, and it computes them again on every call: the layers
keep no normalised copy, because a copy goes stale when the weight changes (docs/algorithms.md). At batch 1 that
read of every weight is the largest single extra cost of a B-cos forward (docs/performance.md). A model that will
only run inference can take the copy explicitly: :func:`freeze` returns a snapshot whose weights are the unit-norm
rows, with each uncentered batch norm that follows a B-cos convolution folded into them. The snapshot refuses
training and new weights, so it cannot go stale silently; change the original and freeze again.

Folding a batch norm is exact, not an approximation. In evaluation the norm multiplies channel ``o`` by the
constant ``s_o = gamma_o / sqrt(running_var_o + eps)``, and for ``b`` in {1, 2} without MaxOut the B-cos map
``f(w.x) = (w.x) |w.x|^(b-1) / ||x||^(b-1)`` is odd and homogeneous of degree ``b`` in ``w``, so
``s_o f(w_o.x) = f(sign(s_o) |s_o|^(1/b) w_o.x)``. An average pooling between the two (the ResNet stem) is linear
and per channel, so it commutes with the scale. Other ``b`` (an epsilon inside the power) and MaxOut (a negative
scale turns the maximum into a minimum) are not folded.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..layers import BatchNormUncentered2d, DynamicLinear
from ..layers.bcos import BcosConv2d, _UnitRows

__all__ = ["freeze", "is_frozen"]

_FROZEN_CLASSES: dict[type, type] = {}


class _Frozen:
    """Mixin of the snapshot's B-cos layers: the weight is applied as it is (it already holds the rows' effect)."""

    def weight_norms(self) -> None:
        return None

    def train(self, mode: bool = True):
        if mode:
            raise InputError(
                "this model was frozen by alignnet.freeze for inference (its weights hold unit-norm rows and folded "
                "batch norms): train the original model, then freeze it again"
            )
        return super().train(False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        raise InputError(
            "a model frozen by alignnet.freeze cannot load weights (its own are derived from the original's): load "
            "them into the original model, then freeze it again"
        )


def _frozen_class(cls: type) -> type:
    """``Frozen<cls>``: a subclass that is importable by name from this module (so a frozen model pickles)."""
    if cls not in _FROZEN_CLASSES:
        name = f"Frozen{cls.__name__}"
        frozen = type(name, (_Frozen, cls), {"__module__": __name__, "__qualname__": name})
        globals()[name] = frozen
        _FROZEN_CLASSES[cls] = frozen
    return _FROZEN_CLASSES[cls]


def is_frozen(model: nn.Module) -> bool:
    """Whether ``model`` (or any of its modules) is a snapshot made by :func:`freeze`."""
    return any(isinstance(m, _Frozen) for m in model.modules())


def freeze(model: nn.Module, example: Tensor | None = None) -> nn.Module:
    """A copy of ``model`` for inference: the same logits and explanations, with less work per call.

    In the copy every B-cos layer's weight holds its unit-norm rows ``w / ||w||`` (nothing is recomputed from
    the weights per call), and every uncentered batch norm that directly follows a B-cos convolution with
    ``b`` 1 or 2 and no MaxOut (also through an average pooling) is folded into that convolution's rows and
    removed (module docstring). ``model`` itself is not changed.

    The copy is a snapshot: its parameters need no gradients, and it refuses train mode, ``load_state_dict``
    and :func:`alignnet.save_model` with an error (change or save the original, then freeze again).

    Parameters
    ----------
    model:
        An alignnet model (eager, not ``torch.compile``'d: compile the frozen copy instead).
    example:
        A batch the model accepts, used to find which batch norms follow which convolution and to check the
        copy's logits against the original's (to 1e-4 of their largest magnitude). Default: two random images
        of the model's ``input_spec``.

    Raises
    ------
    ValueError
        A compiled model, or no ``example`` for a model without ``input_spec``.
    RuntimeError
        The copy's logits differ from the original's (never expected: it is a bug to report).
    """
    if hasattr(model, "_orig_mod") or getattr(model, "_compiled_call_impl", None) is not None:
        raise InputError("freeze the eager model, then compile the frozen copy: torch.compile(alignnet.freeze(model))")
    example = _example(model, example)
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    for m in frozen.modules():
        if isinstance(m, DynamicLinear):
            m.detach = False  # frozen inside explanation_mode(model): the copy starts in normal mode
    folds = _batch_norms_after_convolutions(frozen, example)
    parents = {child: (parent, name) for parent in frozen.modules() for name, child in parent.named_children()}
    with torch.no_grad():
        for layer in [m for m in frozen.modules() if isinstance(m, _UnitRows)]:
            weight = layer.normalized_weight().clone()
            norm = folds.get(layer)
            if norm is not None:
                scale = norm.running_var.add(norm.eps).rsqrt()
                if norm.weight is not None:
                    scale = scale * norm.weight
                factor = scale.sign() * scale.abs().pow(1.0 / layer.b)
                weight = weight * factor.to(weight.dtype).view(-1, *([1] * (weight.dim() - 1)))
                parent, name = parents[norm]
                setattr(parent, name, nn.Identity())
            layer.weight = nn.Parameter(weight, requires_grad=False)
            layer.__class__ = _frozen_class(type(layer))
        _check_same_outputs(model, frozen, example)
    return frozen


def _example(model: nn.Module, example: Tensor | None) -> Tensor:
    if example is not None:
        if not isinstance(example, Tensor) or not example.is_floating_point():
            raise InputError("example must be a floating-point tensor batch the model accepts")
        return example
    spec = getattr(model, "input_spec", None)
    if spec is None:
        raise InputError("this model has no input_spec: pass example=<a batch it accepts> to alignnet.freeze")
    return spec_example(model, spec)


def spec_example(model: nn.Module, spec) -> Tensor:
    """Two seeded random images of ``spec`` (an :class:`~alignnet.models.InputSpec`) in the model's dtype and device:
    the batch :func:`freeze` checks the copy with when given none."""
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    device = param.device if param is not None else torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    return torch.rand(2, spec.channels, *spec.size, generator=generator, dtype=dtype).to(device)


def _foldable(layer: nn.Module) -> bool:
    return isinstance(layer, BcosConv2d) and layer.max_out == 1 and layer.b in (1.0, 2.0)


def _batch_norms_after_convolutions(model: nn.Module, example: Tensor) -> dict[nn.Module, BatchNormUncentered2d]:
    """``{convolution: batch norm}`` for every uncentered batch norm whose input is a foldable B-cos convolution's
    output, directly or through one average pooling, where nothing else uses that output.

    ``example`` runs once with forward hooks and an input that needs gradients: the autograd graph then names
    the operation that made each tensor and every operation that read it, including functional ones that no
    hook sees (a DenseNet concatenates a transition's pooled output with the features its next layer computes
    from it: that norm is not folded).
    """
    made_by: dict[tuple[int, int], nn.Module] = {}  # (graph node, output index) -> the module whose output it is
    input_of: dict[nn.Module, list[tuple[int, int] | None]] = {}
    kept: list[Tensor] = []  # every recorded tensor stays alive, so no graph node is freed and its id reused

    def node(t: Tensor) -> tuple[int, int] | None:
        return None if t.grad_fn is None else (id(t.grad_fn), t.output_nr)

    def hook(module, args, output):
        tensors = [a for a in args if isinstance(a, Tensor)]
        kept.extend(tensors)
        input_of.setdefault(module, []).extend(node(t) for t in tensors)
        if isinstance(output, Tensor) and output.grad_fn is not None:
            kept.append(output)
            made_by[node(output)] = module

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.enable_grad():
            out = model(example.detach().clone().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    readers = _count_readers(out)

    def only_reader_of(key: tuple[int, int] | None) -> nn.Module | None:
        return made_by.get(key) if key is not None and readers.get(key, 0) == 1 else None

    folds: dict[nn.Module, BatchNormUncentered2d] = {}
    for norm in [m for m in leaves if isinstance(m, BatchNormUncentered2d)]:
        if norm.training or norm.running_var is None or len(input_of.get(norm, [])) != 1:
            continue  # training statistics, or a norm called more than once
        source = only_reader_of(input_of[norm][0])
        if isinstance(source, nn.AvgPool2d) and len(input_of.get(source, [])) == 1:
            source = only_reader_of(input_of[source][0])
        if source is not None and _foldable(source) and source not in folds and len(input_of.get(source, [])) == 1:
            folds[source] = norm
    kept.clear()
    return folds


def _count_readers(out: Tensor) -> dict[tuple[int, int], int]:
    """How many operations of ``out``'s autograd graph read each ``(node, output index)``."""
    counts: dict[tuple[int, int], int] = {}
    seen: set[int] = set()
    stack = [out.grad_fn] if out.grad_fn is not None else []
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        for parent, index in fn.next_functions:
            if parent is not None:
                counts[(id(parent), index)] = counts.get((id(parent), index), 0) + 1
                stack.append(parent)
    return counts


def _check_same_outputs(model: nn.Module, frozen: nn.Module, example: Tensor) -> None:
    was_training = model.training
    model.eval()
    try:
        expected = model(example)
    finally:
        model.train(was_training)
    got = frozen(example)
    tolerance = 1e-4 * max(float(expected.abs().max()), torch.finfo(expected.dtype).tiny)
    error = float((got - expected).abs().max())
    if not error <= tolerance:
        raise RuntimeError(
            f"alignnet.freeze: the frozen copy's logits differ from the model's by {error:.3g} (tolerance "
            f"{tolerance:.3g}); this is a bug, please report it with the model's name"
        )
