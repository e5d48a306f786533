"""
# B-cos v1, B-cos v2 and B-cosified models: which defaults differ?

The three families build the same kind of network, dynamic linear with the `[x, 1-x]` encoding, but with
different defaults; loading a checkpoint into the wrong style gives a working but different model. This page
builds one ResNet-34 of each family and reads the settings off the modules, so the table cannot drift from the
code. The families are described in [models](../../models.md#imagenet-models) (v1 and v2) and
[B-cosification](../../bcosification.md#the-recipe); weights in [pretrained](../../pretrained.md).
"""

import matplotlib.pyplot as plt
import torchvision

import alignnet
from alignnet.bcosification import BcosifiedConv2d, InputEncoding
from alignnet.data import load_embedded
from alignnet.layers import AddInverse, BcosConv2d, LogitLayer


def settings(model):
    """The defaults that differ, read from the modules."""
    convs = [m for m in model.modules() if isinstance(m, (BcosConv2d, BcosifiedConv2d))]
    logit = next((m for m in model.modules() if isinstance(m, LogitLayer)), None)
    norms = sorted({type(m).__name__ for m in model.modules() if "Norm" in type(m).__name__})
    encoding = next((type(m).__name__ for m in model.modules() if isinstance(m, (AddInverse, InputEncoding))), "-")
    bias = getattr(logit, "bias", None)
    return {
        "encoding": encoding + (" ([x, 1-x] + mean/std)" if encoding == "InputEncoding" else " ([x, 1-x])"),
        "B": sorted({float(getattr(c, "b", 2.0)) for c in convs}),
        "MaxOut": sorted({int(getattr(c, "max_out", 1)) for c in convs}),
        "output scale": sorted({"v1" if getattr(c, "scale", None) not in (None, 1, 1.0) else "none" for c in convs}),
        "norms": ", ".join(norms) or "none",
        "logit layer": "none"
        if logit is None
        else f"temperature {getattr(logit, 'temperature', None)}, bias {float(bias) if bias is not None else 0:.3f}",
    }


models = {
    "B-cos v1 (bcos_resnet34_v1)": alignnet.create_model("bcos_resnet34_v1"),
    "B-cos v2 (bcos_resnet34)": alignnet.create_model("bcos_resnet34"),
    "B-cosified (torchvision resnet34)": alignnet.bcosify(torchvision.models.resnet34(weights=None), 1000),
}
rows = {name: settings(m) for name, m in models.items()}
for key in next(iter(rows.values())):
    print(f"{key}:")
    for name, r in rows.items():
        print(f"    {name:36s} {r[key]}")

# %%
# The three shipped Fashion-MNIST models side by side on one test image: a B-cos network (v2 layers on the
# paper's CIFAR architecture), a CoDA-Net and a B-cosified CNN. All three explanations are exact.

images, _ = load_embedded("test").tensors()
fig, axes = plt.subplots(1, 4, figsize=(9, 2.6))
axes[0].imshow(images[0].permute(1, 2, 0).numpy())
axes[0].set_title("input")
for ax, name in zip(axes[1:], ("fmnist_bcos", "fmnist_coda", "fmnist_bcosified"), strict=True):
    model = alignnet.load_pretrained(name)
    e = alignnet.explain(model, images[:1])
    ax.imshow(alignnet.colour_explanation(e, index=0))
    ax.set_facecolor("black")
    ax.set_title(
        f"{name}\n{model.class_names[int(e.targets[0])]}, error {float(e.completeness_error()):.0e}", fontsize=8
    )
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
