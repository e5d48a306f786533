"""``alignnet explain IMAGE... --model NAME_OR_PATH [--target K|pred|topN] [--threshold P] [--out DIR] [--layers]``.

A multi-label model (trained on a label CSV, docs/own-data.md) explains every label with ``sigmoid(logit) >=``
its saved threshold (``--threshold`` overrides it; any model explains every class above a given ``--threshold``).

For every image one PNG ``<stem>_explain.png`` (images of the same stem in different folders get their
folders in front: ``a/x.png``, ``b/x.png`` -> ``a_x_explain.png``, ``b_x_explain.png``) with, per explained class, the image, the colour
explanation (docs/algorithms.md#colour-explanations) and the signed contribution map (red: for the class, blue:
against). ``--layers`` adds ``<stem>_layers.png``: the contribution map of the same logit at the
input of every dynamic layer (:func:`alignnet.explanation.layer_contributions`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import Tensor

from ..errors import InputError
from ..explanation import colour_explanation, explain, layer_contributions
from ..metrics._common import unique_stems
from ..metrics.multilabel import labels_above
from ..models import resolve_model
from ..models.io import multilabel_threshold
from ._common import add_model_arguments, check_new_files, class_name, load_images

__all__ = ["add_arguments", "parse_target", "run"]


def parse_target(text: str) -> int | str:
    """``--target``: ``pred`` (the predicted class), a class index ``K``, or ``topN`` (e.g. ``top3``)."""
    t = text.strip().lower()
    if t == "pred":
        return "pred"
    if t.startswith("top") and t[3:].isdigit() and int(t[3:]) >= 1:
        return f"top{int(t[3:])}"
    try:
        k = int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected pred, a class index or topN (e.g. top3), got {text!r}") from None
    if k < 0:
        raise argparse.ArgumentTypeError(f"class index must be >= 0, got {k}")
    return k


def _targets_for(logits: Tensor, target: int | str | None, threshold: float | None = None) -> list[int]:
    """The classes to explain: ``target`` (``pred``, ``topN``, an index) or, with ``target=None`` and a
    ``threshold``, every class whose ``sigmoid(logit) >= threshold`` from the highest logit down (the top one
    when none is)."""
    if target is None and threshold is not None:
        return labels_above(logits, threshold) or [int(logits.argmax())]
    if target is None or target == "pred":
        return [int(logits.argmax())]
    if isinstance(target, str):  # topN
        n = min(int(target[3:]), logits.numel())
        return logits.topk(n).indices.tolist()
    if target >= logits.numel():
        raise InputError(f"--target {target} is out of range: the model has {logits.numel()} classes")
    return [int(target)]


def _explanation_figure(model, image: Tensor, targets: list[int], title: str):
    from matplotlib.figure import Figure

    from ..explanation import plot_contribution_map

    e = explain(model, image[None].to(next(model.parameters()).device), torch.tensor([targets]))
    probs = torch.sigmoid(e.logits[0])
    rows = len(targets)
    fig = Figure(figsize=(7.2, 2.4 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, 3, squeeze=False)
    img = image.permute(1, 2, 0).cpu().numpy()
    for r, t in enumerate(targets):
        axes[r, 0].imshow(img)
        axes[r, 0].set_title(
            f"{class_name(model, t)}\nlogit {float(e.logits[0, t]):.2f}, p {float(probs[t]):.2f}", fontsize=8
        )
        if e.inputs.shape[1] == 6:
            rgba = colour_explanation(e, 0, r)
            axes[r, 1].imshow(rgba[..., :3] * rgba[..., 3:])
            axes[r, 1].set_title("colour explanation", fontsize=8)
        else:
            axes[r, 1].text(
                0.5,
                0.5,
                "no colour explanation\n(model without [x, 1-x] encoding)",
                ha="center",
                va="center",
                fontsize=7,
                transform=axes[r, 1].transAxes,
            )
        plot_contribution_map(e.contributions[0, r].cpu(), ax=axes[r, 2], title="contributions (red +, blue -)")
        for ax in axes[r]:
            ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return fig, e


def _layers_figure(model, image: Tensor, target: int, title: str):
    from matplotlib.figure import Figure

    from ..explanation import plot_contribution_map

    maps = layer_contributions(model, image.to(next(model.parameters()).device), target)
    cols = min(len(maps), 5)
    rows = -(-len(maps) // cols)
    fig = Figure(figsize=(2.2 * cols, 2.3 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (name, m) in zip(axes.flat, maps, strict=False):
        plot_contribution_map(m.cpu(), ax=ax, title=f"input of {name}\n{tuple(m.shape)}, sum {float(m.sum()):.2f}")
    fig.suptitle(title, fontsize=9)
    return fig


def _probability(text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1), got {text!r}") from None
    if not 0 < p < 1:
        raise argparse.ArgumentTypeError(f"expected a probability in (0, 1), got {text!r}")
    return p


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``alignnet explain``."""
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (any size or mode)")
    add_model_arguments(parser)
    parser.add_argument(
        "--target",
        type=parse_target,
        default=None,
        metavar="K|pred|topN",
        help="class to explain: a class index K, 'pred' (the predicted class; the default for a single-label "
        "model) or 'topN' (e.g. top3: the N highest logits); a multi-label model explains every label above "
        "its threshold unless --target is given",
    )
    parser.add_argument(
        "--threshold",
        type=_probability,
        metavar="P",
        help="explain every class with sigmoid(logit) >= P (default for a multi-label model: its saved threshold)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("explanations"),
        metavar="DIR",
        help="folder for <stem>_explain.png (and <stem>_layers.png); default: ./explanations",
    )
    parser.add_argument(
        "--layers", action="store_true", help="also draw the contribution map at the input of every dynamic layer"
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing output files (refused otherwise)")


def run(args: argparse.Namespace) -> int:
    """``alignnet explain``: write one figure per image and print the explained classes."""
    paths = [Path(p) for p in args.images]
    out = Path(args.out)
    stems = unique_stems(paths)  # a/x.png, b/x.png, x_2.png -> a_x, b_x, x_2: one file each
    planned = [out / f"{s}_explain.png" for s in stems] + (
        [out / f"{s}_layers.png" for s in stems] if args.layers else []
    )
    check_new_files(planned, args.force)
    model = resolve_model(args.model, args.device)
    images = load_images(paths, model, args.resize)
    out.mkdir(parents=True, exist_ok=True)
    threshold = args.threshold
    if threshold is None and args.target is None:
        threshold = multilabel_threshold(model)  # None for a single-label model: explain the predicted class
    print(f"model: {getattr(model, 'source', type(model).__name__)}")
    for path, stem, image in zip(paths, stems, images, strict=True):
        with torch.no_grad():
            logits = model(image[None].to(next(model.parameters()).device))[0].cpu()
        targets = _targets_for(logits, args.target, threshold if args.target is None else None)
        fig, e = _explanation_figure(model, image, targets, f"{path.name} ({image.shape[-2]}x{image.shape[-1]})")
        fig.savefig(out / f"{stem}_explain.png", dpi=130)
        explained = ", ".join(
            f"{class_name(model, t)} logit {float(logits[t]):.2f} p {float(torch.sigmoid(logits[t])):.2f}"
            for t in targets
        )
        if args.target is None and threshold is not None:
            above = float(torch.sigmoid(logits[targets[0]])) >= threshold
            explained = (f"labels with p >= {threshold:g}: " if above else f"no label has p >= {threshold:g}; "
                         "the highest: ") + explained  # fmt: skip
        print(f"{path}: {explained} (completeness error {e.completeness_error():.1e}) -> {out / f'{stem}_explain.png'}")
        if args.layers:
            _layers_figure(model, image, targets[0], f"{path.name}: {class_name(model, targets[0])}").savefig(
                out / f"{stem}_layers.png", dpi=130
            )
            print(f"  per-layer maps -> {out / f'{stem}_layers.png'}")
    return 0
