"""The explanation-mode switch shared by every dynamic layer (docs/algorithms.md#explanation-mode).

A dynamic-linear layer computes ``out = W(x) x``. In explanation mode the input-dependent
factor ``W(x)`` is detached from the autograd graph, so the gradient of an output with respect
to the input *is* the row of ``W_total(x)`` and ``contributions = W_total(x) * x`` sum exactly
to the output.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn

__all__ = ["DynamicLinear", "eval_mode", "explanation_mode", "non_detachable_modules"]


class DynamicLinear(nn.Module):
    """Base class of layers whose dynamic factors can be detached.

    Subclasses read ``self.detach`` in ``forward`` and call ``.detach()`` on every factor that
    depends on the input (cosine scale, patch norms, predicted weights, norm statistics).
    """

    detach: bool = False


# When the layers may take eager shortcuts (in-place products, shape-specific fast paths): one place for the
# questions every layer asks.
def _functorch() -> bool:
    """Inside a torch.func transform (grad, vmap, jacrev): tensors may be wrapped, no in-place shortcuts."""
    return torch._C._functorch.peek_interpreter_stack() is not None


def _compiling() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)  # torch >= 2.3
    return bool(is_compiling is not None and is_compiling())


def _capturing_graph() -> bool:
    """Recording one program for later calls (torch.compile, TorchScript, a trace): no shape- or device-specific
    eager paths, which the program would bake in or the compiler could not see through."""
    return _compiling() or torch.jit.is_scripting() or torch.jit.is_tracing()


def _autograd_needs(*tensors: Tensor | None) -> bool:
    """Whether autograd or a torch.func transform may need these tensors' values later (then no in-place ops);
    ``None`` entries (an absent weight) are skipped."""
    if _functorch():
        return True
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


# Modules that are not dynamic-linear and cannot be made so by detaching: with them in the
# network, ``sum(contributions) + bias == logit`` need not hold (the paper models have none).
_NON_LINEAR = (
    nn.Sigmoid,
    nn.Tanh,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.Softplus,
    nn.Softmax,
    nn.LogSoftmax,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.InstanceNorm2d,
    nn.MultiheadAttention,
    nn.LocalResponseNorm,
)


def non_detachable_modules(model: nn.Module) -> list[str]:
    """Names of submodules that break the dynamic-linear property.

    These are non-linear modules with no detachable form, and plain convolutions / linear
    layers / batch norms with a bias, whose bias is not attributed to any input pixel.
    """
    found = []
    inside = {id(sub) for m in model.modules() if isinstance(m, DynamicLinear) for sub in m.modules()}
    for name, module in model.named_modules():
        if id(module) in inside:  # dynamic layers and the parameter holders inside them
            continue
        if isinstance(module, _NON_LINEAR):
            found.append(f"{name or '<model>'} ({type(module).__name__})")
        elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            if module.bias is not None and bool(module.bias.detach().abs().max() > 0):
                found.append(f"{name} ({type(module).__name__} with bias)")
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            found.append(f"{name} ({type(module).__name__}: affine with a mean shift)")
    return found


@contextlib.contextmanager
def explanation_mode(model: nn.Module, warn: bool = True) -> Iterator[nn.Module]:
    """Detach every dynamic factor of ``model`` while the block runs.

    Each layer's previous flag is saved and put back on exit, also when the block raises,
    so nested uses restore correctly and the caller's model is never left modified.

    Parameters
    ----------
    model:
        Any module; its :class:`DynamicLinear` submodules are switched.
    warn:
        Warn (once per call) about submodules that cannot be detached, since completeness
        need not hold for such a network.
    """
    if warn:
        bad = non_detachable_modules(model)
        if bad:
            warnings.warn(
                "explanation mode cannot make these modules dynamic-linear, so contributions "
                "need not sum to the logit: " + ", ".join(bad[:8]) + (" ..." if len(bad) > 8 else ""),
                stacklevel=3,
            )
    with switched(model, DynamicLinear, "detach", True):
        yield model


@contextlib.contextmanager
def switched(model: nn.Module, kind: type, flag: str, value: object) -> Iterator[None]:
    """Set ``flag`` to ``value`` on every ``kind`` submodule of ``model`` while the block runs; each module's
    previous value is put back on exit (in reverse order, so nested uses restore correctly), also on errors."""
    saved = [(m, getattr(m, flag)) for m in model.modules() if isinstance(m, kind)]
    try:
        for m, _ in saved:
            setattr(m, flag, value)
        yield
    finally:
        for m, previous in reversed(saved):
            setattr(m, flag, previous)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with ``model`` in eval mode; every submodule's train/eval flag is put back on
    exit, also when the block raises."""
    saved = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in saved:
            m.training = mode
