"""Write ``src/alignnet/data/fashion_mnist_subset.npz``: a class-balanced Fashion-MNIST subset.

Usage: ``python scripts/make_embedded_subset.py [--root /usr/share/datasets/fashion-mnist]``.
Draws ``--per-class`` images of every class from each split with a fixed seed and stores them
as uint8 (compressed). Needs the full data set (``apt-get install dataset-fashion-mnist``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from alignnet.data import read_fashion_mnist

OUT = Path(__file__).resolve().parents[1] / "src" / "alignnet" / "data" / "fashion_mnist_subset.npz"


def balanced_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` random indices of every class, sorted by (class-interleaved) draw order."""
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in np.unique(labels)]
    order = np.stack(picks, axis=1).reshape(-1)  # interleave classes: 0,1,...,9,0,1,...
    return order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="directory with the four idx files")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    arrays = {}
    for split in ("train", "test"):
        images, labels = read_fashion_mnist(args.root, split)
        idx = balanced_indices(labels, args.per_class, rng)
        arrays[f"{split}_images"] = images[idx].astype(np.uint8)
        arrays[f"{split}_labels"] = labels[idx].astype(np.uint8)
        arrays[f"{split}_source_index"] = idx.astype(np.int32)  # index into the full split
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
