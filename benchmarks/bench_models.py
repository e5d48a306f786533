"""Model zoo throughput: inference, training step and explain, and side-by-side comparisons.

For each CIFAR model (batch 64, 32x32) and ``bcos_resnet18/50`` (batch 8, 224x224): images/s for
inference, a training step (forward, BCE, backward, Adam) and ``alignnet.explain`` of the predicted
class, and explain time / (one forward + backward) measured in the same run. CIFAR models also
compare batched explain (N=32) with explaining the 32 images one at a time (as the ``bcos``
package's ``model.explain`` works). Side by side, same architecture and random weights:
``bcos_resnet18`` vs torchvision's ``resnet18`` vs the ``bcos`` package's ``resnet18`` forward at
batch 1, and ``alignnet.explain`` per image at batch 8 vs ``bcos`` ``model.explain`` image by image.
Each timing is the median of ``--repeats`` runs after one warm-up; runs of the compared variants
are interleaved so load from other processes hits all of them alike.

Usage: ``python benchmarks/bench_models.py [--repeats 5] [--threads 2]``; prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import torch
from tqdm import tqdm

import alignnet

CIFAR = ["bcos_cifar10_9l", "coda_cifar10_9l", "bcos_resnet20", "bcos_resnet56"]
IMAGENET = ["bcos_resnet18", "bcos_resnet50"]


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, runs interleaved, after one warm-up each."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(_time(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def calibrate(model, x):
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def bench_model(name: str, batch: int, side: int, repeats: int, one_by_one: bool) -> dict:
    torch.manual_seed(0)
    model = alignnet.create_model(name)
    x = torch.rand(batch, 3, side, side)
    calibrate(model, x)
    num_classes = model(x[:1]).shape[1]
    y = torch.nn.functional.one_hot(torch.randint(0, num_classes, (batch,)), num_classes).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def infer():
        with torch.no_grad():
            model(x)

    def fwd_bwd():
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        out.max(1).values.sum().backward()
        model.zero_grad(set_to_none=True)

    def train_step():
        model.train()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.eval()

    def explain():
        alignnet.explain(model, x)

    fns = {"infer": infer, "fwd_bwd": fwd_bwd, "train": train_step, "explain": explain}
    row = {"model": name, "batch": batch, "side": side}
    if one_by_one:
        x32 = x[:32]

        def batched32():
            alignnet.explain(model, x32)

        def single32():
            for i in range(32):
                alignnet.explain(model, x32[i : i + 1])

        fns.update(batched32=batched32, single32=single32)
    t = interleaved(fns, repeats)
    row.update({k: batch / v for k, v in t.items() if k in ("infer", "train", "explain")})
    row["explain_ratio"] = t["explain"] / t["fwd_bwd"]
    if one_by_one:
        row["batched_speedup"] = t["single32"] / t["batched32"]
    return row


def bench_side_by_side(repeats: int) -> dict:
    import torchvision

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from bcos.models import pretrained

        theirs = pretrained.resnet18(pretrained=False).eval()
    torch.manual_seed(0)
    ours = alignnet.create_model("bcos_resnet18").eval()
    ours.load_state_dict(alignnet.models.from_bcos("bcos_resnet18", theirs.state_dict()).state_dict())
    tv = torchvision.models.resnet18().eval()
    x1 = torch.rand(1, 3, 224, 224)
    x1_6 = torch.cat([x1, 1 - x1], 1)

    def run(m, inp):
        def f():
            with torch.no_grad():
                m(inp)

        return f

    fwd = interleaved({"torchvision": run(tv, x1), "alignnet": run(ours, x1), "bcos": run(theirs, x1_6)}, repeats)

    x8 = torch.rand(8, 3, 224, 224)
    x8_6 = torch.cat([x8, 1 - x8], 1)

    def ours_explain():
        alignnet.explain(ours, x8)

    def bcos_explain():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(8):
                theirs.explain(x8_6[i : i + 1].clone().requires_grad_(True))

    expl = interleaved({"alignnet": ours_explain, "bcos": bcos_explain}, max(2, repeats // 2))
    return {
        "forward_b1_ms": {k: 1000 * v for k, v in fwd.items()},
        "explain_per_image_ms": {k: 1000 * v / 8 for k, v in expl.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-bcos", action="store_true", help="skip the side-by-side with the bcos package")
    parser.add_argument(
        "--side-by-side-only", action="store_true", help="only the ResNet-18 comparisons (forward batch 1, explain)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{args.threads} threads; 1-minute load average {load_before:.1f} at the start.\n",
        flush=True,
    )
    print(
        "| model | batch x size | inference img/s | train step img/s | explain img/s | explain / (fwd+bwd) | batched explain speedup (N=32 vs 1 by 1) |"
    )
    print("|---|---|---|---|---|---|---|", flush=True)
    jobs = [] if args.side_by_side_only else [(n, 64, 32, True) for n in CIFAR] + [(n, 8, 224, False) for n in IMAGENET]
    for name, batch, side_len, one in tqdm(jobs, desc="models"):
        r = bench_model(name, batch, side_len, args.repeats, one)
        sp = f"{r['batched_speedup']:.1f}x" if "batched_speedup" in r else "-"
        print(
            f"| {r['model']} | {r['batch']} x {r['side']}² | {r['infer']:.1f} | {r['train']:.1f} | "
            f"{r['explain']:.1f} | {r['explain_ratio']:.2f} | {sp} |",
            flush=True,
        )
    side = None if args.skip_bcos else bench_side_by_side(args.repeats)
    print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.1f}")
    if side:
        f, e = side["forward_b1_ms"], side["explain_per_image_ms"]
        print("\n| ResNet-18, random weights | forward at batch 1 (ms) | ratio to torchvision |")
        print("|---|---|---|")
        for k in ("torchvision", "alignnet", "bcos"):
            print(f"| {k} | {f[k]:.1f} | {f[k] / f['torchvision']:.2f}x |")
        print("\n| B-cos ResNet-18 explain, 224² | ms per image | speedup |")
        print("|---|---|---|")
        print(f"| bcos `model.explain`, image by image | {e['bcos']:.1f} | 1.00x |")
        print(f"| `alignnet.explain`, batch of 8 | {e['alignnet']:.1f} | {e['bcos'] / e['alignnet']:.2f}x |")


if __name__ == "__main__":
    main()
