"""Wall time of each ``alignnet demo`` stage and video explanation throughput on the CPU.

    python benchmarks/bench_demo.py                 # full demo + video frames/s
    python benchmarks/bench_demo.py --quick         # the quick demo the test suite runs
    python benchmarks/bench_demo.py --skip-demo     # only the video throughput

Video: ``alignnet.video.explain_frames`` (forward to pick the class, explanation, colour
explanation per frame) on random frames, for a ``bcos_cifar10_9l``-sized model at 32x32 and a
``bcos_resnet18``-sized model at 224x224 (random weights: the cost does not depend on them),
plus the whole pipeline with rendering and GIF writing. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

import alignnet
from alignnet.demo import DemoConfig, run_demo
from alignnet.video import explain_frames, render_panels, write_animation


def bench_demo(quick: bool) -> None:
    config = DemoConfig.quick() if quick else DemoConfig()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = run_demo(Path(tmp) / "demo", config, progress=False, verbose=False)
        wall = time.perf_counter() - start
    print(f"\n### demo stages ({'--quick' if quick else 'full'}; load average before: {os.getloadavg()[0]:.1f})\n")
    print("| stage | wall seconds | CPU seconds (all threads) |\n|---|---|---|")
    for stage, seconds in result.seconds.items():
        print(f"| {stage} | {seconds:.1f} | {result.cpu_seconds[stage]:.1f} |")
    print(f"| **total** | **{wall:.1f}** | **{sum(result.cpu_seconds.values()):.1f}** |")
    print("\nmodels: " + "; ".join(f"{k}: {v}" for k, v in result.sources.items()))
    print("accuracy: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in result.accuracy.items()))
    for kind, means in result.localisation.items():
        print(f"localisation {kind}: " + ", ".join(f"{m} {v:.3f}" for m, v in means.items()))
    print("stability: " + ", ".join(f"{k} {v:.3f}" for k, v in result.stability.items()))


def bench_video(frames_small: int, frames_large: int, batch_size: int) -> None:
    cases = [
        ("bcos_cifar10_9l", {}, 32, frames_small),
        ("bcos_resnet18", {"num_classes": 1000}, 224, frames_large),
    ]
    print(f"\n### video explanation throughput (CPU, {torch.get_num_threads()} threads, batch {batch_size})\n")
    print("| model | parameters | frame size | frames | explain frames/s | explain + render + GIF frames/s |")
    print("|---|---|---|---|---|---|")
    for name, kwargs, size, n in cases:
        torch.manual_seed(0)
        model = alignnet.create_model(name, **kwargs).eval()
        params = sum(p.numel() for p in model.parameters())
        frames = torch.rand(n, 3, size, size)
        explain_frames(model, frames[:1], progress=False)  # warm-up
        start = time.perf_counter()
        result = explain_frames(model, frames, batch_size=batch_size, progress=False)
        explain_s = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            write_animation(Path(tmp) / "clip.gif", render_panels(result), fps=8)
        total_s = time.perf_counter() - start
        print(f"| {name} | {params:,} | {size}x{size} | {n} | {n / explain_s:.2f} | {n / total_s:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="time the quick demo instead of the full one")
    parser.add_argument("--skip-demo", action="store_true", help="only the video throughput")
    parser.add_argument("--skip-video", action="store_true", help="only the demo stages")
    parser.add_argument("--frames-small", type=int, default=64, help="frames for the 32x32 model")
    parser.add_argument("--frames-large", type=int, default=8, help="frames for the 224x224 model")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if not args.skip_demo:
        bench_demo(args.quick)
    if not args.skip_video:
        bench_video(args.frames_small, args.frames_large, args.batch_size)


if __name__ == "__main__":
    main()
