"""``alignnet compare IMAGE... --methods ours,gradcam,intgrad,...``: the papers' side-by-side figure.

One row per image (its explained class on the left), one column per attribution method of the
registry (:func:`alignnet.attribution.list_attributors`), drawn by
:func:`alignnet.metrics.plots.compare_figure`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..errors import InputError
from ..models import resolve_model
from ._common import add_model_arguments, check_new_files, class_name, load_images

__all__ = ["DEFAULT_METHODS", "add_arguments", "parse_methods", "run"]

DEFAULT_METHODS = ("ours", "gradcam", "intgrad", "occlusion5")


def parse_methods(text: str) -> list[str]:
    """Comma-separated registry names (``all`` for every registered method), checked against the registry."""
    from ..attribution import list_attributors

    known = list_attributors()
    names = known if text.strip() == "all" else [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise InputError("--methods is empty")
    unknown = [m for m in names if m not in known]
    if unknown:
        raise InputError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return list(dict.fromkeys(names))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``alignnet compare``."""
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (any size or mode)")
    add_model_arguments(parser)
    from ..attribution import list_attributors  # the registry is the one source of the method names

    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma-separated attribution methods, or 'all' (default: %(default)s); "
        f"known: {', '.join(list_attributors())}",
    )
    parser.add_argument("--target", type=int, default=None, metavar="K", help="class to explain (default: predicted)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("compare.png"),
        metavar="FILE",
        help="output figure, .png/.pdf/.svg (default: compare.png)",
    )
    parser.add_argument("--max-images", type=int, default=8, help="rows in the figure (default: 8)")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists (refused otherwise)")


def run(args: argparse.Namespace) -> int:
    """``alignnet compare``: write the figure and print each method's time."""
    from ..metrics.plots import compare_figure

    methods = parse_methods(args.methods)
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise InputError(f"--out must end in .png, .pdf or .svg, got {out}")
    if args.max_images < 1:
        raise InputError(f"--max-images must be >= 1, got {args.max_images}")
    check_new_files([out], args.force)
    model = resolve_model(args.model, args.device)
    images = load_images(args.images, model, args.resize)[: args.max_images]
    if len({tuple(x.shape) for x in images}) > 1:
        raise InputError("with --resize none all images must have the same size for one figure; use --resize crop")
    batch = torch.stack(images)
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(batch.to(device)).cpu()
    if args.target is not None and not 0 <= args.target < logits.shape[1]:
        raise InputError(f"--target {args.target} is out of range: the model has {logits.shape[1]} classes")
    targets = logits.argmax(1) if args.target is None else torch.full((len(images),), args.target)
    names = getattr(model, "class_names", None)
    start = time.perf_counter()
    fig = compare_figure(model, batch, targets, methods=methods, class_names=names, max_images=len(images))
    seconds = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    for path, t in zip(args.images, targets.tolist(), strict=False):
        print(f"{path}: {class_name(model, t)}")
    print(f"{len(methods)} methods ({', '.join(methods)}) on {len(images)} images in {seconds:.1f} s")
    print(f"wrote {out}")
    return 0
