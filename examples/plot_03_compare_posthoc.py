"""
# Compare with post-hoc methods

Every attribution method is built from a model by one registry, `get_attributor(name, model)`, and returns
maps of the input's shape with `.attribute(images, targets)`. `"ours"` is the model's own exact explanation;
the others are the post-hoc baselines of the papers, run through captum or written here
([attribution methods](../../metrics.md#attribution-methods)).
"""

import time

import matplotlib.pyplot as plt

import alignnet
from alignnet.attribution import get_attributor, list_attributors
from alignnet.data import load_embedded

model = alignnet.load_pretrained("fmnist_bcos")
images, labels = load_embedded("test").tensors()
x, target = images[:1], labels[:1]
print("methods:", ", ".join(list_attributors()))

methods = ["ours", "grad", "ixg", "intgrad", "gradcam", "occlusion5", "rise"]
maps, times = {}, {}
for name in methods:
    start = time.perf_counter()
    maps[name] = get_attributor(name, model).attribute(x, target).sum(1)[0]  # (H, W): summed over channels
    times[name] = time.perf_counter() - start

fig, axes = plt.subplots(1, len(methods) + 1, figsize=(2.1 * (len(methods) + 1), 2.6))
axes[0].imshow(x[0].permute(1, 2, 0).numpy())
axes[0].set_title(model.class_names[int(target)])
for ax, name in zip(axes[1:], methods, strict=True):
    alignnet.plot_contribution_map(maps[name].detach(), ax=ax, title=f"{name}\n{1000 * times[name]:.0f} ms")
for ax in axes:
    ax.axis("off")
fig.tight_layout()

# %%
# For a B-cos network, Input x Gradient *in explanation mode* is exactly `"ours"`; the plain `"ixg"` runs the
# model as it is, so its gradient also flows through the dynamic factors and the map differs (the
# [question page](../questions/plot_explain_vs_ixg.md) measures the difference). How well each map
# localises and how faithful it is are measured in the [localisation](plot_04_localisation.md) and
# [pixel removal](plot_05_pixel_removal.md) examples.
