"""The CoDA training-budget curve (issue 15, "the CoDA gap"): test accuracy and 3x3 localisation of ``ours``
after every epoch of the long ``fmnist-coda`` run (``scripts/train_coda_long.py``).

    python scripts/coda_curve.py [RUN_DIR] [--n-grids 500] [--json PATH] [--figure PATH]

For every ``RUN_DIR/epoch_NN.safetensors``: accuracy on all 10,000 Fashion-MNIST test images and the grid
pointing game (docs/metrics.md#localisation-grid-pointing-game: 3x3 grids, seed 42, threshold 0.5, no smoothing) of ``ours`` on
``--n-grids`` grids. Files already measured (same SHA-256 and settings in the JSON) are not measured again; the
localisation of a file killed half-way resumes from its shards (RUN_DIR/curve_shards). Writes the JSON and a
figure of both against the epoch, with the shipped 4-epoch model (88.67%, 0.555) and the CoDA paper's 0.912
(CIFAR-10, full width, 200 epochs) as reference lines, and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import time
from pathlib import Path

import torch

import alignnet
from alignnet.data import fashion_mnist
from alignnet.metrics._common import as_tensors, predict
from alignnet.metrics.evaluate import evaluate_one
from alignnet.metrics.presets import Protocol

SHIPPED = {"epochs": 4, "accuracy": 88.67, "localisation": 0.555}
PAPER_LOCALISATION = 0.912


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def measure(path: Path, data, protocol: Protocol, work: Path) -> dict:
    """Accuracy (%) on the whole test set and the localisation summary of ``ours`` for one weights file."""
    start = time.perf_counter()
    model = alignnet.load_model(path).eval()
    images, labels = as_tensors(data)
    logits = predict(model, images)
    accuracy = 100.0 * (logits.argmax(1) == labels).double().mean().item()
    res = evaluate_one(model, (images, labels), "ours", protocol, work, logits=logits, progress=False)
    return {
        "file": path.name,
        "sha256": _sha256(path),
        "accuracy": accuracy,
        "localisation": res.summary,
        "grids": int(res.config["grids_made"]),
        "seconds": time.perf_counter() - start,
    }


def plot(results: list[dict], figure: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in results]
    fig, (ax_acc, ax_loc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_acc.plot(epochs, [r["accuracy"] for r in results], "o-", label="long run (T=1000, width 0.25)")
    ax_acc.axhline(SHIPPED["accuracy"], color="grey", ls="--", label=f"shipped, 4 epochs ({SHIPPED['accuracy']}%)")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%), 10,000 images", title="accuracy")
    ax_loc.plot(epochs, [r["localisation"]["mean"] for r in results], "o-", label="long run: ours, mean")
    ax_loc.axhline(
        SHIPPED["localisation"], color="grey", ls="--", label=f"shipped, 4 epochs ({SHIPPED['localisation']})"
    )
    ax_loc.axhline(PAPER_LOCALISATION, color="tab:red", ls=":", label=f"CoDA paper, CIFAR-10 ({PAPER_LOCALISATION})")
    ax_loc.axhline(1 / 9, color="black", lw=0.8, ls=":", label="uniform (0.111)")
    ax_loc.set(xlabel="epoch", ylabel="mean localisation, 3x3 grids", title="localisation of ours", ylim=(0, 1))
    for ax in (ax_acc, ax_loc):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xticks(epochs)
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=150)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, nargs="?", default=Path("/work/runs/coda_long"))
    parser.add_argument("--n-grids", type=int, default=500)
    parser.add_argument("--data", default=None, help="Fashion-MNIST directory (default: the Debian package's)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/coda_curve.json"))
    parser.add_argument("--figure", type=Path, default=Path("benchmarks/figures/coda_curve.png"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--epochs", default=None, help="comma-separated epochs to measure (default: every file); others are skipped"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    protocol = Protocol("localisation", grid=3, n_grids=args.n_grids, seed=42, smooth=0, confidence=0.5)
    cached = json.loads(args.json.read_text()) if args.json.exists() else {}
    settings = {"n_grids": args.n_grids, "grid": 3, "seed": 42, "smooth": 0, "confidence": 0.5, "method": "ours"}
    old = {r["sha256"]: r for r in cached.get("epochs", [])} if cached.get("settings") == settings else {}
    data = fashion_mnist(args.data, split="test")
    wanted = None if args.epochs is None else {int(e) for e in args.epochs.split(",")}
    results = []
    for path in sorted(args.run.glob("epoch_*.safetensors")):
        epoch = int(re.search(r"epoch_(\d+)", path.name).group(1))
        digest = _sha256(path)
        if digest not in old and wanted is not None and epoch not in wanted:
            continue
        if digest in old:
            entry = old[digest]
        else:
            entry = measure(path, data, protocol, args.run / "curve_shards")
            print(f"epoch {epoch}: {entry['accuracy']:.2f}% , localisation {entry['localisation']['mean']:.3f}")
        results.append({**entry, "epoch": epoch})
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"settings": settings, "shipped": SHIPPED, "paper_localisation": PAPER_LOCALISATION}
        args.json.write_text(json.dumps({**payload, "epochs": results}, indent=2) + "\n")
    plot(results, args.figure)
    print("| epoch | test accuracy (%) | localisation mean | median | q25-q75 | grids | seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        s = r["localisation"]
        print(
            f"| {r['epoch']} | {r['accuracy']:.2f} | {s['mean']:.3f} | {s['median']:.3f} | "
            f"{s['q25']:.3f}-{s['q75']:.3f} | {r['grids']} | {r['seconds']:.0f} |"
        )
    print(f"| shipped (4 epochs) | {SHIPPED['accuracy']} | {SHIPPED['localisation']} | | | 500 | |")


if __name__ == "__main__":
    main()
