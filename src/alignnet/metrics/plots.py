"""The papers' figures: localisation box plots, pixel-removal curves, ablation plots, comparison grids.

Every function returns a :class:`matplotlib.figure.Figure` built without ``pyplot`` (no global
state, safe in servers and tests); save it with ``fig.savefig(path)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from ..errors import InputError
from ..layers import eval_mode
from ._common import model_device

__all__ = ["compare_figure", "plot_ablation", "plot_localisation_boxes", "plot_pixel_removal"]


def plot_localisation_boxes(
    scores: Mapping[str, Sequence[float] | np.ndarray], grid: int | None = 3, title: str | None = None
) -> Figure:
    """Box plot of localisation scores per method (``{method: (n,) scores}``), the mean as a dot.

    ``grid`` draws the score of a uniform map, ``1 / grid**2``, as a dashed line (None: no line).
    """
    if not scores:
        raise InputError("no scores to plot")
    names = list(scores)
    data = [np.asarray(scores[n], dtype=float) for n in names]
    fig = Figure(figsize=(1.1 * len(names) + 2, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.boxplot(data, tick_labels=names, showfliers=False, widths=0.6)
    ax.plot(range(1, len(names) + 1), [d.mean() for d in data], "o", color="tab:red", label="mean")
    if grid:
        ax.axhline(1 / grid**2, ls="--", color="grey", lw=1, label=f"uniform (1/{grid**2})")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("localisation score")
    ax.legend(loc="upper right", fontsize="small")
    if title:
        ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    return fig


def plot_pixel_removal(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], order: str = "least", title: str | None = None
) -> Figure:
    """Mean pixel-removal curves, ``{method: (fractions (S,), mean probability (S,))}``."""
    if not curves:
        raise InputError("no curves to plot")
    fig = Figure(figsize=(5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for name, (fractions, curve) in curves.items():
        ax.plot(100 * np.asarray(fractions), np.asarray(curve), label=name)
    ax.set_xlabel(f"pixels removed, {order} important first (%)")
    ax.set_ylabel("target class probability")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def plot_ablation(
    values: Sequence[float],
    metrics: Mapping[str, Sequence[float]],
    xlabel: str = "temperature T",
    ylabel: str = "mean localisation",
    log_x: bool = True,
    reference: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> Figure:
    """A metric against the ablated hyper-parameter (the CoDA temperature or the B-cos ``b``).

    ``metrics``: ``{method: one value per entry of values}``; ``reference``: optional published
    curves ``{label: (values, metric)}`` drawn dashed.
    """
    values = np.asarray(values, dtype=float)
    order = np.argsort(values)
    fig = Figure(figsize=(5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for name, ys in metrics.items():
        ys = np.asarray(ys, dtype=float)
        if ys.shape != values.shape:
            raise InputError(f"{name}: {ys.size} values for {values.size} settings")
        ax.plot(values[order], ys[order], "o-", label=name)
    for name, (xs, ys) in (reference or {}).items():
        ax.plot(xs, ys, "s--", alpha=0.6, label=name)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small")
    return fig


def _image_hwc(image: Tensor) -> np.ndarray:
    img = image.detach().cpu().float().clamp(0, 1)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return img[:3].permute(1, 2, 0).numpy()


def compare_figure(
    model: nn.Module,
    images: Tensor,
    targets: Tensor | Sequence[int] | None = None,
    methods: Sequence[str] = ("ours", "grad", "ixg", "intgrad", "gradcam", "occlusion9", "rise"),
    method_configs: Mapping[str, dict] | None = None,
    class_names: Sequence[str] | None = None,
    max_images: int = 4,
) -> Figure:
    """The papers' qualitative comparison: each image, then each method's per-pixel map, side by side.

    Parameters
    ----------
    images:
        ``(N, C, H, W)`` in [0, 1]; the first ``max_images`` are shown, one per row.
    targets:
        Explained class per image (default: the prediction).
    methods:
        Registry names; methods that refuse the model are shown as an empty panel with the reason.

    Maps are drawn with a diverging colour map centred at 0 and scaled per panel to the 99.5th
    percentile of their absolute values (red: evidence for the class, blue: against).
    """
    from ..attribution import get_attributor

    images = images[:max_images]
    n = images.shape[0]
    if n == 0:
        raise InputError("no images to show")
    device = model_device(model)
    images = images.to(device)
    if targets is None:
        with torch.no_grad(), eval_mode(model):
            targets = model(images).argmax(1)
    targets = torch.as_tensor(targets, device=device).long().reshape(-1)[:n]
    maps: dict[str, np.ndarray | str] = {}
    for name in methods:
        try:
            att = get_attributor(name, model, **(method_configs or {}).get(name, {}))
            maps[name] = att.attribute(images, targets).sum(1).cpu().numpy()
        except ValueError as exc:
            maps[name] = str(exc)
    cols = 1 + len(methods)
    fig = Figure(figsize=(1.6 * cols, 1.7 * n + 0.3), layout="constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(_image_hwc(images[i]))
        label = int(targets[i])
        axes[i, 0].set_ylabel(class_names[label] if class_names else f"class {label}", fontsize="small")
        for j, name in enumerate(methods, start=1):
            ax = axes[i, j]
            m = maps[name]
            if isinstance(m, str):
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
            else:
                v = float(np.percentile(np.abs(m[i]), 99.5)) or 1.0
                ax.imshow(m[i], cmap="bwr", vmin=-v, vmax=v)
            if i == 0:
                ax.set_title(name, fontsize="small")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("image", fontsize="small")
    return fig
