"""Training throughput (images/s, forward + BCE + backward + Adam step) of the 9-layer B-cos and
CoDA networks next to a plain ReLU CNN of the same shape, measured interleaved in one run.

    python benchmarks/bench_train.py [--width 0.25] [--batch 64] [--rounds 3] [--steps 5] [--threads N]

On a GPU it also measures AMP (bf16 autocast) against float32.
"""

from __future__ import annotations

import argparse
import time

import torch

from alignnet.models import create_model
from alignnet.models.cifar import plain_cnn_9l
from alignnet.train import bce_one_hot


def _models(width: float) -> dict[str, torch.nn.Module]:
    return {
        "plain_cnn_9l": plain_cnn_9l(width=width),
        "bcos_cifar10_9l": create_model("bcos_cifar10_9l", width=width),
        "coda_cifar10_9l": create_model("coda_cifar10_9l", width=width),
    }


def _time_steps(model, opt, x, y, steps: int, amp: bool, device: torch.device) -> float:
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = bce_one_hot(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    setups = []
    for name, model in _models(args.width).items():
        model.to(device).train()
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        for amp in (False, True) if device.type == "cuda" else (False,):
            setups.append((name, amp, model, opt))
    times: dict[tuple[str, bool], list[float]] = {(n, a): [] for n, a, _, _ in setups}
    for _ in range(args.rounds):  # interleaved: every model once per round
        for name, amp, model, opt in setups:
            times[(name, amp)].append(_time_steps(model, opt, x, y, args.steps, amp, device))
    base = min(times[("plain_cnn_9l", False)])
    print(
        f"device={device} threads={torch.get_num_threads()} width={args.width} batch={args.batch} "
        f"rounds={args.rounds} steps={args.steps} (best round)"
    )
    print("| model | AMP | params | ms/step | images/s | time vs plain CNN |")
    print("|---|---|---|---|---|---|")
    for name, amp, model, _ in setups:
        t = min(times[(name, amp)])
        params = sum(p.numel() for p in model.parameters())
        print(
            f"| {name} | {'bf16' if amp else 'off'} | {params:,} | {t * 1e3:.1f} | {args.batch / t:.0f} | {t / base:.1f}x |"
        )


if __name__ == "__main__":
    main()
