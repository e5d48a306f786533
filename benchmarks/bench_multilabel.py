"""Multi-label B-cos on Fashion-MNIST mosaics (issue 24): 2x2 mosaics of 32x32 cells (64x64 PNGs), 1-4 items of
distinct classes each, labels = the items' classes; training mosaics from the training items, test mosaics from
the test items, all written as PNGs with a label CSV so the real decode path is used.

    apt-get install dataset-fashion-mnist        # /usr/share/datasets/fashion-mnist
    python benchmarks/bench_multilabel.py --work /tmp/mlbench --train 3000 --test 1000 --epochs 4

Trains with ``alignnet train --data csv:train.csv --init-from fmnist_bcos`` (the ``finetune`` preset: multi-hot
BCE, the best validation mAP exported), measures mAP / F1 / exact label sets on the test CSV with
``alignnet evaluate --data csv:test.csv`` and the multi-label localisation of every present label
(docs/metrics.md#multi-label-localisation) on the test mosaics; ``--figure`` draws some explanations.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import torch


def write_split(root: Path, images, labels, n: int, seed: int, val_fraction: float | None) -> np.ndarray:
    from alignnet.data import FASHION_MNIST_CLASSES, make_mosaics, write_label_csv

    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))  # 28 -> 32, as the Fashion-MNIST models see an item
    mosaics, cells = make_mosaics(padded, labels, n=n, grid=2, max_items=4, seed=seed)
    names = [[FASHION_MNIST_CLASSES[k] for k in sorted(set(row[row >= 0]))] for row in cells]
    splits = None
    if val_fraction is not None:
        n_val = round(n * val_fraction)
        splits = ["val"] * n_val + ["train"] * (n - n_val)
    write_label_csv(root / "labels.csv", mosaics, names, splits)
    np.save(root / "cells.npy", cells)
    return cells


def localisation(model_path: Path, csv_path: Path, cells: np.ndarray, limit: int) -> dict:
    import alignnet
    from alignnet.data import FASHION_MNIST_CLASSES, fit_to_model, read_label_csv
    from alignnet.metrics import multilabel_localisation

    model = alignnet.load_model(model_path)
    table = read_label_csv(csv_path, model.class_names)
    index = np.array([model.class_names.index(n) for n in FASHION_MNIST_CLASSES] + [-1])  # -1 stays -1
    cell_labels = index[cells[:limit]]
    x = torch.stack([fit_to_model(model, p) for p in table.paths[:limit]])
    r = multilabel_localisation(model, x, cell_labels, grid=2)
    with torch.no_grad():
        probs = torch.sigmoid(model(x)).numpy()
    predicted = probs[r["image"], r["label"]] >= model.multilabel_threshold
    s = r["score"]
    return {
        "mosaics": int(limit), "labels": int(len(s)), "mean": float(s.mean()), "median": float(np.median(s)),
        "most_in_cell": float((s > 0.5).mean()), "labels_predicted": float(predicted.mean()),
        "most_in_cell_predicted": float((s[predicted] > 0.5).mean()),
        "most_in_cell_by_items": {str(k): float((s[cnt == k] > 0.5).mean())
                                  for k in range(1, 5) for cnt in [(cell_labels[r["image"]] >= 0).sum(1)]
                                  if (cnt == k).any()},
    }  # fmt: skip


def figure(model_path: Path, csv_path: Path, cells: np.ndarray, out: Path, indices: list[int]) -> None:
    from matplotlib.figure import Figure

    import alignnet
    from alignnet.data import fit_to_model, read_label_csv
    from alignnet.explanation import plot_contribution_map

    model = alignnet.load_model(model_path)
    table = read_label_csv(csv_path, model.class_names)
    cols = 1 + 4
    fig = Figure(figsize=(2.0 * cols, 2.15 * len(indices)), layout="constrained")
    axes = fig.subplots(len(indices), cols, squeeze=False)
    for row, i in enumerate(indices):
        x = fit_to_model(model, table.paths[i])
        with torch.no_grad():
            p = torch.sigmoid(model(x[None])[0])
        present = [int(k) for k in np.flatnonzero(table.targets[i])]
        e = alignnet.explain(model, x[None], torch.tensor([present]))
        axes[row, 0].imshow(x.permute(1, 2, 0).numpy())
        axes[row, 0].set_title("labels: " + ", ".join(model.class_names[k] for k in present), fontsize=6)
        for j, k in enumerate(present):
            plot_contribution_map(e.contributions[0, j], ax=axes[row, 1 + j],
                                  title=f"{model.class_names[k]}: p {float(p[k]):.2f}")  # fmt: skip
            axes[row, 1 + j].title.set_fontsize(7)
        for ax in axes[row]:
            ax.set_axis_off()
    fig.suptitle("multi-label B-cos on Fashion-MNIST mosaics: each present label's contributions (red +, blue -)",
                 fontsize=8)  # fmt: skip
    fig.savefig(out, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/mlbench"))
    p.add_argument("--train", type=int, default=3000, help="training mosaics (10%% of them for validation)")
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--localisation", type=int, default=500, help="test mosaics for the localisation")
    p.add_argument("--figure", type=Path, help="write a figure of some test mosaics' explanations here")
    a = p.parse_args()
    torch.set_num_threads(1)
    from alignnet.data import read_fashion_mnist

    a.work.mkdir(parents=True, exist_ok=True)
    if not (a.work / "train" / "labels.csv").is_file():
        x, y = read_fashion_mnist(split="train")
        write_split(a.work / "train", x, y, a.train, seed=0, val_fraction=0.1)
        x, y = read_fashion_mnist(split="test")
        write_split(a.work / "test", x, y, a.test, seed=1, val_fraction=None)
    run = a.work / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = ["alignnet", "train", "--data", f"csv:{a.work / 'train' / 'labels.csv'}", "--init-from", "fmnist_bcos",
           "--set", "data.image_size=64", "--epochs", str(a.epochs), "--set", "trainer.num_threads=1",
           "--no-progress", "-o", str(run)]  # fmt: skip
    if not (run / "summary.json").is_file():
        start = time.perf_counter()
        subprocess.run([*cmd, "--overwrite"], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(f"trained in {time.perf_counter() - start:.0f} s", flush=True)
    summary = json.loads((run / "summary.json").read_text())
    eval_out = a.work / "eval"
    eval_cmd = ["alignnet", "evaluate", "--model", str(run / "model.safetensors"),
                "--data", f"csv:{a.work / 'test' / 'labels.csv'}", "--quiet", "--out", str(eval_out), "--force"]  # fmt: skip
    subprocess.run(eval_cmd, check=True, env=env)
    test = json.loads((eval_out / "accuracy.json").read_text())
    cells = np.load(a.work / "test" / "cells.npy")
    start = time.perf_counter()
    loc = localisation(run / "model.safetensors", a.work / "test" / "labels.csv", cells, a.localisation)
    row = {
        "train_mosaics": summary["train_images"], "val_mosaics": summary["val_images"], "epochs": summary["epochs"],
        "exported_epoch": summary["exported_epoch"], "best_val_map": summary["best_val_score"],
        "test_map": test["map"], "test_f1": test["f1"], "test_exact": test["exact_match"],
        "threshold": test["threshold"], "per_class_ap": dict(zip(test["class_names"], test["average_precision"],
                                                               strict=True)),
        "localisation": loc, "localisation_s": round(time.perf_counter() - start, 1),
        "train_wall_s": summary["wall_time_s"], "train_command": " ".join(cmd), "eval_command": " ".join(eval_cmd),
    }  # fmt: skip
    (a.work / "results.json").write_text(json.dumps(row, indent=1))
    print(json.dumps(row, indent=1))
    if a.figure:
        figure(run / "model.safetensors", a.work / "test" / "labels.csv", cells, a.figure, [0, 1, 2, 3])


if __name__ == "__main__":
    main()
