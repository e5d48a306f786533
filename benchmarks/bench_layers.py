"""B-cos convolution vs nn.Conv2d (and the `bcos` package's BcosConv2d when installed).

Prints, per shape, the median time of the forward and of forward+backward over >= 10 repetitions as
a ratio to a plain ``nn.Conv2d`` of the same shape measured in the same run, and the memory ratio.
Memory on CPU is the bytes of tensors autograd saves for the backward pass (the activation memory
that dominates training), measured with ``torch.autograd.graph.saved_tensors_hooks``; on CUDA it is
``max_memory_allocated`` during forward+backward.

    python benchmarks/bench_layers.py [--reps 15] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

import torch
from torch import nn

from alignnet.layers import BcosConv2d

SHAPES = [  # (name, batch, channels, size)
    ("CIFAR 64->64 @32x32", 64, 64, 32),
    ("CIFAR 128->128 @16x16", 64, 128, 16),
    ("ResNet 256->256 @14x14", 16, 256, 14),
]


def _time_interleaved(fns: dict[str, callable], reps: int) -> dict[str, float]:
    """Median time of each function, run round-robin so that background load hits all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _saved_bytes(layer: nn.Module, x: torch.Tensor) -> int:
    seen: dict[int, int] = {}  # by storage, so a tensor saved twice counts once

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x)
    return sum(seen.values())


def measure(layers: dict[str, nn.Module], x: torch.Tensor, reps: int) -> dict[str, dict[str, float]]:
    xg = x.clone().requires_grad_(True)

    def fwd(layer):
        def run():
            with torch.no_grad():
                layer(x)

        return run

    def fwd_bwd(layer):
        def run():
            layer.zero_grad(set_to_none=True)
            layer(xg).sum().backward()

        return run

    f = _time_interleaved({k: fwd(m) for k, m in layers.items()}, reps)
    fb = _time_interleaved({k: fwd_bwd(m) for k, m in layers.items()}, reps)
    return {k: {"fwd": f[k], "fwd_bwd": fb[k], "mem": _saved_bytes(m, xg)} for k, m in layers.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from bcos.modules import BcosConv2d as TheirBcosConv2d
    except ImportError:
        TheirBcosConv2d = None

    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"median of {args.reps} repetitions; ratios to nn.Conv2d of the same shape in the same run\n")
    header = "| shape | layer | fwd ms | fwd ratio | fwd+bwd ms | fwd+bwd ratio | memory ratio |"
    print(header)
    print("|" + "---|" * 7)
    torch.manual_seed(0)
    for name, n, c, size in SHAPES:
        x = torch.rand(n, c, size, size)
        layers = {"nn.Conv2d": nn.Conv2d(c, c, 3, padding=1, bias=False)}
        for m in (1, 2):
            layers[f"alignnet BcosConv2d max_out={m}"] = BcosConv2d(c, c, 3, padding=1, max_out=m)
            if TheirBcosConv2d is not None:
                layers[f"bcos BcosConv2d max_out={m}"] = TheirBcosConv2d(c, c, 3, padding=1, max_out=m)
        results = measure(layers, x, args.reps)
        base = results["nn.Conv2d"]
        for label, r in results.items():
            print(
                f"| {name} | {label} | {r['fwd'] * 1e3:.1f} | {r['fwd'] / base['fwd']:.2f} | "
                f"{r['fwd_bwd'] * 1e3:.1f} | {r['fwd_bwd'] / base['fwd_bwd']:.2f} | {r['mem'] / base['mem']:.2f} |"
            )


if __name__ == "__main__":
    main()
