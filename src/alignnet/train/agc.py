"""Adaptive gradient clipping (Brock et al., NFNets), as B-cos v2 and B-cosification train with it.

docs/models.md#adaptive-gradient-clipping: unit-wise, a gradient row whose norm exceeds ``clip_factor * max(||weight row||,
eps)`` is scaled down to that bound. A row is the slice of one output unit: dim 0 of a weight with two
or more dimensions (the norm over the other dims); a 0- or 1-dimensional parameter is one unit.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from ..errors import InputError

__all__ = ["adaptive_clip_grad_", "unitwise_norm"]


def unitwise_norm(x: Tensor) -> Tensor:
    """L2 norm per output unit, broadcastable to ``x``: ``(out, 1, ..., 1)``, or a scalar for ``dim <= 1``."""
    if x.dim() <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.dim())), keepdim=True)


@torch.no_grad()
def adaptive_clip_grad_(parameters: Iterable[Tensor], clip_factor: float = 0.01, eps: float = 1e-3) -> None:
    """Clip every parameter's ``.grad`` in place, unit-wise, to ``clip_factor * max(||w_unit||, eps)``."""
    if not clip_factor > 0 or not eps > 0:
        raise InputError(f"clip_factor and eps must be positive, got {clip_factor} and {eps}")
    for p in parameters:
        if p.grad is None:
            continue
        g = p.grad
        max_norm = unitwise_norm(p.detach().float()).clamp_min(eps) * clip_factor
        grad_norm = unitwise_norm(g.float())
        scale = torch.where(grad_norm > max_norm, max_norm / grad_norm.clamp_min(1e-6), torch.ones_like(grad_norm))
        g.mul_(scale.to(g.dtype))
