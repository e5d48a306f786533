"""
# What do the localisation oracle and uniform baselines mean?

The localisation metric (the grid pointing game, [definition](../../metrics.md#localisation-grid-pointing-game))
puts images of different classes in a grid, explains one cell's class on the whole grid and scores the share
of the positive attribution that falls inside that cell. Two reference maps tell you how to read a score:

- the **oracle** puts all its positive attribution in the right cell: it scores **1**, the best possible;
- the **uniform** map spreads attribution evenly: it scores **1/n** for `n` cells (0.111 on 3x3, 0.25 on
  2x2). A method at or below this line does not localise at all.

Pixel removal ([definition](../../metrics.md#pixel-removal)) has a similar reference: removing pixels in a
random order; see the [pixel removal example](../gallery/plot_05_pixel_removal.md). Published numbers to
compare with are in [metrics](../../metrics.md#published-numbers).
"""

import matplotlib.pyplot as plt
import torch

import alignnet
from alignnet.data import load_embedded
from alignnet.metrics import localisation_scores, make_grids, tile_grids

model = alignnet.load_pretrained("fmnist_bcos")
images, labels = load_embedded("test").tensors()
images, labels = images[:300], labels[:300]
with torch.no_grad():
    logits = model(images)
grids = make_grids(logits, labels, grid=3, n_grids=1)  # (1, 9) dataset indices, the protocol's selection
grid_image = tile_grids(images[grids], grid=3)  # (1, 3, 96, 96)
cell = 4  # explain the class of the centre cell
target = int(labels[grids[0, cell]])

ours = alignnet.explain(model, grid_image, targets=target).contributions  # (1, 96, 96)
oracle = torch.zeros_like(ours)
oracle[:, 32:64, 32:64] = 1.0  # all positive attribution in the centre cell
uniform = torch.ones_like(ours)
scores = {
    name: float(localisation_scores(m, torch.tensor([cell]), grid=3)[0])
    for name, m in (("explain", ours), ("oracle", oracle), ("uniform", uniform))
}
for name, s in scores.items():
    print(f"{name:8s} score {s:.3f}")

# %%
# The grid, and the three maps for the class of the centre cell; only the positive part of a map counts.

fig, axes = plt.subplots(1, 4, figsize=(10, 2.8))
axes[0].imshow(grid_image[0].permute(1, 2, 0).numpy())
axes[0].add_patch(plt.Rectangle((31.5, 31.5), 32, 32, fill=False, edgecolor="yellow", lw=2))
axes[0].set_title(f"grid; target: {model.class_names[target]}", fontsize=9)
for ax, (name, m) in zip(axes[1:], (("explain", ours), ("oracle", oracle), ("uniform", uniform)), strict=True):
    ax.imshow(m[0].clamp_min(0).detach().numpy(), cmap="Reds")
    ax.add_patch(plt.Rectangle((31.5, 31.5), 32, 32, fill=False, edgecolor="black", lw=1))
    ax.set_title(f"{name}: score {scores[name]:.3f}", fontsize=9)
for ax in axes:
    ax.axis("off")
fig.tight_layout()
