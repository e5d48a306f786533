"""MaxOut reduction on a CPU: ``max(dim).values`` vs ``amax(dim)`` (what BcosConv2d uses without autograd).

    python benchmarks/bench_maxout.py [--threads N]

Prints forward-only and forward+backward times of the two reductions on the MaxOut tensors of
``bcos_cifar10_9l`` at width 0.25 (batch 256, 32x32 input), and the whole model's inference speed.
"""

from __future__ import annotations

import argparse
import time

import torch

import alignnet
from alignnet.layers import bcos


def best_ms(fn, reps: int = 5) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def reductions(n: int, o: int, hw: int) -> tuple[float, float, float, float]:
    """Forward-only and forward+backward ms of ``max().values`` and ``amax`` over the MaxOut pairs."""
    y = torch.randn(n, o, 2, hw, hw)
    with torch.inference_mode():
        t_max = best_ms(lambda: y.max(2).values)
        t_amax = best_ms(lambda: y.amax(2))
    yg, g = y.clone().requires_grad_(), torch.randn(n, o, hw, hw)

    def fwd_bwd(reduce) -> float:
        def run() -> None:
            reduce(yg).backward(g)
            yg.grad = None

        return best_ms(run, reps=3)

    return t_max, t_amax, fwd_bwd(lambda t: t.max(2).values), fwd_bwd(lambda t: t.amax(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = 256
    print(f"threads: {torch.get_num_threads()}")
    print(
        "| MaxOut input (N, O, 2, H, W) | max().values fwd ms | amax fwd ms | ratio | max fwd+bwd ms | amax fwd+bwd ms |"
    )
    print("|---|---|---|---|---|---|")
    for o, hw in ((16, 32), (32, 16), (64, 8)):
        t_max, t_amax, fb_max, fb_amax = reductions(n, o, hw)
        print(
            f"| ({n}, {o}, 2, {hw}, {hw}) | {t_max:.1f} | {t_amax:.1f} | {t_max / t_amax:.1f}x | {fb_max:.1f} | {fb_amax:.1f} |"
        )
    model = alignnet.create_model("bcos_cifar10_9l", width=0.25).eval()
    x = torch.rand(n, 3, 32, 32)
    rates = {}
    for name, reduce in (("amax (used)", None), ("max().values", lambda t, dim: t.max(dim=dim).values)):
        original = bcos._max_out
        if reduce is not None:
            bcos._max_out = reduce
        try:
            with torch.inference_mode():
                rates[name] = n / best_ms(lambda: model(x), reps=3) * 1e3
        finally:
            bcos._max_out = original
    print("bcos_cifar10_9l width 0.25 inference, images/s: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))


if __name__ == "__main__":
    main()
