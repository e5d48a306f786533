"""``alignnet demo``: the main job on the embedded data (see :mod:`alignnet.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..demo import DemoConfig, DemoResult, choose_output_dir, run_demo

__all__ = ["add_arguments", "run"]


def _summary(result: DemoResult) -> str:
    lines = ["", "alignnet demo summary"]
    for kind, acc in result.accuracy.items():
        lines.append(f"  {kind}: test accuracy {100 * acc:.1f} % ({result.sources.get(kind, '')})")
    for kind, means in result.localisation.items():
        lines.append(f"  {kind} localisation mean (2x2): " + ", ".join(f"{m} {v:.3f}" for m, v in means.items()))
    for kind, s in result.stability.items():
        lines.append(f"  {kind} clip stability: {s:.3f}")
    info = result.imagenet
    if "figure" in info:
        pairs = ", ".join(f"{p}: {c}" for p, c in zip(info["photos"], info["predicted"], strict=True))
        lines.append(f"  imagenet ({info['model']}): {pairs}")
        if "top1" in info:
            lines.append(f"  imagenet top-1 on the labelled photos: {100 * info['top1']:.0f} %")
        if "clip" in info:
            lines.append(f"  imagenet clip {info['clip']}: {info['clip_class']}, stability {info['stability']:.3f}")
    elif info:
        lines.append(f"  imagenet: {info.get('note', 'skipped')}")
    lines.append(
        f"  time: {result.total_seconds:.1f} s (" + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()) + ")"
    )
    lines.append(f"  report: {result.report}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``alignnet demo``."""
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output folder; refused if it exists and is not empty, unless --force "
        "(default: ./alignnet-demo, or the first free ./alignnet-demo-N)",
    )
    parser.add_argument("--force", action="store_true", help="write into a non-empty --out, overwriting its files")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smaller run: 3 images, 2 grids with ours and gradcam only, a 12-frame clip (the test suite runs this)",
    )
    parser.add_argument(
        "--bcos",
        default="fmnist_bcos",
        metavar="MODEL",
        help="B-cos model: shipped name, .safetensors file or registry name (default: fmnist_bcos)",
    )
    parser.add_argument(
        "--coda",
        default="fmnist_coda",
        metavar="MODEL",
        help="CoDA model, as --bcos (default: fmnist_coda); 'none' skips it",
    )
    parser.add_argument(
        "--bcosified",
        default="fmnist_bcosified",
        metavar="MODEL",
        help="B-cosified model, as --bcos (default: fmnist_bcosified when this installation ships it); 'none' skips it",
    )
    parser.add_argument(
        "--imagenet",
        default=None,
        metavar="WEIGHTS",
        help="ImageNet weights for the real-photo and street-clip section, e.g. bcos_resnet18 (downloaded once if not "
        "cached: you asked for it). Default: the first ImageNet weights already in the cache, else the section is "
        "skipped with a note; the demo never downloads on its own",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """``alignnet demo``."""
    out = choose_output_dir(args.out, args.force)
    config = DemoConfig.quick() if args.quick else DemoConfig()
    from ..pretrained import get_weights, list_pretrained

    specs = {"bcos": args.bcos, "coda": args.coda}
    if args.bcosified != "fmnist_bcosified" or "fmnist_bcosified" in list_pretrained():
        specs["bcosified"] = args.bcosified
    if args.imagenet is not None:
        get_weights(args.imagenet)  # an unknown name fails before any work
    print(f"alignnet demo -> {out}")
    result = run_demo(out, config, specs, progress=not args.no_progress, imagenet=args.imagenet)
    print(_summary(result))
    return 0
