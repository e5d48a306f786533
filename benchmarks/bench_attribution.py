"""Attribution methods and the metric protocols: time per image, as a ratio to ``ours``.

1. Every registered method on ``bcos_cifar10_9l`` (``--width``, batch ``--batch`` 32x32 images):
   median seconds per image over ``--reps`` runs, and the ratio to ``ours`` measured in the same run
   (methods run round-robin so background load hits them alike).
2. The 500-grid 3x3 localisation protocol with ``ours`` on Fashion-MNIST test images (32x32 cells).
   Grids need confident correct predictions; with ``--weights`` the trained model is used, otherwise
   (random weights) the ground truth is passed as the predictions so the grids can be formed
   (the timing of the attributions is the same; the time to predict the test set is reported apart).
3. Pixel removal with ``ours`` over ``--removal-images`` images (1024 in the protocol), both orders,
   128 steps.

    python benchmarks/bench_attribution.py [--width 0.25] [--weights PATH] [--device cpu] [--skip-protocols]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

import torch

import alignnet
import alignnet.data
from alignnet.attribution import get_attributor, list_attributors
from alignnet.metrics import evaluate_localisation, evaluate_pixel_removal
from alignnet.metrics._common import as_tensors, predict


def bench_methods(model, device, batch: int, reps: int, methods: list[str]) -> dict[str, float]:
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    t = torch.arange(batch, device=device) % 10
    attributors = {}
    for name in methods:
        try:
            attributors[name] = get_attributor(name, model)
        except ValueError as exc:
            print(f"  {name}: refused ({str(exc)[:70]}...)")
    for a in attributors.values():  # warm-up (also builds RISE masks, picks the GradCAM layer)
        a.attribute(x[:2], t[:2])
    times: dict[str, list[float]] = {k: [] for k in attributors}
    for _ in range(reps):
        for name, a in attributors.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            a.attribute(x, t)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - t0) / batch)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--weights", help="trained model (.safetensors) for the protocols (default: random weights)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--methods", default="all")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--removal-images", type=int, default=1024)
    p.add_argument("--skip-protocols", action="store_true")
    p.add_argument("--skip-methods", action="store_true")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, device {device}")
    torch.manual_seed(0)
    model = alignnet.create_model("bcos_cifar10_9l", width=args.width).to(device).eval()
    n_params = sum(p.numel() for p in model.parameters())
    methods = list_attributors() if args.methods == "all" else args.methods.split(",")
    if args.skip_methods:
        methods = ["ours"]
    print(f"\n## Per-image time, bcos_cifar10_9l width {args.width:g} ({n_params:,} parameters), batch {args.batch}")
    per_image = bench_methods(model, device, args.batch, args.reps, methods)
    ours = per_image["ours"]
    print("| method | ms / image | ratio to ours |\n|---|---|---|")
    for name, s in sorted(per_image.items(), key=lambda kv: kv[1]):
        print(f"| {name} | {1000 * s:.2f} | {s / ours:.1f} |")
    if args.skip_protocols:
        return

    data = alignnet.data.fashion_mnist(split="test")
    images, labels = as_tensors(data)
    proto_model = alignnet.load_model(args.weights).to(device).eval() if args.weights else model
    t0 = time.perf_counter()
    logits = predict(proto_model, images, device=device)
    t_predict = time.perf_counter() - t0
    if not args.weights:
        logits = torch.nn.functional.one_hot(labels, 10).float() * 8 - 4  # ground truth as predictions
    res = evaluate_localisation(
        proto_model, (images, labels), "ours", grid=3, n_grids=500, logits=logits, progress=False
    )
    print(f"\n## 500 3x3 grids with ours ({'trained ' + args.weights if args.weights else 'random weights'})")
    print(f"predict {len(images)} test images: {t_predict:.1f} s; localisation ({res.config['grids_made']} grids, "
          f"{len(res.scores)} maps): {res.seconds:.1f} s; mean score {res.summary['mean']:.3f}")  # fmt: skip
    pr = evaluate_pixel_removal(proto_model, data, "ours", n_images=args.removal_images, progress=False)
    print(f"\n## Pixel removal with ours, {args.removal_images} images, both orders, 128 steps: {pr.seconds:.1f} s")
    print(f"least-first final {pr.summary['least']['final']:.3f}, most-first final {pr.summary['most']['final']:.3f}")


if __name__ == "__main__":
    main()
