"""Multi-label metrics (docs/metrics.md#multi-label-metrics): average precision per class and its mean (mAP),
F1 per class at a probability threshold, and the localisation of each present label on multi-label grids.

Exact and dependency-free (scikit-learn is optional): :func:`average_precision` equals
``sklearn.metrics.average_precision_score(targets[:, k], scores[:, k])`` and :func:`f1_at_threshold` equals
``sklearn.metrics.f1_score(targets, probabilities >= t, average=None, zero_division=0)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError
from .localisation import localisation_scores

__all__ = [
    "average_precision",
    "evaluate_labels",
    "f1_at_threshold",
    "label_cells",
    "labels_above",
    "mean_average_precision",
    "multilabel_localisation",
    "multilabel_summary",
]


def _pair(scores, targets) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(torch.as_tensor(scores).detach().cpu().double())
    t = np.asarray(torch.as_tensor(targets).detach().cpu())
    if s.ndim == 1:
        s, t = s[:, None], t.reshape(-1, 1)
    if s.ndim != 2 or s.shape != t.shape:
        raise InputError(f"expected scores and targets of the same shape (N, K), got {s.shape} and {t.shape}")
    if not np.isin(t, (0, 1)).all():
        raise InputError("targets must be 0/1 (multi-hot)")
    return s, t.astype(bool)


def average_precision(scores: Tensor | np.ndarray, targets: Tensor | np.ndarray) -> np.ndarray:
    """Average precision of every class: ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds from
    the highest down (tied scores form one threshold), the area under the step precision-recall curve.

    ``scores``: ``(N, K)`` (or ``(N,)``) logits or probabilities (any monotone transform gives the same AP);
    ``targets``: the multi-hot ``(N, K)``. Returns float64 ``(K,)``; NaN for a class without positives.
    """
    s, t = _pair(scores, targets)
    out = np.full(s.shape[1], np.nan)
    for k in range(s.shape[1]):
        positives = int(t[:, k].sum())
        if positives == 0:
            continue
        order = np.argsort(-s[:, k], kind="stable")
        score, hit = s[order, k], t[order, k]
        last = np.r_[np.flatnonzero(np.diff(score) != 0), len(score) - 1]  # the end of each run of ties
        tp = np.cumsum(hit)[last]
        precision = tp / (last + 1)
        recall = tp / positives
        out[k] = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return out


def mean_average_precision(scores: Tensor | np.ndarray, targets: Tensor | np.ndarray) -> float:
    """Mean of :func:`average_precision` over the classes that have positives (NaN if none has)."""
    ap = average_precision(scores, targets)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")


def labels_above(logits: Tensor, threshold: float) -> list[int]:
    """The labels a multi-label model predicts for one image's ``(K,)`` logits: every class with
    ``sigmoid(logit) >= threshold``, most probable first (ties in class order)."""
    order = torch.argsort(logits, descending=True, stable=True)
    return [int(k) for k in order if float(torch.sigmoid(logits[k])) >= threshold]


def f1_at_threshold(
    probabilities: Tensor | np.ndarray, targets: Tensor | np.ndarray, threshold: float = 0.5
) -> np.ndarray:
    """F1 of every class when a label is predicted where ``probability >= threshold``: ``2 TP / (2 TP + FP + FN)``,
    0 where a class is neither present nor predicted. Returns float64 ``(K,)``."""
    p, t = _pair(probabilities, targets)
    predicted = p >= float(threshold)
    tp = (predicted & t).sum(0)
    denominator = 2 * tp + (predicted & ~t).sum(0) + (~predicted & t).sum(0)
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def multilabel_summary(logits: Tensor, targets: Tensor, threshold: float = 0.5) -> dict[str, float]:
    """``map`` (:func:`mean_average_precision`), ``f1`` (macro mean of :func:`f1_at_threshold`),
    ``exact_match`` (share of images whose predicted label set is exactly right) and ``n``."""
    probabilities = torch.sigmoid(torch.as_tensor(logits).double())
    targets = torch.as_tensor(targets)
    exact = ((probabilities >= threshold) == targets.bool()).all(1).double().mean()
    return {
        "map": mean_average_precision(logits, targets),
        "f1": float(f1_at_threshold(probabilities, targets, threshold).mean()),
        "exact_match": float(exact),
        "n": int(len(targets)),
    }


def label_cells(cell_labels: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (image, label) pairs of multi-label grids and each label's cells.

    ``cell_labels``: ``(N, g*g)`` int, the label of the item in each cell (row-major), ``-1`` for an empty
    cell. Returns ``image`` ``(M,)``, ``label`` ``(M,)`` (every distinct label of every image, in increasing
    order) and ``cells`` ``(M, g*g)`` bool (the cells holding that label)."""
    c = np.asarray(torch.as_tensor(cell_labels).cpu()).astype(np.int64)
    if c.ndim != 2:
        raise InputError(f"cell_labels must be (N, cells), got shape {c.shape}")
    image, label, cells = [], [], []
    for i, row in enumerate(c):
        for k in np.unique(row[row >= 0]):
            image.append(i)
            label.append(int(k))
            cells.append(row == k)
    n = c.shape[1]
    return (np.asarray(image, np.int64), np.asarray(label, np.int64),
            np.asarray(cells, bool).reshape(len(image), n))  # fmt: skip


