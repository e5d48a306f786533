"""
# Explain a photo with an ImageNet model

The official B-cos v2 ResNet-50 (TPAMI 2024) is downloaded once on first use, checked against the SHA-256 in its
file name, converted and cached under `$ALIGNNET_HOME` (default `~/.cache/alignnet`); from then on it loads
offline ([pretrained weights](../../pretrained.md)). In your own code this is one line:

```python
model = alignnet.create_model("bcos_resnet50", pretrained=True)  # downloads ~100 MB the first time
```

The documentation is built without a network, so this page uses the cached weights when they are there and
otherwise a **randomly initialised stand-in** of the same architecture. The title of the figure says which one
you are looking at: a random network's explanation shows the mechanics (shapes, completeness, colours), not
what a trained model looks at.
"""

import matplotlib.pyplot as plt

import alignnet
from alignnet.data import fit_to_model
from alignnet.data.samples import sample_photos
from alignnet.pretrained import availability, imagenet_classes

if availability("bcos_resnet50") in ("cached", "shipped", "local file"):
    model = alignnet.create_model("bcos_resnet50", pretrained=True)  # offline: the cached, converted weights
    trained = True
else:  # no weights and no network while the site is built: a clearly labelled stand-in
    model = alignnet.create_model("bcos_resnet50").eval()
    trained = False
print("weights:", "official B-cos v2 release (cached)" if trained else "RANDOM (untrained stand-in)")

# %%
# A real photo carried by an installed package (scikit-image's or foolbox's, see [data](../../data.md)),
# prepared exactly as the command line and the web page prepare it (resize 256, centre crop 224 for this
# model).

photo, label = sample_photos(limit=1)[0]
x = fit_to_model(model, photo)  # (3, 224, 224) in [0, 1]
e = alignnet.explain(model, x[None])
classes = getattr(model, "class_names", None) or imagenet_classes()
name = classes[int(e.targets[0])]

fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
axes[0].imshow(x.permute(1, 2, 0).numpy())
axes[0].set_title(photo.name)
axes[1].imshow(alignnet.colour_explanation(e, index=0))
axes[1].set_facecolor("black")
axes[1].set_title(f"explanation of '{name}'")
alignnet.plot_contribution_map(e.contributions[0], ax=axes[2], title="contributions")
for ax in axes:
    ax.axis("off")
fig.suptitle(
    "bcos_resnet50, official weights" if trained else "RANDOM-WEIGHT STAND-IN (weights not cached)",
    color="black" if trained else "red",
)
fig.tight_layout()
print(f"completeness error: {float(e.completeness_error()):.2e}")
