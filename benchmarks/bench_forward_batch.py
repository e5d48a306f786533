"""Perturbation batches: how many perturbed copies per forward pass are fastest (benchmarks/RESULTS.md
"Perturbation batches").

1. The shipped models' forward pass on copies of one 32x32 image and of one 96x96 (3x3 grid) image, at
   512 copies per pass (the old fixed default) and at the automatic pixel budget
   (``alignnet.attribution.copies_per_pass``: 128 and 14 copies on a CPU): milliseconds per copy and the
   ratio, the two interleaved ``--reps`` times.
2. The real work: occlusion-9 ``attribute_maps`` on one 3x3 Fashion-MNIST grid (1,936 windows, all 9 classes)
   and pixel removal (``removal_curves``, 16 steps, ``--images`` images), 512 against automatic.
3. Integrated Gradients (50 steps) on the grid and on the images: the former rule (512 path points per pass
   for 32x32, scaled by the area: 56 on a 96x96 grid) against the pixel budget.

    python benchmarks/bench_forward_batch.py [--models fmnist_bcos,fmnist_coda] [--threads 1] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

import alignnet
from alignnet.attribution import EncodedModel, copies_per_pass, get_attributor
from alignnet.data import load_embedded
from alignnet.metrics import removal_curves, tile_grids
from alignnet.metrics._common import as_tensors


def _timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def _passes(module, batch, passes) -> None:
    for _ in range(passes):
        module(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="fmnist_bcos,fmnist_coda")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--parts", default="passes,occlusion,removal,intgrad", help="which measurements to run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, {args.threads} thread(s), load {os.getloadavg()[0]:.1f}")
    images, labels = as_tensors(load_embedded("test"))
    grid = tile_grids(images[:9][None], 3)
    classes = labels[:9][None]
    parts = set(args.parts.split(","))
    print("| model | input | copies/pass | ms per copy | ratio 512 / auto |")
    print("|---|---|---|---|---|")
    for name in args.models.split(",") if "passes" in parts else ():
        model = alignnet.load_pretrained(name).eval()
        encoded = EncodedModel(model)
        for side in (32, 96):
            x = encoded.encode(torch.rand(1, 3, side, side))
            auto = copies_per_pass(None, side, side, "cpu")
            times: dict[int, list[float]] = {512: [], auto: []}
            with torch.no_grad():
                for _ in range(args.reps):
                    for copies in times:
                        batch = x.expand(copies, -1, -1, -1).contiguous()
                        passes = max(1, 512 // copies)
                        times[copies].append(_timed(_passes, encoded, batch, passes) / (passes * copies))  # fmt: skip
            big, small = statistics.median(times[512]), statistics.median(times[auto])
            print(f"| {name} | {side}x{side} | 512 | {big * 1e3:.2f} | |")
            print(f"| {name} | {side}x{side} | {auto} (auto) | {small * 1e3:.2f} | {big / small:.2f} |")
    print("\n| model | work | seconds at 512 (or the old rule) | seconds auto | ratio |")
    print("|---|---|---|---|---|")
    for name in args.models.split(","):
        model = alignnet.load_pretrained(name).eval()
        if "occlusion" in parts:
            occ = {fb: get_attributor("occlusion9", model, forward_batch=fb) for fb in (512, None)}
            t = {fb: _timed(a.attribute_maps, grid, classes) for fb, a in occ.items()}
            print(f"| {name} | occlusion-9, one 3x3 grid (9 maps) | {t[512]:.1f} | {t[None]:.1f} | {t[512] / t[None]:.2f} |")  # fmt: skip
        x, y = images[: args.images], labels[: args.images]
        if "removal" in parts:
            maps = get_attributor("ours", model).attribute(x, y)
            t = {fb: _timed(removal_curves, model, x, y, maps, "least", steps=16, forward_batch=fb) for fb in (512, None)}  # fmt: skip
            print(f"| {name} | pixel removal, {args.images} images x 16 steps | {t[512]:.1f} | {t[None]:.1f} | {t[512] / t[None]:.2f} |")  # fmt: skip
        # Integrated Gradients (50 steps): the old rule, 512 path points per pass scaled by 1024 / pixels (56 on
        # a 96x96 grid), against the pixel budget (14 on a 96x96 grid, 128 on 32x32)
        ig_cases = [
            ("one 3x3 grid (9 maps)", grid, classes, 512 * 1024 // (96 * 96)),
            (f"{args.images} images", x, y, 512),
        ]
        for label, xs, ts, old in ig_cases if "intgrad" in parts else ():
            ig = {fb: get_attributor("intgrad", model, forward_batch=fb) for fb in (old, None)}
            run = {fb: (a.attribute_maps if xs is grid else a.attribute) for fb, a in ig.items()}
            reps: dict = {fb: [] for fb in run}
            for _ in range(args.reps):  # interleaved, median
                for fb, f in run.items():
                    reps[fb].append(_timed(f, xs, ts))
            t = {fb: statistics.median(r) for fb, r in reps.items()}
            print(f"| {name} | intgrad, {label}, {old} points per pass vs auto | {t[old]:.1f} | {t[None]:.1f} | {t[old] / t[None]:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