def multilabel_localisation(
    model: nn.Module,
    images: Tensor,
    cell_labels: Tensor | np.ndarray,
    grid: int,
    smooth: int = 0,
    batch_size: int = 64,
) -> dict[str, np.ndarray]:
    """Localisation of every present label on multi-label grids (docs/metrics.md#multi-label-localisation).

    For each image ``(C, H, W)`` of ``images`` (a ``grid x grid`` mosaic) and each label present in it
    (``cell_labels`` as in :func:`label_cells`), the model's explanation of that label's logit
    (:func:`alignnet.explain`: contributions ``W(x)[k] * x`` summed over channels) is scored by
    :func:`~alignnet.metrics.localisation.localisation_scores` with the label's cells: the share of its
    positive contribution inside them. Returns ``image``, ``label``, ``cells`` (as :func:`label_cells`) and
    ``score`` ``(M,)`` float64 in [0, 1].
    """
    from ..explanation import explain

    image, label, cells = label_cells(cell_labels)
    if len(images) != len(np.asarray(cell_labels)):
        raise InputError(f"{len(images)} images but {len(np.asarray(cell_labels))} rows of cell labels")
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(image), batch_size):
        sl = slice(start, start + batch_size)
        x = images[torch.as_tensor(image[sl])].to(device)
        e = explain(model, x, torch.as_tensor(label[sl], device=device))
        maps = e.contributions[:, 0] if e.contributions.dim() == 4 else e.contributions
        scores.append(localisation_scores(maps.detach().cpu(), torch.as_tensor(cells[sl]), grid, smooth))
    score = torch.cat(scores).numpy() if scores else np.zeros(0)
    return {"image": image, "label": label, "cells": cells, "score": score}


@torch.no_grad()
def evaluate_labels(
    model: nn.Module, dataset, threshold: float | None = None, batch_size: int = 256, progress: bool = False
) -> dict:
    """How well ``model`` predicts the labels of ``dataset`` (items ``(image, label)`` or ``(image, multi-hot)``).

    Single labels: ``accuracy`` (top-1), ``per_class_accuracy`` and ``n``. Multi-hot targets: the
    :func:`multilabel_summary` at ``threshold`` (default: the model's saved one, else 0.5) with per-class
    ``average_precision`` and ``f1`` lists. Unreadable images raise (the dataset's own error)."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from ..data import collate_skip_none
    from ..models.io import multilabel_threshold

    device = next(model.parameters()).device
    model.eval()
    logits, targets = [], []
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_skip_none)
    for x, y in tqdm(loader, disable=not progress, desc="predicting", unit="batch"):
        if x.numel():
            logits.append(model(x.to(device)).float().cpu())
            targets.append(y)
    if not logits:
        raise InputError("no readable image to evaluate")
    out, y = torch.cat(logits), torch.cat(targets)
    if (y.shape[1] != out.shape[1]) if y.dim() == 2 else int(y.max()) >= out.shape[1]:
        raise InputError(f"the data has more classes than the model's {out.shape[1]} outputs")
    names = getattr(model, "class_names", None)
    if y.dim() == 2:
        t = multilabel_threshold(model) if threshold is None else float(threshold)
        t = 0.5 if t is None else t
        summary = multilabel_summary(out, y, t)
        ap, f1 = average_precision(out, y), f1_at_threshold(torch.sigmoid(out.double()), y, t)
        return {**summary, "threshold": t, "multilabel": True, "class_names": list(names) if names else None,
                "average_precision": [None if np.isnan(v) else float(v) for v in ap], "per_class_f1": f1.tolist()}  # fmt: skip
    correct = out.argmax(1) == y
    per_class = [float(correct[y == k].double().mean()) if bool((y == k).any()) else None for k in range(out.shape[1])]
    return {"accuracy": float(correct.double().mean()), "n": int(len(y)), "multilabel": False,
            "class_names": list(names) if names else None, "per_class_accuracy": per_class}  # fmt: skip
