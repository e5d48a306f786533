"""
# B-cosify a torchvision model

B-cosification (Arya et al., NeurIPS 2024) turns a trained CNN or ViT into a B-cos network: the
`[x, 1-x]` input encoding, B-cos layers in place of the linear ones, no biases, a logit layer; the weights
are kept, then a short fine-tuning recovers the accuracy ([B-cosification](../../bcosification.md)). Here a
torchvision ResNet-18 (random weights: no download while the site is built; pass `weights="DEFAULT"` to
start from ImageNet weights) is converted and explained right away.
"""

import matplotlib.pyplot as plt
import torch
import torchvision

import alignnet

resnet = torchvision.models.resnet18(weights=None, num_classes=10).eval()
model = alignnet.bcosify(resnet, num_classes=10).eval()  # a new network; `resnet` is left as it was
print(type(model).__name__, f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")

x = torch.rand(2, 3, 64, 64)
e = alignnet.explain(model, x)
print("weights", tuple(e.weights.shape), f"completeness error {float(e.completeness_error()):.2e}")

# %%
# The converted network is dynamic linear from the first step, so its explanation is exact even before any
# fine-tuning; it only becomes *meaningful* after training. The Fashion-MNIST model `fmnist_bcosified`,
# shipped with the package, went through the whole recipe; its explanation is on the right.

trained = alignnet.load_pretrained("fmnist_bcosified")
from alignnet.data import load_embedded  # noqa: E402

images, _ = load_embedded("test").tensors()
e2 = alignnet.explain(trained, images[:1])
fig, axes = plt.subplots(1, 3, figsize=(8, 2.8))
alignnet.plot_contribution_map(e.contributions[0], ax=axes[0], title="bcosified ResNet-18\n(not fine-tuned)")
axes[1].imshow(images[0].permute(1, 2, 0).numpy())
axes[1].set_title("input")
axes[2].imshow(alignnet.colour_explanation(e2, index=0))
axes[2].set_facecolor("black")
axes[2].set_title(f"fmnist_bcosified:\n{trained.class_names[int(e2.targets[0])]}")
for ax in axes:
    ax.axis("off")
fig.tight_layout()
