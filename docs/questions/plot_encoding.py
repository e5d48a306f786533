"""
# Why does the model take 6 input channels?

You pass an RGB image `(N, 3, H, W)` in `[0, 1]`, but the first layer of a B-cos or CoDA model sees six
channels: its first module, `AddInverse`, appends the complement of every channel, `[r, g, b, 1-r, 1-g, 1-b]`
([input encoding](../../algorithms.md#input-encoding)). You do not add the channels yourself and you do not
normalise by a mean and standard deviation; `alignnet.data.fit_to_model` only resizes and crops.

**Why.** B-cos layers respond to the *direction* of their input and scale by its norm. With `x` alone, a
black pixel is the zero vector: it has no direction and can never contribute, so a dark object on a light
background would be invisible to the explanation. In the `[x, 1-x]` encoding every pixel's entries pair up to
1, so every pixel has a norm between `sqrt(3/2)` and `sqrt(3)` and black carries as much evidence as white.
The explanation has the same six channels, which is what lets alignnet draw it in the pixels' own colours
([colour explanations](../../algorithms.md#colour-explanations)).
"""

import matplotlib.pyplot as plt
import torch

import alignnet
from alignnet.data import load_embedded
from alignnet.layers import AddInverse

model = alignnet.load_pretrained("fmnist_bcos")
print(
    "first module:",
    type(next(m for m in model.modules() if isinstance(m, AddInverse))).__name__,
    "| input_spec.encoding:",
    model.input_spec.encoding,
)

images, _ = load_embedded("test").tensors()
x = images[:1]  # (1, 3, 32, 32): what you pass
encoded = AddInverse()(x)  # (1, 6, 32, 32): what the first B-cos layer sees
e = alignnet.explain(model, x)
print("input", tuple(x.shape), "-> encoded", tuple(encoded.shape), "| explanation weights", tuple(e.weights.shape))

# %%
# Top row: the six channels of the encoding. Bottom row: the norm of each pixel's vector without and with
# the encoding (the black background has norm 0 without it), and the colour explanation computed from the
# six-channel weights.

fig, axes = plt.subplots(2, 6, figsize=(12, 4.4))
for c, name in enumerate(["r", "g", "b", "1-r", "1-g", "1-b"]):
    axes[0, c].imshow(encoded[0, c].numpy(), cmap="gray", vmin=0, vmax=1)
    axes[0, c].set_title(name)
norms = {"norm of x": x[0].norm(dim=0), "norm of [x, 1-x]": encoded[0].norm(dim=0)}
for ax, (title, n) in zip(axes[1, :2], norms.items(), strict=True):
    im = ax.imshow(n.numpy(), cmap="viridis", vmin=0, vmax=3**0.5)
    ax.set_title(f"{title}\nmin {float(n.min()):.2f}")
fig.colorbar(im, ax=axes[1, :2].tolist(), shrink=0.8)
axes[1, 2].imshow(x[0].permute(1, 2, 0).numpy())
axes[1, 2].set_title("input")
axes[1, 3].imshow(alignnet.colour_explanation(e, index=0))
axes[1, 3].set_facecolor("black")
axes[1, 3].set_title("colour explanation")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
for ax in axes[1, 4:]:
    ax.axis("off")
print(
    "smallest pixel norm without / with the encoding:",
    round(float(x[0].norm(dim=0).min()), 3),
    "/",
    round(float(encoded[0].norm(dim=0).min()), 3),
)
print(
    "norm bounds of [x, 1-x]: sqrt(3/2) =",
    round(1.5**0.5, 3),
    "to sqrt(3) =",
    round(3**0.5, 3),
    "| every pair sums to 1:",
    bool(torch.allclose(encoded[:, :3] + encoded[:, 3:], torch.ones_like(x))),
)
