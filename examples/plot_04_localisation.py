"""
# The localisation metric and its baselines

The grid pointing game ([definition](../../metrics.md#localisation-grid-pointing-game)) tiles 3x3 test
images of nine different classes, explains each cell's class on the whole grid and scores the share of
positive attribution that falls inside the right cell. Two baselines frame the numbers: the **oracle**, a map
that puts all its positive attribution in the right cell, scores 1; a **uniform** map scores 1/9 = 0.111. A
method below the uniform line points at the wrong images more often than not. The
[metrics question page](../questions/plot_metric_baselines.md) shows both baselines on one grid.

Here: 6 grids (54 scores) chosen from the first 400 test images with the papers' protocol, for the model's own explanation and two post-hoc
methods. The published evaluations use 500 grids.
"""

import matplotlib.pyplot as plt
import torch

import alignnet
from alignnet.data import load_embedded
from alignnet.metrics import evaluate_localisation, localisation_scores

model = alignnet.load_pretrained("fmnist_bcos")
images, labels = load_embedded("test").tensors()
images, labels = images[:400], labels[:400]
with torch.no_grad():
    logits = model(images)  # predicted once, shared by the methods (the grids are chosen from them)

results = {
    m: evaluate_localisation(model, (images, labels), method=m, n_grids=6, logits=logits, progress=False)
    for m in ("ours", "ixg", "gradcam")
}

# %%
# The baselines are two synthetic maps scored by the same function, `localisation_scores`, on grids of the
# same size (96x96: 3x3 cells of 32 pixels).

cells = torch.arange(9).repeat(6)  # every cell of 6 grids
oracle = torch.zeros(len(cells), 96, 96)
for i, c in enumerate(cells.tolist()):
    r, k = divmod(c, 3)
    oracle[i, 32 * r : 32 * r + 32, 32 * k : 32 * k + 32] = 1.0  # all positive attribution in the right cell
uniform = torch.ones(len(cells), 96, 96)
baselines = {"oracle": localisation_scores(oracle, cells, 3), "uniform": localisation_scores(uniform, cells, 3)}

for name, r in results.items():
    print(f"{name:8s} mean {r.summary['mean']:.3f}  median {r.summary['median']:.3f}  ({r.summary['n']} scores)")
for name, s in baselines.items():
    print(f"{name:8s} mean {float(s.mean()):.3f}")

fig, ax = plt.subplots(figsize=(7, 3.6))
ax.boxplot([r.scores for r in results.values()], showmeans=True)
ax.set_xticks(range(1, len(results) + 1), list(results))
ax.axhline(1.0, color="tab:green", ls="--", label="oracle (1.0)")
ax.axhline(1 / 9, color="tab:red", ls="--", label="uniform (1/9)")
ax.set_ylabel("localisation score")
ax.set_title("grid pointing game, fmnist_bcos, 6 grids of 3x3")
ax.legend(loc="center right", fontsize=8)
fig.tight_layout()
