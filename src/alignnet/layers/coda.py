"""CoDA-Net Dynamic Alignment Units (docs/algorithms.md#coda-dynamic-alignment-unit).

Each output channel's weight vector is predicted from its input patch ``x`` (length
``D = C_in*k*k``) by a low-rank map, ``w_o(x) = U_o h(x) + b_o`` with ``h = W1 x`` (a k x k conv to
``rank`` channels, no bias) and ``U, b`` a 1x1 conv ``rank -> C_out*D`` (with bias). The vector is
normalised (squashing ``w * ||w|| / (1 + ||w||^2)`` or L2) and the output is ``w_o(x)_norm . x``.

Memory: the per-position weights ``(N, C_out, D, H', W')`` are never formed. The output and the
norm are both computed in the rank space,
``w_o . x = h . (U_o^T x) + b_o . x`` (one convolution to ``C_out*rank`` channels) and
``||w_o||^2 = h^T (U_o^T U_o) h + 2 (U_o^T b_o) . h + ||b_o||^2`` (Gram matrices of size
``C_out*rank*rank``), so the largest tensor is ``(N, C_out*rank, H', W')``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from ..errors import InputError
from ._mode import DynamicLinear

__all__ = ["DAUConv2d"]

_EPS = 1e-12


class DAUConv2d(DynamicLinear):
    """Dynamic Alignment Unit convolution.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding:
        As for :class:`torch.nn.Conv2d`.
    rank:
        Rank of the weight-predicting map.
    norm:
        ``"squash"`` (norm of the weights bounded by 1) or ``"l2"`` (unit norm).

    Notes
    -----
    Parameters of the module: ``rank_proj.weight`` ``(rank, C_in, k, k)`` and
    ``weight_proj.weight/bias`` ``(C_out*C_in*k*k, rank, 1, 1)`` / ``(C_out*C_in*k*k,)``,
    the two convolutions of the paper.
    Shapes: ``(N, C_in, H, W) -> (N, C_out, H', W')``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        rank: int,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        norm: str = "squash",
    ) -> None:
        super().__init__()
        if norm not in ("squash", "l2"):
            raise InputError(f"norm must be 'squash' or 'l2', got {norm!r}")
        if rank < 1:
            raise InputError(f"rank must be >= 1, got {rank}")
        self.in_channels, self.out_channels, self.rank, self.norm = in_channels, out_channels, rank, norm
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        kh, kw = self.kernel_size
        self.patch_dim = in_channels * kh * kw
        self.rank_proj = nn.Conv2d(in_channels, rank, kernel_size, stride, padding, bias=False)
        self.weight_proj = nn.Conv2d(rank, out_channels * self.patch_dim, 1, bias=True)

    def _factors(self) -> tuple[Tensor, Tensor]:
        """``U`` as ``(C_out, D, rank)`` and ``b`` as ``(C_out, D)``."""
        u = self.weight_proj.weight.view(self.out_channels, self.patch_dim, self.rank)
        b = self.weight_proj.bias.view(self.out_channels, self.patch_dim)
        return u, b

    def dynamic_weights(self, x: Tensor) -> Tensor:
        """The normalised per-position weights ``(N, C_out, C_in, k, k, H', W')``.

        Materialises everything; meant for inspection and tests, not for the forward pass.
        """
        u, b = self._factors()
        h = self.rank_proj(x)  # (N, r, H', W')
        w = torch.einsum("odr,nrhw->nodhw", u, h) + b[None, :, :, None, None]
        n = torch.linalg.vector_norm(w, dim=2, keepdim=True)
        w = w * self._norm_factor(n)
        return w.unflatten(2, (self.in_channels, *self.kernel_size))

    def _norm_factor(self, n: Tensor) -> Tensor:
        """Multiplier that normalises a vector of norm ``n``."""
        if self.norm == "squash":
            return n / (1 + n * n)
        return 1 / (n + _EPS)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise InputError(f"DAUConv2d expects input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        u, b = self._factors()
        kh, kw = self.kernel_size
        h = self.rank_proj(x)  # (N, r, H', W'): the input-dependent part of the weights
        # U_o^T x for every output o and rank index: one conv with C_out*rank filters.
        ut_kernel = u.permute(0, 2, 1).reshape(self.out_channels * self.rank, self.in_channels, kh, kw)
        utx = F.conv2d(x, ut_kernel, None, self.stride, self.padding)
        utx = utx.unflatten(1, (self.out_channels, self.rank))  # (N, O, r, H', W')
        bx = F.conv2d(x, b.view(self.out_channels, self.in_channels, kh, kw), None, self.stride, self.padding)
        # ||w_o(x)||^2 in rank space. In float16 / bfloat16 the squared norms and the sums
        # overflow or lose the small terms, so that part runs in float32 (the convolutions above,
        # where the work is, stay in the input's precision).
        low = h.dtype in (torch.float16, torch.bfloat16)
        if not low:
            return self._combine(h, utx, bx, u, b)
        # autocast would run the einsums in half precision again: switch it off for this part
        with torch.autocast(x.device.type, enabled=False):
            out = self._combine(h.float(), utx.float(), bx.float(), u.float(), b.float())
        return out.to(h.dtype)

    def _combine(self, h: Tensor, utx: Tensor, bx: Tensor, u: Tensor, b: Tensor) -> Tensor:
        """``w_o(x)_norm . x`` from the rank-space pieces (see the module docstring)."""
        gram = torch.einsum("odr,ods->ors", u, u)  # (O, r, r)
        utb = torch.einsum("odr,od->or", u, b)  # (O, r)
        bb = (b * b).sum(1)  # (O,)
        quad = torch.einsum("nrhw,ors,nshw->nohw", h, gram, h)
        lin = torch.einsum("nrhw,or->nohw", h, utb)
        norm = (quad + 2 * lin + bb[None, :, None, None]).clamp_min(0).sqrt()
        factor = self._norm_factor(norm)
        if self.detach:  # in explanation mode W(x) is a constant: detach h and the norm
            h, factor = h.detach(), factor.detach()
        return ((h.unsqueeze(1) * utx).sum(2) + bx) * factor

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, rank={self.rank}, "
            f"stride={self.stride}, padding={self.padding}, norm={self.norm!r}"
        )
