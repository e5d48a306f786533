"""The grid pointing game ("localisation metric"), docs/metrics.md#localisation-grid-pointing-game.

Pure functions first: :func:`make_grids` (the confidence-sorted, seeded selection of images),
:func:`tile_grids` and :func:`localisation_scores`; :func:`evaluate_localisation` runs the whole
protocol for a model, a dataset and an attribution method in one process (the sharded
evaluation of :mod:`alignnet.metrics.evaluate` with one rank), with a progress bar and a resumable
cache of the scores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..attribution import Attributor
from ..errors import InputError
from ._common import save_result, work_dir

__all__ = [
    "LocalisationResult",
    "evaluate_localisation",
    "localisation_scores",
    "make_grids",
    "summarise",
    "tile_grids",
]


def make_grids(
    logits: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    grid: int = 3,
    n_grids: int = 500,
    seed: int = 42,
    confidence: float = 0.5,
) -> np.ndarray:
    """Choose the images of each grid (docs/metrics.md#localisation-grid-pointing-game, steps 1-2).

    Only correctly classified images whose true-class probability ``sigmoid(logit)`` exceeds
    ``confidence`` (0.5 in the B-cos v2 code; Rao et al.'s GridPG uses 0.99) are eligible; each
    class's eligible images are used from the most to the least confident.
    With ``numpy.random.default_rng(seed)``, each grid draws ``grid**2`` distinct classes among
    those that still have images and takes each class's next image; the selection stops after
    ``n_grids`` grids or when no more than ``grid**2`` classes remain eligible.

    Parameters
    ----------
    logits: ``(N, K)`` model outputs for the whole dataset.
    labels: ``(N,)`` true classes.

    Returns
    -------
    ``(G, grid**2)`` int64 dataset indices, cells in row-major order; ``G <= n_grids``.
    """
    logits = torch.as_tensor(logits).float()
    labels = torch.as_tensor(labels).long()
    if logits.dim() != 2 or labels.shape != (logits.shape[0],):
        raise InputError(f"expected logits (N, K) and labels (N,), got {tuple(logits.shape)} / {tuple(labels.shape)}")
    if int(grid) < 1 or int(n_grids) < 0:
        raise InputError(f"grid must be >= 1 and n_grids >= 0, got {grid}, {n_grids}")
    n = int(grid) ** 2
    probability = torch.sigmoid(logits.gather(1, labels[:, None])[:, 0])
    eligible = (logits.argmax(1) == labels) & (probability > float(confidence))
    queues: dict[int, np.ndarray] = {}
    for c in labels[eligible].unique().tolist():
        idx = torch.nonzero(eligible & (labels == c))[:, 0]
        order = torch.argsort(-probability[idx], stable=True)
        queues[c] = idx[order].numpy()
    used = dict.fromkeys(queues, 0)
    rng = np.random.default_rng(seed)
    grids: list[list[int]] = []
    while len(grids) < n_grids:
        available = [c for c in sorted(queues) if used[c] < len(queues[c])]
        if len(available) <= n:
            break
        chosen = rng.choice(available, size=n, replace=False)
        grids.append([int(queues[c][used[c]]) for c in chosen])
        for c in chosen:
            used[c] += 1
    return np.asarray(grids, dtype=np.int64).reshape(len(grids), n)


def tile_grids(images: Tensor, grid: int, rescale: bool = False) -> Tensor:
    """Tile ``(G, grid**2, C, h, w)`` images row-major into ``(G, C, grid*h, grid*w)``.

    ``rescale``: first shrink every image to ``(h // grid, w // grid)`` (bilinear with antialiasing), so
    the grid has the size of one image -- the B-cos v2 ``_rescale`` configs, used for ViTs whose input
    size is fixed. On a centre crop this keeps the field of view of the original protocol, which
    resizes and crops each photo to ``1/grid`` of the usual sizes.
    """
    g = int(grid)
    if images.dim() != 5 or images.shape[1] != g * g:
        raise InputError(f"expected images (G, {g * g}, C, h, w), got {tuple(images.shape)}")
    if rescale:
        n_grids, n, c, h, w = images.shape
        if h % g or w % g:
            raise InputError(f"rescale needs image sides divisible by the grid ({g}), got {h}x{w}")
        small = F.interpolate(images.reshape(n_grids * n, c, h, w), size=(h // g, w // g), mode="bilinear",
                              align_corners=False, antialias=True)  # fmt: skip
        images = small.view(n_grids, n, c, h // g, w // g)
    n_grids, _, c, h, w = images.shape
    return images.reshape(n_grids, g, g, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(n_grids, c, g * h, g * w)


def localisation_scores(attributions: Tensor, cells: Tensor | np.ndarray, grid: int, smooth: int = 0) -> Tensor:
    """Fraction of positive attribution inside each map's target cell (docs/metrics.md#localisation-grid-pointing-game, steps 4-5).

    Parameters
    ----------
    attributions:
        ``(N, H, W)`` or ``(N, C, H, W)`` (summed over C) maps of whole grids; H and W divisible by ``grid``.
    cells:
        ``(N,)`` target cell per map, row-major in ``[0, grid**2)``; or ``(N, grid**2)`` bool, the target's
        cells (multi-label grids, docs/metrics.md#multi-label-localisation: the share inside all of them).
    grid:
        Cells per side.
    smooth:
        If > 1, average each map over ``smooth x smooth`` windows first (stride 1, zero padding of
        ``smooth // 2`` that counts in the mean; ``smooth`` must be odd). 0 or 1: no smoothing.

    Returns
    -------
    ``(N,)`` float64 scores in [0, 1]; 0 where a map has no positive attribution.
    """
    a = torch.as_tensor(attributions).detach()
    if a.dim() == 4:
        a = a.sum(1)
    if a.dim() != 3:
        raise InputError(f"attributions must be (N, H, W) or (N, C, H, W), got {tuple(a.shape)}")
    n, h, w = a.shape
    g = int(grid)
    if g < 1 or h % g or w % g:
        raise InputError(f"the maps ({h}x{w}) must split into {g}x{g} equal cells")
    cells = torch.as_tensor(cells, device=a.device)
    masks = cells.dtype == torch.bool and cells.dim() == 2
    if masks and cells.shape != (n, g * g):
        raise InputError(f"cell masks must have shape ({n}, {g * g}), got {tuple(cells.shape)}")
    if not masks:
        cells = cells.long()
        if cells.shape != (n,):
            raise InputError(f"cells must have shape ({n},) or ({n}, {g * g}) (bool), got {tuple(cells.shape)}")
    if not masks and bool(((cells < 0) | (cells >= g * g)).any()):
        raise InputError(f"cells must lie in [0, {g * g}), got {cells.min().item()}..{cells.max().item()}")
    a = a.double()
    smooth = int(smooth)
    if smooth > 1:
        if smooth % 2 == 0:
            raise InputError(f"smooth must be odd (same-size output), got {smooth}")
        a = F.avg_pool2d(a[:, None], smooth, stride=1, padding=smooth // 2, count_include_pad=True)[:, 0]
    positive = a.clamp_min(0)
    per_cell = positive.view(n, g, h // g, g, w // g).sum((2, 4)).flatten(1)  # (N, g*g) row-major
    total = per_cell.sum(1)
    inside = (per_cell * cells).sum(1) if masks else per_cell.gather(1, cells[:, None])[:, 0]
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(total))


def summarise(scores: np.ndarray | Tensor) -> dict[str, float]:
    """Mean, median, quartiles, standard deviation, min, max and count of the scores."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        return {"n": 0}
    q25, median, q75 = np.percentile(s, [25, 50, 75])
    return {
        "n": int(s.size),
        "mean": float(s.mean()),
        "median": float(median),
        "q25": float(q25),
        "q75": float(q75),
        "std": float(s.std()),
        "min": float(s.min()),
        "max": float(s.max()),
    }


@dataclass
class LocalisationResult:
    """Scores of one model and method.

    Attributes
    ----------
    scores: ``(G * grid**2,)`` one score per cell, grid by grid, cells row-major.
    grids: ``(G, grid**2)`` dataset indices per grid.
    classes: ``(G, grid**2)`` the class of each cell (the explained class).
    config: everything that made the result (model hash, method and its config, protocol).
    summary: :func:`summarise` of the scores.
    """

    scores: np.ndarray
    grids: np.ndarray
    classes: np.ndarray
    config: dict
    summary: dict = field(default_factory=dict)
    seconds: float = 0.0

    def save(self, out_dir: str | os.PathLike, stem: str | None = None) -> tuple[Path, Path]:
        """Write ``<stem>.json`` (config + summary) and ``<stem>.npz`` (scores, grids, classes)."""
        stem = stem or f"localisation_{self.config['method']}"
        info = {"metric": "localisation", "config": self.config, "summary": self.summary, "seconds": self.seconds}
        return save_result(out_dir, stem, info, {"scores": self.scores, "grids": self.grids, "classes": self.classes})


def evaluate_localisation(
    model: nn.Module,
    dataset: Dataset | tuple[Tensor, Tensor],
    method: str | Attributor = "ours",
    grid: int = 3,
    n_grids: int = 500,
    seed: int = 42,
    smooth: int = 0,
    method_config: dict | None = None,
    batch_size: int = 36,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    logits: Tensor | None = None,
    confidence: float = 0.5,
    rescale: bool = False,
) -> LocalisationResult:
    """Run the grid pointing game (docs/metrics.md#localisation-grid-pointing-game) for one model and method.

    The one-process form of :func:`alignnet.metrics.evaluate.evaluate_one` (the sharded evaluation
    behind ``alignnet evaluate``): same grids, same scores.

    Parameters
    ----------
    model:
        Classifier on the images' device (the model's parameters decide the device).
    dataset:
        A dataset of ``(image (C, h, w), label)`` items (e.g. the Fashion-MNIST test set) or a
        pair of tensors ``(images, labels)``.
    method, method_config:
        A registry name and its config (:func:`~alignnet.attribution.get_attributor`) or an attributor.
    grid, n_grids, seed, smooth, confidence, rescale:
        The protocol: ``n_grids`` grids of ``grid x grid`` images chosen with ``seed`` among images
        whose true-class ``sigmoid(logit) > confidence``; ``smooth`` as in :func:`localisation_scores`;
        ``rescale`` as in :func:`tile_grids` (the ViT protocol).
    batch_size:
        Maps attributed per call (rounded down to whole grids).
    cache_dir:
        If given, the predictions and the scores of every batch are kept there under a key of (model
        fingerprint, method, method config, protocol), each batch recording the content hash of its
        images and labels; a later call with the same inputs computes only the batches that are missing
        (or returns at once when the first call had finished), and one with other inputs recomputes.
    logits:
        ``(N, K)`` predictions of the dataset, if already computed.
    """
    from .evaluate import evaluate_one  # evaluate builds on this module
    from .presets import Protocol

    per_step = max(1, int(batch_size) // int(grid) ** 2)
    protocol = Protocol(
        "localisation", grid=int(grid), n_grids=int(n_grids), seed=int(seed), smooth=int(smooth),
        confidence=float(confidence), rescale=bool(rescale), batch_size=int(batch_size), shard_size=per_step,
    )  # fmt: skip
    with work_dir(cache_dir) as work:
        return evaluate_one(
            model, dataset, method, protocol, work, method_config=method_config, logits=logits, progress=progress
        )
