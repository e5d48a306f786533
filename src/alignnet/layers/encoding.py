"""Input encoding and logit layer (docs/algorithms.md#input-encoding, docs/algorithms.md#logit-layer)."""

from __future__ import annotations

import contextlib
import contextvars
import math
import sys
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ..errors import InputError
from ._mode import switched

__all__ = ["AddInverse", "LogitLayer", "recording_encodings"]

# The encodings recorded by the AddInverse modules of the running ``recording_encodings`` block.
_RECORDED: contextvars.ContextVar[list[Tensor] | None] = contextvars.ContextVar("alignnet_encodings", default=None)


def _encode(x: Tensor, dim: int) -> Tensor:
    return torch.cat([x, 1 - x], dim=dim)


def _encode_and_record(x: Tensor, dim: int) -> Tensor:
    """``[x, 1 - x]``, recorded (see :func:`recording_encodings`)."""
    out = _encode(x, dim)
    recorded = _RECORDED.get()
    if recorded is not None:
        recorded.append(out)
    return out


# What a recording AddInverse calls: ``torch.compiler.disable(_encode_and_record)`` once the compiler is
# loaded (a model can only be compiled then), else the plain function, the same thing in eager mode:
# importing the compiler costs 1-3 s, which eager explanations do not pay.
_record_encoding = _encode_and_record


class AddInverse(nn.Module):
    """Encode images in [0, 1] as ``[x, 1 - x]`` along channels: ``(N, C, H, W) -> (N, 2C, H, W)``.

    Every pixel's vector then has the same norm, so dark pixels can carry evidence and colour
    can be decoded from the explanation.

    Inside :func:`recording_encodings` (``record`` set) the output is computed outside any compiled
    graph and recorded, so that explanations can differentiate with respect to it (docs/compile.md).
    """

    record: bool = False  # read in forward, so torch.compile guards on it

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        if self.record:
            return _record_encoding(x, self.dim)
        return _encode(x, self.dim)


class LogitLayer(nn.Module):
    """``logits = x / temperature + bias``.

    ``bias`` is a float (the papers use ``log(0.1/0.9)``, the prior of one class of ten under
    BCE) or a per-class sequence; ``learn_bias=True`` makes it a parameter (B-cos v2).

    A fixed bias is a buffer (state-dict key ``bias``, as before) kept in float64 whatever the
    module's dtype: it follows ``.to(device)``, is added in the input's dtype, and a model
    converted with ``.double()`` (even after ``.half()``) gets the exact float64 bias, not a
    float32 rounding of it. Checkpoints with a float32 ``bias`` load into it unchanged. A learned
    bias is an ordinary parameter and follows the module's dtype.
    """

    def __init__(self, temperature: float = 1.0, bias: float | Tensor = 0.0, learn_bias: bool = False) -> None:
        super().__init__()
        temperature = float(temperature)
        if not temperature > 0 or not math.isfinite(temperature):
            raise InputError(f"temperature must be a positive finite number, got {temperature}")
        self.temperature = temperature
        if learn_bias:
            self.bias = nn.Parameter(torch.as_tensor(bias, dtype=torch.get_default_dtype()).clone())
        else:
            self.register_buffer("bias", torch.as_tensor(bias, dtype=torch.float64).clone())

    def _apply(self, fn, recurse: bool = True):
        fixed = self._buffers.get("bias")
        super()._apply(fn, recurse)
        if fixed is not None and fixed.is_floating_point():
            # move with the module, but never lose the float64 value to a dtype conversion
            self._buffers["bias"] = fixed.to(device=self._buffers["bias"].device)
        return self

    def forward(self, x: Tensor) -> Tensor:
        return x / self.temperature + self.bias.to(x.dtype)

    def extra_repr(self) -> str:
        b = self.bias
        bias = f"{b.item():.4g}" if b.numel() == 1 else f"tensor{tuple(b.shape)}"
        return f"temperature={self.temperature:g}, bias={bias}"


@contextlib.contextmanager
def recording_encodings(model: nn.Module) -> Iterator[list[Tensor]]:
    """Record the output of every :class:`AddInverse` of ``model`` that runs in the block, in call order.

    Works for eager and ``torch.compile``'d models alike. A tensor computed *inside* a compiled graph
    and handed out of it (by a hook or a side effect) is just another output of the graph's single
    autograd node, so the model's output cannot be differentiated with respect to it ("The
    differentiated Tensor ... appears to not have been used in the graph"). While recording, the
    encoding therefore runs eagerly between two compiled graphs (one graph break): the recorded
    tensor is the next graph's input and gradients reach it. The forward values are the same.
    ``record`` is read in ``forward``, so a compiled model recompiles for the recording state instead
    of reusing a graph without the break. Flags are restored on exit, also on errors.
    """
    global _record_encoding
    if _record_encoding is _encode_and_record and "torch._dynamo" in sys.modules:
        _record_encoding = torch.compiler.disable(_encode_and_record)
    recorded: list[Tensor] = []
    token = _RECORDED.set(recorded)
    try:
        with switched(model, AddInverse, "record", True):
            yield recorded
    finally:
        _RECORDED.reset(token)
