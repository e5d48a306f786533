"""The B-cos toy example (docs/algorithms.md#toy-example; B-cos v1, Figure 2).

Two-dimensional points from three clusters: one cluster is the class, the two others are the
negatives. A single B-cos unit ``logit = gain * |cos(x, w)|^(B-1) * (w_hat . x) + bias`` with a
unit-norm weight ``w_hat = (cos phi, sin phi)`` is fitted with binary cross-entropy. The only free
parameter is the weight's angle ``phi``, so the loss can be drawn exactly against ``phi``: for
B = 1 (a linear unit) the optimum points away from the negatives (a discriminative direction),
and as B grows the optimum moves toward the class cluster's own direction (alignment).

``alignnet toy --out FIG.png`` draws the data, the loss curves for B in {1, 2, 50} and the optima.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InputError

__all__ = ["ToyData", "ToyResult", "angle_loss", "make_toy_data", "toy_figure", "toy_experiment", "train_angle"]

# Fixed logit scale and bias of the unit. With a free gain the loss of every angle can be driven
# toward 0 by an exploding weight norm (the clusters are nearly separable), which hides the
# angle's effect; a fixed gain and the papers' negative prior bias log(0.1/0.9) keep the loss
# a function of the angle alone.
GAIN = 5.0
BIAS = math.log(0.1 / 0.9)


@dataclass(frozen=True)
class ToyData:
    """Points ``x`` ``(N, 2)``, labels ``y`` ``(N,)`` (1 = class), cluster angles in degrees."""

    x: Tensor
    y: Tensor
    cluster: Tensor
    class_angle: float
    negative_angles: tuple[float, ...]


@dataclass(frozen=True)
class ToyResult:
    """Loss curves over the weight angle.

    Attributes
    ----------
    angles: ``(A,)`` weight angles in degrees, -180..180.
    losses: ``{B: (A,) mean BCE}``.
    optimum: ``{B: angle in degrees with the lowest loss}``.
    class_angle: direction of the class cluster's centre in degrees.
    """

    angles: Tensor
    losses: dict[float, Tensor]
    optimum: dict[float, float]
    class_angle: float

    def distance_to_class(self, b: float) -> float:
        """Absolute angular distance (degrees, 0..180) of B's optimum from the class direction."""
        return _angle_distance(self.optimum[b], self.class_angle)


def _angle_distance(a: float, b: float) -> float:
    d = (a - b + 180.0) % 360.0 - 180.0
    return abs(d)


def _direction(degrees: float) -> Tensor:
    r = math.radians(degrees)
    return torch.tensor([math.cos(r), math.sin(r)], dtype=torch.float64)


def make_toy_data(
    n_per_cluster: int = 100,
    class_angle: float = 30.0,
    negative_angles: tuple[float, ...] = (80.0, 150.0),
    spread: float = 0.15,
    seed: int = 0,
) -> ToyData:
    """Three Gaussian clusters of unit-norm centres at the given angles (degrees).

    Returns :class:`ToyData` with ``x`` float64 ``(3 * n_per_cluster, 2)``.
    """
    if n_per_cluster < 1:
        raise InputError(f"n_per_cluster must be >= 1, got {n_per_cluster}")
    if not spread >= 0:
        raise InputError(f"spread must be >= 0, got {spread}")
    g = torch.Generator().manual_seed(seed)
    angles = (class_angle, *negative_angles)
    xs = [_direction(a) + spread * torch.randn(n_per_cluster, 2, generator=g, dtype=torch.float64) for a in angles]
    x = torch.cat(xs)
    cluster = torch.arange(len(angles)).repeat_interleave(n_per_cluster)
    y = (cluster == 0).double()
    return ToyData(x, y, cluster, float(class_angle), tuple(float(a) for a in negative_angles))


def _unit_logits(x: Tensor, phi: Tensor, b: float) -> Tensor:
    """``(N, A)`` logits of the B-cos unit for weight angles ``phi`` ``(A,)`` in radians."""
    w = torch.stack([phi.cos(), phi.sin()], dim=1)  # (A, 2), unit norm
    linear = x @ w.T
    cos = linear / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-12)
    return GAIN * cos.abs().pow(b - 1) * linear + BIAS


