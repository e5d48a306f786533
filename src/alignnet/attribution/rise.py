"""RISE: randomized input sampling for explanation (Petsiuk et al., 2018), docs/metrics.md#post-hoc-baselines.

Written by hand because captum has no RISE. The saliency of pixel ``p`` for class ``c`` is the
expected model score over random masks that keep ``p``:
``S[p] = sum_i f_c(x * M_i) M_i[p] / (n_masks * p_keep)``.

Masks: an ``s x s`` grid of cells, each kept with probability ``p_keep``, bilinearly upsampled to
``(s + 1) * cell`` pixels and cropped at a random shift of less than one cell (so the kept regions
are smooth and not aligned to a fixed grid). They are drawn from a seeded generator once per input
size and cached on the attributor; masked copies of each image are evaluated in batches.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ._base import Attributor, check_forward_batch, register_attributor

__all__ = ["RiseAttributor", "rise_masks"]


def rise_masks(n_masks: int, height: int, width: int, cells: int = 8, p_keep: float = 0.1, seed: int = 0) -> Tensor:
    """``(n_masks, H, W)`` float masks in [0, 1], deterministic for a seed (generated on the CPU)."""
    g = torch.Generator().manual_seed(int(seed))
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    grid = (torch.rand(n_masks, 1, cells, cells, generator=g) < p_keep).float()
    up = F.interpolate(grid, size=((cells + 1) * cell_h, (cells + 1) * cell_w), mode="bilinear", align_corners=False)
    dy = torch.randint(0, cell_h, (n_masks,), generator=g)
    dx = torch.randint(0, cell_w, (n_masks,), generator=g)
    rows = (dy[:, None] + torch.arange(height))[:, :, None]  # (n, H, 1)
    cols = (dx[:, None] + torch.arange(width))[:, None, :]  # (n, 1, W)
    return up[torch.arange(n_masks)[:, None, None], 0, rows, cols]


@register_attributor("rise")
class RiseAttributor(Attributor):
    """RISE with ``n_masks`` masks (500) of ``cells`` x ``cells`` (8x8) cells kept with probability ``p_keep`` (0.1).

    Parameters
    ----------
    output:
        ``"probability"`` (sigmoid of the target logit; the models are trained with BCE) or ``"logit"``.
    seed:
        Seed of the mask generator.
    forward_batch:
        Masked images per forward pass (None: a pixel budget for the device, ``copies_per_pass``).
    """

    per_pixel = True

    def __init__(
        self,
        model: nn.Module,
        batch_size: int = 64,
        n_masks: int = 500,
        cells: int = 8,
        p_keep: float = 0.1,
        seed: int = 0,
        output: str = "probability",
        forward_batch: int | None = None,
    ) -> None:
        super().__init__(model, batch_size=batch_size)
        if int(n_masks) < 1 or int(cells) < 1 or not 0 < float(p_keep) <= 1:
            raise InputError(f"need n_masks >= 1, cells >= 1, 0 < p_keep <= 1; got {n_masks}, {cells}, {p_keep}")
        if output not in ("probability", "logit"):
            raise InputError(f"output must be 'probability' or 'logit', got {output!r}")
        self.n_masks, self.cells, self.p_keep, self.seed = int(n_masks), int(cells), float(p_keep), int(seed)
        self.output, self.forward_batch = output, check_forward_batch(forward_batch)
        self._masks: dict[tuple, Tensor] = {}

    def config(self) -> dict:
        return {
            "n_masks": self.n_masks,
            "cells": self.cells,
            "p_keep": self.p_keep,
            "seed": self.seed,
            "output": self.output,
        }

    def masks(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """The cached ``(n_masks, H, W)`` masks for this input size."""
        key = (height, width, str(device), dtype)
        if key not in self._masks:
            m = rise_masks(self.n_masks, height, width, self.cells, self.p_keep, self.seed)
            self._masks[key] = m.to(device=device, dtype=dtype)
        return self._masks[key]

    def _attribute(self, images: Tensor, targets: Tensor) -> Tensor:
        return self._spread(self._attribute_maps(images, targets[:, None])[:, 0], images.shape[1])

    @torch.no_grad()
    def _attribute_maps(self, images: Tensor, targets: Tensor) -> Tensor:
        x = self.encoded.encode(images)  # (n, C, H, W)
        masks = self.masks(*x.shape[-2:], x.device, x.dtype)  # (M, H, W)
        scores = self._masked_logits(x, masks, targets, self.forward_batch)  # (n, M, K): all K classes at once
        if self.output == "probability":
            scores = torch.sigmoid(scores)
        return torch.einsum("nmk,mhw->nkhw", scores, masks) / (self.n_masks * self.p_keep)
