"""``alignnet toy``: the B-cos toy figure (see :mod:`alignnet.toy`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from ..toy import make_toy_data, toy_experiment, toy_figure

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``alignnet toy``."""
    parser.add_argument("--out", type=Path, default=Path("toy.png"), help="output figure (PNG; default: toy.png)")
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists (refused otherwise)")
    parser.add_argument(
        "--b",
        type=float,
        nargs="+",
        default=[1.0, 2.0, 50.0],
        metavar="B",
        help="exponents to compare (default: 1 2 50)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the toy clusters (default: 0)")


def run(args: argparse.Namespace) -> int:
    """``alignnet toy``: write the figure and print each B's optimal angle."""
    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise InputError(f"--out must end in .png, .pdf or .svg, got {out}")
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it or choose another --out")
    if any(b < 1 for b in args.b):
        raise InputError(f"every B must be >= 1, got {args.b}")
    out.parent.mkdir(parents=True, exist_ok=True)
    data = make_toy_data(seed=args.seed)
    result = toy_experiment(data, tuple(args.b))
    toy_figure(result, data, out)
    print(f"class direction: {result.class_angle:.1f} deg")
    for b, angle in result.optimum.items():
        print(f"B={b:g}: optimal weight angle {angle:.1f} deg ({result.distance_to_class(b):.1f} deg from the class)")
    print(f"wrote {out}")
    return 0