def angle_loss(data: ToyData, b: float, phi: Tensor) -> Tensor:
    """Mean BCE of the unit with exponent ``b`` for each angle in ``phi`` (radians): ``(A,)``."""
    if not b >= 1:
        raise InputError(f"B must be >= 1, got {b}")
    logits = _unit_logits(data.x, phi.to(data.x.dtype), b)
    targets = data.y[:, None].expand_as(logits)
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(0)


def train_angle(data: ToyData, b: float, n_starts: int = 8, steps: int = 300, lr: float = 0.05) -> float:
    """Fit the weight angle with Adam on the BCE loss; returns the final angle in degrees.

    For large B the loss is flat away from the clusters (``|cos|^(B-1)`` vanishes), so gradient
    descent starts from ``n_starts`` evenly spaced angles at once and keeps the best end point.
    """
    if n_starts < 1:
        raise InputError(f"n_starts must be >= 1, got {n_starts}")
    init = torch.arange(n_starts, dtype=torch.float64) * (2 * math.pi / n_starts) - math.pi
    phi = init.clone().requires_grad_(True)
    opt = torch.optim.Adam([phi], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        angle_loss(data, b, phi).sum().backward()  # independent starts: the sum's gradient is per start
        opt.step()
    with torch.no_grad():
        best = phi.detach()[angle_loss(data, b, phi).argmin()]
    return (math.degrees(float(best)) + 180.0) % 360.0 - 180.0


def toy_experiment(
    data: ToyData | None = None, bs: tuple[float, ...] = (1.0, 2.0, 50.0), n_angles: int = 721
) -> ToyResult:
    """Loss against weight angle (``n_angles`` points over -180..180 degrees) for each B."""
    data = data or make_toy_data()
    if n_angles < 3:
        raise InputError(f"n_angles must be >= 3, got {n_angles}")
    phi = torch.linspace(-math.pi, math.pi, n_angles, dtype=torch.float64)
    losses, optimum = {}, {}
    for b in bs:
        loss = angle_loss(data, float(b), phi)
        losses[float(b)] = loss
        optimum[float(b)] = math.degrees(float(phi[loss.argmin()]))
    return ToyResult(torch.rad2deg(phi), losses, optimum, data.class_angle)


def toy_figure(result: ToyResult, data: ToyData, path: str | Path | None = None):
    """Left: the three clusters and each B's optimal weight direction; right: loss vs angle."""
    import matplotlib.pyplot as plt

    colours = {1.0: "tab:blue", 2.0: "tab:orange", 50.0: "tab:green"}
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4.2))
    marks = ["o", "x", "x"]
    for k in range(int(data.cluster.max()) + 1):
        pts = data.x[data.cluster == k]
        label = "class" if k == 0 else f"negatives ({k})"
        ax0.scatter(
            pts[:, 0],
            pts[:, 1],
            s=8,
            marker=marks[min(k, 2)],
            alpha=0.6,
            label=label,
            color="black" if k == 0 else "grey",
        )
    for i, (b, angle) in enumerate(result.optimum.items()):
        c = colours.get(b, f"C{i}")
        d = _direction(angle) * 1.4
        ax0.annotate(
            "", xy=(float(d[0]), float(d[1])), xytext=(0, 0), arrowprops={"arrowstyle": "->", "color": c, "lw": 2}
        )
        ax0.text(float(d[0]) * 1.08, float(d[1]) * 1.08, f"B={b:g}", color=c, fontsize=9)
        loss = result.losses[b]
        ax1.plot(result.angles, loss, color=c, label=f"B={b:g}")
        ax1.plot([angle], [float(loss.min())], marker="*", markersize=12, color=c)
    lim = max(1.6, float(data.x.abs().max()) * 1.1)
    ax0.set_xlim(-lim, lim)
    ax0.set_ylim(-lim, lim)
    ax0.set_aspect("equal")
    ax0.axhline(0, color="0.85", lw=0.8)
    ax0.axvline(0, color="0.85", lw=0.8)
    ax0.set_title("data and optimal weight directions")
    ax0.legend(fontsize=8, loc="lower left")
    ax1.axvline(result.class_angle, color="black", ls="--", lw=1, label="class direction")
    ax1.set_xlabel("weight angle (degrees)")
    ax1.set_ylabel("BCE loss")
    ax1.set_xlim(-180, 180)
    ax1.set_title("loss against weight angle (optimum = star)")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=150)
        plt.close(fig)
    return fig
