"""
# Explain a model in five lines

Load a B-cos network that ships inside the package (trained on Fashion-MNIST, no download), explain its
prediction for a few test images and draw the explanations. The explanation is *exact*: the contributions of
the pixels sum to the logit (see [explanation mode against Input x Gradient](../questions/plot_explain_vs_ixg.md)).
"""

import alignnet
from alignnet.data import load_embedded
from alignnet.explanation import plot_explanation

model = alignnet.load_pretrained("fmnist_bcos")  # shipped with the package: no network
images, labels = load_embedded("test").tensors()  # (N, 3, 32, 32) in [0, 1]
e = alignnet.explain(model, images[:4])  # one forward and one backward pass for the batch
rgba = alignnet.colour_explanation(e, index=0)  # (H, W, 4): the explanation in the pixels' colours
plot_explanation(images[0], rgba, e.contributions[0], title=model.class_names[int(e.targets[0])])

# %%
# The same explanation object holds everything: the logits, the explained classes, the dynamic weights
# `W(x)` of shape `(N, 6, H, W)` (six channels: [the `[x, 1-x]` encoding](../questions/plot_encoding.md)) and
# the per-pixel contributions `(N, H, W)`.

print("logits", tuple(e.logits.shape), "weights", tuple(e.weights.shape), "contributions", tuple(e.contributions.shape))
print(
    "predicted:",
    [model.class_names[int(t)] for t in e.targets],
    "true:",
    [model.class_names[int(t)] for t in labels[:4]],
)
print(f"completeness error (sum of contributions + bias - logit): {float(e.completeness_error()):.2e}")
