"""Figures of explanations (matplotlib is imported lazily, on first use)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from ..errors import InputError

__all__ = ["plot_contribution_map", "plot_explanation", "save_rgba"]


def _np(a) -> np.ndarray:
    return a.detach().cpu().float().numpy() if isinstance(a, Tensor) else np.asarray(a)


def plot_contribution_map(contributions, ax=None, path: str | Path | None = None, title: str | None = None):
    """Draw a signed ``(H, W)`` map with a diverging colour map centred at 0 (red +, blue -).

    Returns the axes; with ``path`` also saves the figure as PNG.
    """
    import matplotlib.pyplot as plt

    c = _np(contributions)
    if c.ndim != 2:
        raise InputError(f"a contribution map must be (H, W), got shape {c.shape}")
    lim = float(np.abs(c).max()) or 1.0
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(c, cmap="bwr", vmin=-lim, vmax=lim, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    if path is not None:
        (fig or ax.figure).savefig(path, dpi=150, bbox_inches="tight")
    if fig is not None and path is not None:
        plt.close(fig)
    return ax


def save_rgba(rgba: np.ndarray, path: str | Path, background: float | None = None) -> None:
    """Save an ``(H, W, 4)`` float image in [0, 1] as PNG (over a grey ``background`` if given)."""
    from PIL import Image

    a = np.asarray(rgba, dtype=np.float32)
    if background is not None:
        a = np.concatenate([a[..., :3] * a[..., 3:] + background * (1 - a[..., 3:]), np.ones_like(a[..., 3:])], -1)
    Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8), mode="RGBA").save(path)


def plot_explanation(image, rgba: np.ndarray, contributions, path: str | Path | None = None, title: str = ""):
    """Image, colour explanation and contribution map side by side; returns the figure."""
    import matplotlib.pyplot as plt

    img = _np(image)
    if img.ndim == 3 and img.shape[0] in (1, 3):
        img = img.transpose(1, 2, 0)
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.8))
    axes[0].imshow(np.clip(img.squeeze(), 0, 1), cmap="gray" if img.squeeze().ndim == 2 else None)
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(np.full(rgba.shape[:2] + (3,), 0.0))
    axes[1].imshow(rgba)
    axes[1].set_title("colour explanation", fontsize=9)
    plot_contribution_map(contributions, ax=axes[2], title="contributions")
    for ax in axes[:2]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=150, bbox_inches="tight")
        plt.close(fig)
    return fig
