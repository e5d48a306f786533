"""Where the positive attribution of ``ours`` lands on 3x3 Fashion-MNIST grids (issue 15, "the CoDA gap").

    python scripts/attribution_on_background.py MODEL[,MODEL...] [N_GRIDS]

MODEL: a pretrained name (``fmnist_coda``) or a saved ``.safetensors`` file. For the first N_GRIDS (60) grids of
the localisation protocol (seed 42, threshold 0.5, no smoothing), every cell's class is explained and its
positive contributions (``Explanation.contributions``, summed over channels) are split four ways: the own cell's
object pixels, the own cell's background, the other cells' objects and the other cells' background, averaged
over maps. Fashion-MNIST backgrounds are exactly black (0); an object pixel is one with mean value > 0.05. A
black pixel is ``(0, 1)`` in the ``[x, 1-x]`` encoding, so a model can put evidence on it.
"""

from __future__ import annotations

import sys

import torch

import alignnet
from alignnet.data import fashion_mnist
from alignnet.metrics._common import as_tensors, predict
from alignnet.metrics.localisation import make_grids, tile_grids


def shares(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, n_grids: int) -> dict[str, float]:
    """Mean share of positive attribution in own/other cell x object/background, and the grids used."""
    grids = make_grids(predict(model, images), labels, 3, n_grids, 42, 0.5)
    classes = torch.from_numpy(labels.numpy()[grids])
    side = images.shape[-1]
    cell_of = torch.arange(3 * side) // side
    cell_index = cell_of[:, None] * 3 + cell_of[None, :]  # (3s, 3s): which cell each pixel is in
    totals = torch.zeros(4, dtype=torch.float64)
    maps = 0
    for g in range(len(grids)):
        x = tile_grids(images[torch.from_numpy(grids[g : g + 1])], 3)
        e = alignnet.explain(model, x.expand(9, -1, -1, -1).contiguous(), classes[g])
        contrib = e.contributions if e.contributions.dim() == 3 else e.contributions.sum(1)
        pos = contrib.clamp(min=0).double()
        obj = x[0].mean(0) > 0.05
        for k in range(9):
            total = pos[k].sum()
            if total <= 0:
                continue
            own = cell_index == k
            parts = [own & obj, own & ~obj, ~own & obj, ~own & ~obj]
            totals += torch.stack([pos[k][m].sum() for m in parts]) / total
            maps += 1
    keys = ("own_object", "own_background", "other_objects", "other_background")
    return {
        "grids": len(grids),
        "maps": maps,
        **{k: float(v / max(maps, 1)) for k, v in zip(keys, totals, strict=True)},
    }


def main() -> None:
    torch.set_num_threads(1)
    n_grids = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    images, labels = as_tensors(fashion_mnist(split="test"))
    print(
        "| model | grids | own cell: object | own cell: background | other cells: objects | other cells: background |"
    )
    print("|---|---|---|---|---|---|")
    for name in sys.argv[1].split(","):
        model = alignnet.load_model(name) if name.endswith(".safetensors") else alignnet.load_pretrained(name)
        s = shares(model.eval(), images, labels, n_grids)
        print(f"| {name} | {s['grids']} | {s['own_object']:.3f} | {s['own_background']:.3f} | "
              f"{s['other_objects']:.3f} | {s['other_background']:.3f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
