"""
# Pixel removal

Remove pixels in the order of their attribution, least important first, and record the probability of the
true class ([definition](../../metrics.md#pixel-removal)). A faithful explanation ranks the unimportant pixels
first, so the probability stays high while up to 25% of the image is removed. Random order is the baseline.
Here: 32 test images and 16 removal steps (the papers use 1024 images and 128 steps).
"""

import matplotlib.pyplot as plt
import torch

import alignnet
from alignnet.data import load_embedded
from alignnet.metrics import evaluate_pixel_removal, removal_curves

model = alignnet.load_pretrained("fmnist_bcos")
images, labels = load_embedded("test").tensors()
images, labels = images[:32], labels[:32]

fig, ax = plt.subplots(figsize=(6, 3.8))
for method in ("ours", "ixg", "gradcam"):
    r = evaluate_pixel_removal(
        model, (images, labels), method=method, n_images=32, steps=16, orders=("least",), progress=False
    )
    ax.plot(r.fractions, r.mean_curve("least"), label=f"{method} (area {r.summary['least']['auc']:.3f})")

# %%
# The random baseline: a map of random numbers gives a random removal order.

fractions, random_curves = removal_curves(model, images, labels, torch.rand(32, 1, 32, 32), steps=16)
ax.plot(fractions, random_curves.mean(0), color="grey", ls="--", label="random order")
ax.set_xlabel("fraction of pixels removed (least important first)")
ax.set_ylabel("true-class probability")
ax.legend(fontsize=8)
fig.tight_layout()
