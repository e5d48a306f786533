"""Interop with other libraries' metrics: a Quantus ``explain_func`` for any registered method."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..attribution import get_attributor
from ._common import model_device

__all__ = ["quantus_explain_func"]


def quantus_explain_func(method: str = "ours", channel_sum: bool = True, **config) -> Callable[..., np.ndarray]:
    """An ``explain_func`` for Quantus metrics that runs ``get_attributor(method, model, **config)``.

    Quantus calls ``explain_func(model=..., inputs=..., targets=..., **explain_func_kwargs)`` with
    numpy arrays ``inputs`` ``(N, C, H, W)`` and ``targets`` ``(N,)``; the function returns numpy
    attributions ``(N, 1, H, W)`` (the per-pixel map, ``channel_sum=True``) or ``(N, C, H, W)``.
    """
    attributors: dict[int, object] = {}

    def explain_func(model: nn.Module, inputs, targets, **kwargs) -> np.ndarray:
        device = kwargs.get("device") or model_device(model)
        key = id(model)
        if key not in attributors:
            attributors[key] = get_attributor(method, model, **config)
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=device)
        t = torch.as_tensor(np.asarray(targets), device=device).long().reshape(-1)
        a = attributors[key].attribute(x, t)
        if channel_sum:
            a = a.sum(1, keepdim=True)
        return a.cpu().numpy()

    return explain_func
