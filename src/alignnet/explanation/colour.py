"""Colour explanations of B-cos models (docs/algorithms.md#colour-explanations).

The 6-channel weights ``[r, g, b, 1-r, 1-g, 1-b]`` of a pixel say which colour the model looks
for there; the opacity says how much that pixel contributes positively.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from .dynamic_linear import Explanation

__all__ = ["colour_explanation", "colour_from_weights"]


def colour_from_weights(
    weights: Tensor, inputs: Tensor, smooth: int = 15, alpha_percentile: float = 99.5
) -> np.ndarray:
    """RGBA image ``(H, W, 4)`` in [0, 1] from 6-channel ``weights`` and ``inputs`` ``(6, H, W)``.

    1. ``s = sum_c(x * W)`` per pixel;
    2. ``W / max_c |W|`` per pixel, clamped at 0, then ``rgb = W[:3] / (W[:3] + W[3:])``;
    3. ``alpha = ||W||_2`` per pixel, ~0 where ``s < 0``, averaged over ``smooth x smooth``
       (stride 1, zero padding counted in the mean), divided by its ``alpha_percentile``-th
       percentile and clipped to [0, 1].
    """
    if weights.dim() != 3 or weights.shape[0] != 6 or inputs.shape != weights.shape:
        raise InputError(
            "colour explanations need the 6-channel encoding (a model that starts with AddInverse): "
            f"got weights {tuple(weights.shape)} and inputs {tuple(inputs.shape)}"
        )
    w = weights.detach().double().cpu()
    x = inputs.detach().double().cpu()
    contribution = (w * x).sum(0, keepdim=True)
    unit = (w / (w.abs().amax(0, keepdim=True) + 1e-12)).clamp_min(0)
    rgb = unit[:3] / (unit[:3] + unit[3:] + 1e-12)
    alpha = torch.linalg.vector_norm(w, dim=0, keepdim=True)
    alpha = torch.where(contribution < 0, torch.full_like(alpha, 1e-12), alpha)
    if smooth and smooth > 1:
        alpha = F.avg_pool2d(alpha[None], smooth, stride=1, padding=(smooth - 1) // 2, count_include_pad=True)[0]
    alpha = alpha.numpy()
    top = np.percentile(alpha, alpha_percentile)
    alpha = np.clip(alpha / top, 0, 1) if top > 0 else np.zeros_like(alpha)
    return np.concatenate([rgb.numpy(), alpha], axis=0).transpose(1, 2, 0).astype(np.float32)


def colour_explanation(
    explanation: Explanation,
    index: int = 0,
    column: int = 0,
    smooth: int = 15,
    alpha_percentile: float = 99.5,
    *,
    target: int | None = None,
) -> np.ndarray:
    """Colour explanation ``(H, W, 4)`` of image ``index`` of an :class:`Explanation`.

    Parameters
    ----------
    index:
        Which image of the batch.
    column:
        When several classes were explained per image (weights ``(N, K, 6, H, W)``), the position
        ``0..K-1`` among them; the class it stands for is ``explanation.targets[index, column]``.
    target:
        Deprecated name of ``column`` (it never meant a class index); warns and behaves as ``column``.
    """
    if target is not None:
        if column != 0:
            raise TypeError("got both column= and its deprecated name target=; pass column= only")
        warnings.warn(
            "colour_explanation(target=...) is deprecated: the argument is a column position among the "
            "explained classes, not a class index; use column=",
            DeprecationWarning,
            stacklevel=2,
        )
        column = target
    n = len(explanation)
    if not -n <= index < n:
        raise IndexError(f"index {index} out of range for an explanation of {n} images")
    w = explanation.weights[index]
    if w.dim() == 4:
        k = w.shape[0]
        if not -k <= column < k:
            raise IndexError(
                f"column {column} out of range: {k} classes were explained per image "
                f"(classes {explanation.targets[index].tolist()})"
            )
        w = w[column]
    elif column not in (0, -1):
        raise IndexError(f"column {column} out of range: one class was explained per image")
    return colour_from_weights(w, explanation.inputs[index], smooth, alpha_percentile)
