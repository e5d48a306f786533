"""``alignnet video IN --out OUT.gif|.mp4``: explain a clip frame by frame (see :mod:`alignnet.video`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data import fit_to_model
from ..errors import InputError
from ..models import resolve_model
from ..video import explain_frames, read_video, render_panels, write_animation
from ._common import add_model_arguments, check_new_files, class_name

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``alignnet video``."""
    parser.add_argument(
        "input", type=Path, metavar="IN", help="video file (anything PyAV/imageio reads: mp4, avi, gif, ...)"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="OUT", help="output animation, .gif or .mp4")
    add_model_arguments(parser)
    parser.add_argument(
        "--target",
        type=int,
        default=None,
        metavar="K",
        help="class to explain (default: the class predicted most often over the clip)",
    )
    parser.add_argument("--max-frames", type=int, default=64, help="read at most this many frames (default: 64)")
    parser.add_argument("--stride", type=int, default=1, help="keep every n-th frame (default: 1)")
    parser.add_argument("--fps", type=float, default=None, help="output frame rate (default: the input's / stride)")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per forward/backward pass (default: 16)")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists (refused otherwise)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """``alignnet video``: explain a clip and write the side-by-side animation."""

    out = Path(args.out)
    if out.suffix.lower() not in (".gif", ".mp4"):
        raise InputError(f"--out must end in .gif or .mp4, got {out}")
    check_new_files([out], args.force)
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    frames, fps = read_video(args.input, args.max_frames, args.stride)  # bad input fails before the model loads
    model = resolve_model(args.model, args.device, progress=not args.no_progress)
    frames = fit_to_model(model, frames, args.resize)
    num_classes = getattr(model, "model_args", {}).get("num_classes")
    if args.target is not None and args.target < 0:
        raise InputError(f"--target must be a class index >= 0, got {args.target}")
    result = explain_frames(model, frames, args.target, args.batch_size, progress=not args.no_progress)
    write_animation(out, render_panels(result), args.fps or fps / args.stride)
    agree = float((result.predictions == result.target).float().mean())
    print(
        f"{len(frames)} frames at {frames.shape[-2]}x{frames.shape[-1]}; explained {class_name(model, result.target)}"
        f" (predicted in {agree:.0%} of the frames{'' if num_classes is None else f' of {num_classes} classes'})"
    )
    print(f"stability (mean correlation of consecutive contribution maps): {result.stability:.3f}")
    print(f"wrote {out}")
    return 0
