"""B-cosified torchvision models: exactness, parameter counts and forward cost against the original.

For torchvision ResNet-18 and DenseNet-121 with random weights (``--imagenet`` uses the ImageNet weights
when torchvision's cache already has them; nothing is downloaded): the completeness error of
``alignnet.explain`` in float64 (``max |sum(contributions) - score| / max |score|``, score = logit without the fixed logit bias), the parameter
counts of the original and the B-cosified network, and the forward time of both at batch 8, 224x224
(median of ``--repeats`` interleaved runs after a warm-up, same process, same threads), as their ratio.

Usage: ``python benchmarks/bench_bcosify.py [--repeats 5] [--threads 1] [--size 224]``; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torchvision

import alignnet

MODELS = {"resnet18": "ResNet18_Weights", "densenet121": "DenseNet121_Weights"}


def _cached_weights(arch: str):
    weights = getattr(torchvision.models, MODELS[arch]).IMAGENET1K_V1
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    return torch.load(path, weights_only=True) if path.is_file() else None


def _interleaved(fns: dict, repeats: int) -> dict[str, float]:
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--imagenet", action="store_true", help="use cached ImageNet weights when present")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"machine: {platform.machine()}, {args.threads} thread(s), torch {torch.__version__}, load {os.getloadavg()[0]:.1f}"
    )
    print(f"forward: batch {args.batch} at {args.size}x{args.size}, median of {args.repeats} interleaved runs\n")
    print(
        "| model | weights | completeness error (float64) | params original | params B-cosified | "
        "fwd original ms | fwd B-cosified ms | ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for arch in MODELS:
        model = torchvision.models.get_model(arch, weights=None).eval()
        weights = "random"
        if args.imagenet:
            state = _cached_weights(arch)
            if state is not None:
                model.load_state_dict(state)
                weights = "ImageNet (cache)"
        bnet = alignnet.bcosify(model).eval()
        x64 = torch.rand(2, 3, args.size, args.size, dtype=torch.float64)
        bias = bnet.logit.bias.clone()
        bnet.logit.bias.zero_()  # random B-cos nets give tiny class scores that rounding next to the bias would hide
        error = alignnet.explain(bnet.double(), x64).completeness_error()
        bnet.logit.bias.copy_(bias)
        bnet.float()
        n_orig = sum(p.numel() for p in model.parameters())
        n_b = sum(p.numel() for p in bnet.parameters())
        mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        x = torch.rand(args.batch, 3, args.size, args.size)
        with torch.inference_mode():
            t = _interleaved(
                {"orig": lambda m=model, x=(x - mean) / std: m(x), "bcos": lambda m=bnet, x=x: m(x)}, args.repeats
            )
        print(
            f"| {arch} | {weights} | {error:.1e} | {n_orig:,} | {n_b:,} | {t['orig'] * 1e3:.0f} | "
            f"{t['bcos'] * 1e3:.0f} | {t['bcos'] / t['orig']:.2f} |"
        )
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
