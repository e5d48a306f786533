"""Pixel-removal curves, docs/metrics.md#pixel-removal.

Pixels are ranked by their summed attribution and removed (zeroed in the model's input encoding,
i.e. after ``AddInverse``) least important first or most important first, up to ``fraction`` of
the image, and the target class probability ``sigmoid(logit)`` is recorded at ``steps`` evenly
spaced removal counts. All masked copies are built with tensor operations and evaluated in batches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..attribution import Attributor, EncodedModel, check_forward_batch, copies_per_pass
from ..errors import InputError
from ..layers import eval_mode
from ._common import save_result, work_dir

__all__ = [
    "PixelRemovalResult",
    "evaluate_pixel_removal",
    "removal_counts",
    "removal_curves",
    "removal_ranks",
    "summarise_curves",
]

ORDERS = ("least", "most")


def removal_counts(n_pixels: int, fraction: float = 0.25, steps: int = 128) -> np.ndarray:
    """``(steps,)`` numbers of removed pixels: ``round(linspace(0, fraction * n_pixels, steps))``."""
    if not 0 < fraction <= 1 or int(steps) < 2:
        raise InputError(f"need 0 < fraction <= 1 and steps >= 2, got {fraction}, {steps}")
    return np.round(np.linspace(0, fraction * n_pixels, int(steps))).astype(np.int64)


def tie_break_keys(n: int, n_pixels: int, seed: int, first: int = 0) -> Tensor:
    """``(n, n_pixels)`` random keys in [0, 1) that order equally important pixels.

    Image ``first + i`` of a run always gets the same keys for a seed, whatever the batching
    (each image's keys come from a generator seeded with ``(seed, image index)``).
    """
    keys = torch.empty(n, n_pixels, dtype=torch.float64)
    for i in range(n):
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + first + i)
        keys[i] = torch.rand(n_pixels, generator=g, dtype=torch.float64)
    return keys


def removal_ranks(attributions: Tensor, order: str = "least", seed: int = 0, first: int = 0) -> Tensor:
    """Removal position of every pixel, ``(N, H, W)`` or ``(N, C, H, W)`` -> ``(N, H*W)`` long in ``[0, H*W)``.

    Pixels are sorted by their summed attribution, least (``order="least"``) or most important
    first; *ties are broken in a random order* drawn from ``seed`` (:func:`tie_break_keys`; image
    ``first + i`` of a run gets the same order whatever the batching). A raster-order tie-break
    would remove the top rows of a piecewise-constant map (GradCAM, occlusion, LIME) first.
    """
    if order not in ORDERS:
        raise InputError(f"order must be 'least' or 'most', got {order!r}")
    a = attributions.sum(1) if attributions.dim() == 4 else attributions
    if a.dim() != 3:
        raise InputError(f"attributions must be (N, H, W) or (N, C, H, W), got {tuple(attributions.shape)}")
    n, h, w = a.shape
    importance = a.reshape(n, h * w).double()
    if order == "most":
        importance = -importance
    keys = tie_break_keys(n, h * w, seed, first).to(importance.device)
    # sort by the random keys first, then stably by importance: ties keep the random order
    shuffle = torch.argsort(keys, dim=1)
    ranking = shuffle.gather(1, torch.argsort(importance.gather(1, shuffle), dim=1, stable=True))
    rank = torch.empty_like(ranking)
    rank.scatter_(1, ranking, torch.arange(h * w, device=ranking.device).expand(n, -1))
    return rank


@torch.no_grad()
def removal_curves(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    attributions: Tensor,
    order: str = "least",
    fraction: float = 0.25,
    steps: int = 128,
    forward_batch: int | None = None,
    seed: int = 0,
    first: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Target probability while pixels are removed in the order of their attribution.

    Parameters
    ----------
    model:
        Classifier; pixels are zeroed in its encoded input when it starts with ``AddInverse``.
    images:
        ``(N, C, H, W)`` on the model's device.
    targets:
        ``(N,)`` classes whose probability is tracked.
    attributions:
        ``(N, C, H, W)`` or ``(N, H, W)``; summed over channels to rank the pixels.
    order:
        ``"least"`` (least important first) or ``"most"``.
    forward_batch:
        Masked copies per forward pass (None: a pixel budget for the device,
        :func:`alignnet.attribution.copies_per_pass`).
    seed, first:
        Ties in the ranking are broken randomly with ``seed``; ``first`` is the index of
        ``images[0]`` in the whole run (see :func:`removal_ranks`).

    Returns
    -------
    ``fractions`` ``(steps,)`` removed fraction of pixels and ``probabilities`` ``(N, steps)``.
    """
    if order not in ORDERS:
        raise InputError(f"order must be 'least' or 'most', got {order!r}")
    forward_batch = check_forward_batch(forward_batch)
    if images.dim() != 4:
        raise InputError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    a = attributions.sum(1) if attributions.dim() == 4 else attributions
    n, _, h, w = images.shape
    if a.shape != (n, h, w):
        raise InputError(f"attributions {tuple(attributions.shape)} do not match images {tuple(images.shape)}")
    targets = torch.as_tensor(targets, device=images.device).long()
    if targets.shape != (n,):
        raise InputError(f"targets must have shape ({n},), got {tuple(targets.shape)}")
    counts_np = removal_counts(h * w, fraction, steps)
    counts = torch.from_numpy(counts_np).to(images.device)
    rank = removal_ranks(a, order, seed, first).to(images.device)  # position of each pixel
    encoded_model = EncodedModel(model)
    probs = torch.empty(n, len(counts_np), device=images.device)  # filled on the device: no sync per pass
    with eval_mode(model):
        encoded = encoded_model.encode(images)  # (N, C', H, W)
        forward_batch = copies_per_pass(forward_batch, h, w, images.device)
        per_image = max(1, forward_batch // len(counts_np))
        for i in range(0, n, per_image):
            x, r, t = encoded[i : i + per_image], rank[i : i + per_image], targets[i : i + per_image]
            for j in range(0, len(counts_np), forward_batch):
                c = counts[j : j + forward_batch]
                keep = (r[:, None, :] >= c[None, :, None]).to(x.dtype).view(len(x), len(c), 1, h, w)
                batch = (x[:, None] * keep).flatten(0, 1)
                logits = encoded_model(batch).view(len(x), len(c), -1)
                p = torch.sigmoid(logits.gather(2, t.view(-1, 1, 1).expand(-1, len(c), 1))[..., 0].float())
                probs[i : i + len(x), j : j + len(c)] = p
    return counts_np / (h * w), probs.cpu().numpy()


@dataclass
class PixelRemovalResult:
    """Pixel-removal curves of one model and method.

    Attributes
    ----------
    fractions: ``(S,)`` removed fraction at each step.
    curves: ``{order: (N, S)}`` per-image target probabilities, for each order run.
    config, summary: the full config; per order the mean curve's final value and its AUC
        (trapezoid area over the removed fraction, divided by the largest fraction, i.e. the
        mean probability over the curve).
    """

    fractions: np.ndarray
    curves: dict[str, np.ndarray]
    config: dict
    summary: dict = field(default_factory=dict)
    seconds: float = 0.0

    def mean_curve(self, order: str = "least") -> np.ndarray:
        return self.curves[order].mean(0)

    def save(self, out_dir: str | os.PathLike, stem: str | None = None) -> tuple[Path, Path]:
        stem = stem or f"pixel_removal_{self.config['method']}"
        arrays = {"fractions": self.fractions}
        for order, curves in self.curves.items():
            arrays[f"curves_{order}"] = curves
            arrays[f"mean_{order}"] = curves.mean(0)
        info = {"metric": "pixel-removal", "config": self.config, "summary": self.summary, "seconds": self.seconds}
        return save_result(out_dir, stem, info, arrays)


def _auc(fractions: np.ndarray, curve: np.ndarray) -> float:
    return float(np.trapezoid(curve, fractions) / fractions[-1]) if fractions[-1] > 0 else float(curve[0])


def summarise_curves(fractions: np.ndarray, curves: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per order: the mean probability at the start, at the end, and the curve's mean (AUC / fraction)."""
    means = {o: c.mean(0) for o, c in curves.items()}
    return {o: {"final": float(m[-1]), "auc": _auc(fractions, m), "start": float(m[0])} for o, m in means.items()}


def evaluate_pixel_removal(
    model: nn.Module,
    dataset: Dataset | tuple[Tensor, Tensor],
    method: str | Attributor = "ours",
    n_images: int = 1024,
    orders: tuple[str, ...] = ORDERS,
    seed: int = 0,
    fraction: float = 0.25,
    steps: int = 128,
    method_config: dict | None = None,
    batch_size: int = 64,
    forward_batch: int | None = None,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> PixelRemovalResult:
    """Pixel removal (docs/metrics.md#pixel-removal) on the first ``n_images`` images and their true classes.

    The one-process form of :func:`alignnet.metrics.evaluate.evaluate_one` (the sharded evaluation
    behind ``alignnet evaluate``): same curves.

    Parameters
    ----------
    orders:
        Which directions to run: ``"least"`` and/or ``"most"`` important first.
    seed:
        Seed of the random order among equally important pixels (recorded in the config).
    batch_size:
        Images attributed and perturbed per step.
    forward_batch:
        Masked copies per forward pass (memory and speed only; None: a pixel budget for the device).
    cache_dir:
        If given, the curves of every batch are kept there; a later call with the same model (weights and
        attributes such as ``b``), method, protocol and images computes only the batches that are missing.
    """
    from .evaluate import evaluate_one  # evaluate builds on this module
    from .presets import Protocol

    protocol = Protocol(  # validates the orders
        "pixel-removal", n_images=int(n_images), steps=int(steps), fraction=float(fraction), orders=tuple(orders),
        removal_seed=int(seed), batch_size=int(batch_size), shard_size=int(batch_size),
    )  # fmt: skip
    with work_dir(cache_dir) as work:
        return evaluate_one(
            model, dataset, method, protocol, work, method_config=method_config, progress=progress,
            forward_batch=forward_batch,
        )  # fmt: skip
