"""B-cos layers (docs/algorithms.md#b-cos-layer).

``f(x) = |cos(x, w_hat)|^(B-1) * (w_hat . x)`` with unit-norm weights ``w_hat``. For
convolutions ``||x||`` is the L2 norm of each receptive-field patch over all input channels
of the group, computed with an average pool of the squared input ("pooling trick") instead of
unfolding the patches.

Given the same ``weight``, the outputs equal those of the ``bcos`` package's layers with the same
arguments (its ``BcosConv2d``/``BcosLinear``, or ``BcosConv2dWithScale`` when ``scale`` is set);
the only difference in the state dict is that ``bcos`` stores the weight as ``linear.weight``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from ..errors import InputError
from ._mode import DynamicLinear, _autograd_needs, _capturing_graph, _compiling, _functorch

__all__ = ["BcosConv2d", "BcosLinear", "v1_scale", "patch_norms"]

_NORM_EPS = 1e-6  # inside the patch-norm square root (as in the bcos package)
_COS_EPS = 1e-6  # added to |cos| for B != 2, keeps pow() differentiable at 0 (as in bcos)


def v1_scale(kernel_size: int | tuple[int, int], in_channels: int, factor: float = 100.0) -> float:
    """The B-cos v1 output down-scale ``sqrt(k*k*C_in) / 100`` (docs/algorithms.md#output-scale)."""
    kh, kw = _pair(kernel_size)
    return math.sqrt(kh * kw * in_channels) / factor


def _resolve_scale(scale: float | str | None, kernel_size, in_channels: int) -> float | None:
    if scale is None:
        return None
    if isinstance(scale, str):
        if scale != "v1":
            raise InputError(f"scale must be a positive number, None or 'v1', got {scale!r}")
        return v1_scale(kernel_size, in_channels)
    scale = float(scale)
    if not scale > 0 or not math.isfinite(scale):
        raise InputError(f"scale must be a positive finite number, got {scale}")
    return scale


def _check_b_maxout(b: float, max_out: int) -> tuple[float, int]:
    b = float(b)
    if not b >= 1 or not math.isfinite(b):
        raise InputError(f"b must be a finite number >= 1 (b=1 is a plain linear layer), got {b}")
    if int(max_out) != max_out or max_out < 1:
        raise InputError(f"max_out must be an integer >= 1, got {max_out}")
    return b, int(max_out)


def patch_norms(
    x: Tensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
) -> Tensor:
    """L2 norm of every convolution patch, per group: ``(N, C, H, W) -> (N, groups, H', W')``.

    ``sqrt(k*k * avg_pool(sum_c x^2) + 1e-6)``; zero padding counts in the mean, so this is the
    norm of the zero-padded patch exactly as the convolution sees it. Half-precision inputs
    (float16, bfloat16) are squared and pooled in float32: the squares of float16 activations
    above 256 overflow, and the result is returned in the input's dtype.
    """
    kh, kw = _pair(kernel_size)
    xs = x.float() if x.dtype in _LOW_PRECISION else x
    squares = xs * xs
    squares = squares.unflatten(1, (groups, -1)).sum(2) if groups > 1 else squares.sum(1, keepdim=True)
    if (kh, kw) == (1, 1) and _pair(padding) == (0, 0):
        sums = squares[..., :: _pair(stride)[0], :: _pair(stride)[1]]  # a 1x1 patch is one position
    elif _box_matmul_pays(squares):
        sums = _box_sums(squares, (kh, kw), _pair(stride), _pair(padding))
    else:  # sum pooling: the average times k*k
        sums = F.avg_pool2d(squares, (kh, kw), stride=stride, padding=padding, divisor_override=1)
    if _autograd_needs(sums):
        return (sums + _NORM_EPS).sqrt().to(x.dtype)
    return sums.add_(_NORM_EPS).sqrt_().to(x.dtype)


_LOW_PRECISION = (torch.float16, torch.bfloat16)

# From this map size on (H*W) a CPU sums patches with two matrix products instead of avg_pool2d: the CPU
# pooling kernel is slow on the one-channel maps of squared norms (6x slower on the 224x224 stem at batch 8).
_BOX_MATMUL_MIN_PIXELS = 32 * 32


def _box_matmul_pays(squares: Tensor) -> bool:
    if squares.device.type != "cpu" or _capturing_graph():
        return False  # compiled: inductor generates its own pooling kernel; traced: no shape-bound constants
    return squares.shape[-2] * squares.shape[-1] >= _BOX_MATMUL_MIN_PIXELS


def _out_len(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution (or pooling) along one dimension."""
    return (size + 2 * padding - kernel) // stride + 1


@functools.lru_cache(maxsize=64)
def _box_matrix(size: int, k: int, stride: int, padding: int, dtype: torch.dtype) -> Tensor:
    """``(out, size)`` CPU matrix of ones where output position ``i`` covers input ``j`` (zero padding drops out).

    A constant of its arguments (never written to), so it is built once per shape."""
    start = torch.arange(_out_len(size, k, stride, padding))[:, None] * stride - padding
    j = torch.arange(size)[None]
    return ((j >= start) & (j < start + k)).to(dtype)


def _box_sums(sums: Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]) -> Tensor:
    """Sum over every zero-padded ``kernel`` window of ``(N, G, H, W)``: ``B_h @ sums @ B_w^T`` with 0/1 band matrices.

    Equal to ``avg_pool2d(..., divisor_override=1)`` up to the order of the additions. torch has no box-sum
    kernel of its own that is fast on one-channel CPU maps (avg_pool2d parallelises over channels).
    """
    rows = _box_matrix(sums.shape[-2], kernel[0], stride[0], padding[0], sums.dtype)
    cols = _box_matrix(sums.shape[-1], kernel[1], stride[1], padding[1], sums.dtype)
    return torch.matmul(torch.matmul(rows, sums), cols.t())


def _vector_norms(x: Tensor, eps: float = 1e-12) -> Tensor:
    """``||x||`` over the last dimension (keepdim), accumulated in float32 for half-precision inputs."""
    if x.dtype in _LOW_PRECISION:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32) + eps
        return norm.clamp_min(torch.finfo(x.dtype).tiny).to(x.dtype)
    return torch.linalg.vector_norm(x, dim=-1, keepdim=True) + eps


class _BcosScaling(torch.autograd.Function):
    """``out = lin * (|lin| / norm)^(B-1)`` with a hand-written backward.

    Autograd of the elementwise chain would keep three or four output-sized tensors alive for the
    backward pass (``lin``, ``|lin|``, the quotient, the power); this keeps only ``lin`` and
    ``norm`` and recomputes the rest, which on CPU also saves passes over memory. In explanation
    mode (``detach``) the factor is a constant and only ``d out / d lin = factor`` flows back.

    ``forward`` + ``setup_context`` (not a ``ctx`` argument) and ``generate_vmap_rule`` make the
    function work under ``torch.func`` (``grad``, ``vmap``, ``jacrev``); the backward is built from
    differentiable tensor operations, so double backward works too (``gradgradcheck`` in the tests).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(lin: Tensor, norm: Tensor, b: float, detach: bool) -> Tensor:
        return lin * _dynamic_factor(lin, norm, b)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        lin, norm, b, detach = inputs
        ctx.save_for_backward(lin, norm)
        ctx.b, ctx.detach = b, detach

    @staticmethod
    def backward(ctx, grad: Tensor):
        lin, norm = ctx.saved_tensors
        b = ctx.b
        if b == 2:  # out = lin |lin| / norm: d/dlin = 2 |lin| / norm, d/dnorm = -out / norm
            g_q = grad * (lin.abs() / norm)  # grad times the factor |cos|
            if ctx.detach:
                return g_q, None, None, None
            grad_lin = 2 * g_q
            grad_norm = -(g_q * lin) / norm
        else:
            q = lin.abs() / norm
            c = q + _COS_EPS
            grad_lin = grad * c.pow(b - 1)
            if ctx.detach:
                return grad_lin, None, None, None
            # q = |lin| / norm: dq/dlin = sign(lin) / norm, dq/dnorm = -q / norm
            d_q = grad * lin * (b - 1) * c.pow(b - 2)
            grad_lin = grad_lin + d_q * lin.sign() / norm
            grad_norm = -(d_q * q / norm)
        if grad_norm.shape != norm.shape:  # norm is broadcast over the output channels
            grad_norm = grad_norm.sum_to_size(norm.shape)
        return grad_lin, grad_norm, None, None


def _dynamic_factor(lin: Tensor, norm: Tensor, b: float) -> Tensor:
    if b == 2:  # fast path: |cos| * (w.x) = |w.x| / ||x|| * (w.x), no pow()
        return lin.abs() / norm
    return ((lin / norm).abs() + _COS_EPS).pow(b - 1)


def _max_out(units: Tensor, dim: int) -> Tensor:
    """Maximum over the MaxOut units in ``dim``.

    ``max().values`` also computes the indices, which makes it ~10x slower than ``amax`` on a CPU,
    but its backward (a scatter through the indices) is much faster than ``amax``'s (a comparison
    mask and tie counting): use ``amax`` when no gradient will flow, ``max`` otherwise.
    """
    if torch.is_grad_enabled() and units.requires_grad:
        return units.max(dim=dim).values
    return units.amax(dim=dim)


def _bcos_scaling(
    linear: Tensor, norm: Tensor, b: float, detach: bool, rows: Tensor | None = None, rows_dim: int = 1
) -> Tensor:
    """Apply ``|cos|^(B-1)`` to the linear output; the factor is detached in explanation mode.

    ``rows``: the weight's row norms when ``linear`` is still the raw weight's output (a layer passes them only
    for ``B = 2`` without MaxOut in explanation mode, see :func:`_rows_into_factor`). Where the factor is a
    detached constant they go into it: ``(lin / r) |lin / r| / n = lin * (|lin| / (n r^2))``, so the backward
    multiplies once instead of multiplying and dividing; on every other path ``linear`` is divided first.
    """
    if torch.jit.is_scripting() or _compiling():
        # TorchScript cannot call a Python autograd.Function; a compiler sees (and fuses) the plain elementwise ops
        if rows is not None:
            linear = _divide_rows(linear, rows, rows_dim)
        factor = _dynamic_factor(linear.detach() if detach else linear, norm.detach() if detach else norm, b)
        return factor * linear
    if norm.dtype != linear.dtype:  # autocast: the convolution ran in a lower precision than the norms
        norm = norm.to(linear.dtype)
    explaining = detach and not (norm.requires_grad or linear.is_leaf or linear._is_view() or _functorch())
    if rows is not None and not (explaining and b == 2 and not rows.requires_grad and _autograd_needs(linear, norm)):
        linear, rows = _divide_rows(linear, rows, rows_dim), None
    if not _autograd_needs(linear, norm):
        # Inference: one temporary instead of three. ``linear`` is the layer's own fresh output, so
        # it may be overwritten (CPU tensors come from malloc, not a caching allocator, and every
        # new activation-sized tensor costs page faults: about 5% of a B-cos ResNet's forward).
        return _scale_in_place(linear, norm, b)
    if explaining:
        # Explanation mode: the factor is a constant, so autograd's in-place product saves just the
        # factor and its backward is one multiplication (the autograd.Function would recompute it).
        factor = _factor_in_place(linear.detach(), norm, b)
        if rows is not None:
            factor = _divide_rows(factor, rows.square(), rows_dim)  # in place: the factor is a fresh tensor
        return linear.mul_(factor)
    return _BcosScaling.apply(linear, norm, b, detach)


def _rows_into_factor(norms: Tensor | None, b: float, max_out: int, detach: bool) -> bool:
    """Whether a layer may leave dividing by its row norms to :func:`_bcos_scaling` (which decides for itself
    whether it folds them into the factor or divides first): ``B = 2``, no MaxOut (the maximum must compare the
    divided units), explanation mode."""
    return norms is not None and b == 2 and max_out == 1 and detach


# Elements per piece of the in-place scaling on a CPU: a piece's temporary (the factor) then stays in the cache
# instead of being a fresh output-sized allocation (page faults, and three passes through main memory): about 4x
# faster on a (8, 256, 56, 56) output.
_CHUNK_ELEMENTS = 1 << 18


def _scale_in_place(linear: Tensor, norm: Tensor, b: float) -> Tensor:
    """``linear *= factor(linear, norm)`` without autograd, piece by piece for large CPU feature maps."""
    small = linear.dim() not in (3, 4) or linear.numel() <= 2 * _CHUNK_ELEMENTS
    if small or linear.device.type != "cpu" or torch.jit.is_tracing():  # a trace must not unroll the batch
        return linear.mul_(_factor_in_place(linear, norm, b))
    channels, plane = linear.shape[1], linear[0, 0].numel()
    step = max(1, _CHUNK_ELEMENTS // plane)
    for out_i, norm_i in zip(linear, norm.expand(linear.shape[0], *norm.shape[1:]), strict=True):
        for start in range(0, channels, step):
            part = out_i[start : start + step]
            part.mul_(_factor_in_place(part, norm_i if norm_i.shape[0] == 1 else norm_i[start : start + step], b))
    return linear


def _factor_in_place(linear: Tensor, norm: Tensor, b: float) -> Tensor:
    """``_dynamic_factor`` in one new tensor (``linear`` and ``norm`` are only read)."""
    if b == 2:
        return linear.abs().div_(norm)
    return linear.div(norm).abs_().add_(_COS_EPS).pow_(b - 1)


def _divide_rows(out: Tensor, norms: Tensor | None, dim: int) -> Tensor:
    """``out / norms`` along ``dim`` (the output channels): the linear map with unit-norm weight rows.

    Dividing the output of the raw weight by its row norms equals using ``w / ||w||`` as the weight,
    but builds no normalised copy of the weight: nothing is cached, so nothing can go stale (an edit
    through ``weight.data``, a tied or pruned weight, ``.to()``), and the convolution always sees the
    parameter itself. The division is in place when autograd does not need the undivided output.
    """
    if norms is None:
        return out
    norms = norms.to(out.dtype)  # autocast: the convolution ran in a lower precision than the weight
    shape = [1] * out.dim()
    shape[dim] = -1
    norms = norms.view(shape)
    if norms.requires_grad or torch.jit.is_scripting() or _compiling() or _functorch():
        return out / norms
    return out.div_(norms)  # autograd's division by a constant does not need the undivided output


def _weight_row_norms(w: Tensor) -> Tensor:
    """``||w_o||`` of every output row ``o`` (shape ``(O,)``), accumulated in float32 for half precision."""
    flat = w.flatten(1)
    if flat.dtype in _LOW_PRECISION:
        return torch.linalg.vector_norm(flat, dim=1, dtype=torch.float32)
    return torch.linalg.vector_norm(flat, dim=1)


# From this many output positions per image on, a CPU computes a 1x1 convolution faster as a matrix product.
_POINTWISE_MATMUL_MIN_POSITIONS = 14 * 14


def _pointwise_matmul_pays(
    x: Tensor, weight: Tensor, kernel: tuple[int, int], stride: tuple[int, int], padding, groups: int
) -> bool:
    """Whether this convolution is a 1x1 one that a CPU computes faster as ``W @ x`` (see :func:`_pointwise_conv`):
    inference and explanations, not training (the weight gradient of a batched product goes through one
    weight-sized tensor per image: +300 MiB at the peak of a ResNet-50 forward + backward at batch 8)."""
    if kernel != (1, 1) or _pair(padding) != (0, 0) or groups != 1 or _autograd_needs(weight):
        return False
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or not x.is_contiguous():
        return False
    if _capturing_graph():
        return False  # a compiler or a trace sees the convolution itself
    positions = _out_len(x.shape[2], 1, stride[0]) * _out_len(x.shape[3], 1, stride[1])
    # one image: always (one matrix product); a batch of small maps: oneDNN's batched kernel is faster
    return x.shape[0] == 1 or positions >= _POINTWISE_MATMUL_MIN_POSITIONS


def _pointwise_conv(x: Tensor, weight: Tensor, stride: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
    """A 1x1 convolution as one matrix product per image: ``(N, O, H'*W')`` and ``(H', W')``.

    On a CPU oneDNN reorders the weight into its blocked layout on every call and its backward-data kernel for
    1x1 convolutions is slow on large maps (strided ones especially); MKL's ``W @ x`` reads the weight as it is
    and its backward is again a matrix product. B-cos ResNet-50's 1x1 layers in isolation at batch 1: 38 ms
    become 27 ms; the input gradients of all its convolutions at batch 8: 561 ms become 464
    (benchmarks/RESULTS.md). The output stays 3-D until the layer returns, so that the B-cos scaling works on a
    tensor of its own, not on a view (docs/performance.md).
    """
    if stride != (1, 1):
        x = x[:, :, :: stride[0], :: stride[1]]
    size = (x.shape[2], x.shape[3])
    return torch.matmul(weight.reshape(weight.shape[0], -1), x.reshape(x.shape[0], x.shape[1], -1)), size


class _UnitRows(DynamicLinear):
    """A layer whose weight rows act with unit norm: ``w / ||w||`` is never materialised (see
    :func:`_divide_rows`); :meth:`normalized_weight` computes it for inspection."""

    def weight_norms(self) -> Tensor | None:
        """The divisors of the output channels (the weight's row norms), or None for none."""
        return _weight_row_norms(self.weight)

    def normalized_weight(self) -> Tensor:
        """The weight the layer effectively applies: unit-norm rows ``w / ||w||``."""
        norms = self.weight_norms()
        if norms is None:
            return self.weight
        return self.weight / norms.to(self.weight.dtype).view(-1, *([1] * (self.weight.dim() - 1)))


class BcosConv2d(_UnitRows):
    """B-cos 2D convolution.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, groups:
        As for :class:`torch.nn.Conv2d` (no bias, no dilation).
    b:
        Alignment pressure ``B >= 1``; ``b=1`` is a unit-norm linear convolution.
    max_out:
        MaxOut units per output channel (v1 used 2); ``weight`` has ``out*max_out`` rows.
    scale:
        Divide the output by this number; ``None`` for none, ``"v1"`` for ``sqrt(k*k*C_in)/100``.

    Notes
    -----
    Shapes: ``(N, in_channels, H, W) -> (N, out_channels, H', W')``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        groups: int = 1,
        b: float = 2.0,
        max_out: int = 1,
        scale: float | str | None = None,
    ) -> None:
        super().__init__()
        self.b, self.max_out = _check_b_maxout(b, max_out)
        if in_channels % groups or out_channels % groups:
            raise InputError(
                f"in_channels ({in_channels}) and out_channels ({out_channels}) must be divisible by groups ({groups})"
            )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        self.scale = _resolve_scale(scale, kernel_size, in_channels)
        # Same shape and initialisation as nn.Conv2d's weight (out*max_out first).
        conv = nn.Conv2d(in_channels, out_channels * self.max_out, kernel_size, groups=groups, bias=False)
        self.weight = nn.Parameter(conv.weight.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputError(f"{type(self).__name__} expects input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        norms = self.weight_norms()
        weight = self.weight
        weight_first = norms is not None and self._normalise_weight_first(x)
        if weight_first:
            weight = weight / norms.to(weight.dtype).view(-1, 1, 1, 1)
        pointwise = _pointwise_matmul_pays(x, weight, self.kernel_size, self.stride, self.padding, self.groups)
        if pointwise:  # (N, O, H'*W'), back to (N, O, H', W') at the end
            out, out_size = _pointwise_conv(x, weight, self.stride)
        else:
            out = F.conv2d(x, weight, None, self.stride, self.padding, 1, self.groups)
        deferred = not weight_first and _rows_into_factor(norms, self.b, self.max_out, self.detach)
        if not weight_first and not deferred:
            out = _divide_rows(out, norms, 1)
        if self.max_out > 1:
            out = _max_out(out.unflatten(1, (self.out_channels, self.max_out)), 2)
        if self.b != 1:
            # explanation mode detaches the norms: computing them from x.detach() records no graph
            norm = patch_norms(
                x.detach() if self.detach else x, self.kernel_size, self.stride, self.padding, self.groups
            )
            if self.groups > 1:
                norm = norm.repeat_interleave(self.out_channels // self.groups, dim=1)
            norm = norm.flatten(2) if pointwise else norm
            out = _bcos_scaling(out, norm, self.b, self.detach, rows=norms if deferred else None)
        if self.scale is not None:
            out = out / self.scale
        return out.unflatten(2, out_size) if pointwise else out

    def _normalise_weight_first(self, x: Tensor) -> bool:
        """Whether scaling the weight's rows costs less than dividing the output's channels: fewer weights per
        output channel (``C_in/groups * k*k``) than output positions (``N * H' * W'``). Both are the same map."""
        if _capturing_graph():
            return False  # one program for every shape; the compiler fuses the division into the next ops
        if _autograd_needs(x, self.weight):
            return False  # autograd would keep the scaled copy of the weight for the backward: more memory
        kh, kw = self.kernel_size
        h = _out_len(x.shape[2], kh, self.stride[0], self.padding[0])
        w = _out_len(x.shape[3], kw, self.stride[1], self.padding[1])
        return self.in_channels // self.groups * kh * kw < x.shape[0] * h * w

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, b={self.b:g}"
        )
        if self.groups > 1:
            s += f", groups={self.groups}"
        if self.max_out > 1:
            s += f", max_out={self.max_out}"
        if self.scale is not None:
            s += f", scale={self.scale:.4g}"
        return s


class BcosLinear(_UnitRows):
    """B-cos linear layer: ``(*, in_features) -> (*, out_features)``; arguments as :class:`BcosConv2d`."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        b: float = 2.0,
        max_out: int = 1,
        scale: float | str | None = None,
    ) -> None:
        super().__init__()
        self.b, self.max_out = _check_b_maxout(b, max_out)
        self.in_features, self.out_features = in_features, out_features
        self.scale = _resolve_scale(scale, 1, in_features)
        lin = nn.Linear(in_features, out_features * self.max_out, bias=False)
        self.weight = nn.Parameter(lin.weight.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise InputError(f"{type(self).__name__} expects input (..., {self.in_features}), got {tuple(x.shape)}")
        out = F.linear(x, self.weight)
        norms = self.weight_norms()
        deferred = _rows_into_factor(norms, self.b, self.max_out, self.detach)
        if not deferred:
            out = _divide_rows(out, norms, -1)
        if self.max_out > 1:
            out = _max_out(out.unflatten(-1, (self.out_features, self.max_out)), -1)
        if self.b != 1:
            norm = _vector_norms(x.detach() if self.detach else x)
            out = _bcos_scaling(out, norm, self.b, self.detach, rows=norms if deferred else None, rows_dim=-1)
        return out if self.scale is None else out / self.scale

    def extra_repr(self) -> str:
        s = f"{self.in_features}, {self.out_features}, b={self.b:g}"
        if self.max_out > 1:
            s += f", max_out={self.max_out}"
        if self.scale is not None:
            s += f", scale={self.scale:.4g}"
        return s
