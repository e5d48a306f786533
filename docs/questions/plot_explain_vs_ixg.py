"""
# How does `explain` differ from Input x Gradient?

A B-cos network computes `logit = W(x) . x + b`, where the weights `W(x)` depend on the input. `explain`
runs the model in **explanation mode** ([algorithms](../../algorithms.md#explanation-mode)): the dynamic
factors (B-cos scales, patch norms) are detached, so one backward pass returns exactly `W(x)`, and the
contributions `W(x) * x` (on the six-channel [encoding](plot_encoding.md)) sum, with the bias, to the logit
(*completeness*, [algorithms](../../algorithms.md#completeness)).

Input x Gradient (`"ixg"`, here on the same six-channel encoding) multiplies the input by the plain gradient.
In a B-cos network the gradient also flows through the dynamic factors: it is `W(x) + (dW/dx) x`, not
`W(x)`. Because every B-cos layer is homogeneous of degree 1 in its input, the extra term sums to zero over
the whole input (Euler's theorem), so Input x Gradient is complete as well, the numbers below show it, but it
*moves* contribution between pixels: same total, a different map. Only explanation mode gives the
contributions of the linear map the model actually applied. (Input x Gradient taken *in explanation mode* is
exactly the explanation: that is how `explain` computes it.)
"""

import matplotlib.pyplot as plt
import torch

import alignnet
from alignnet.attribution import get_attributor
from alignnet.data import load_embedded

model = alignnet.load_pretrained("fmnist_bcos")
images, labels = load_embedded("test").tensors()
x = images[:4]
e = alignnet.explain(model, x)  # explanation mode: contributions (N, H, W)
ixg = get_attributor("ixg", model).attribute(x, e.targets).sum(1).detach()  # plain Input x Gradient, (N, H, W)
bias = e.bias.detach()

print(f"{'image':>5} {'logit':>9} {'explain: sum + bias':>20} {'IxG: sum + bias':>16}")
for i in range(len(x)):
    print(
        f"{i:>5} {float(e.outputs[i]):9.4f} {float(e.contributions[i].sum() + bias[i]):20.4f} "
        f"{float(ixg[i].sum() + bias[i]):16.4f}"
    )
print(
    f"largest completeness error: explain {float(e.completeness_error()):.1e}, "
    f"IxG {float((ixg.sum((1, 2)) + bias - e.outputs).abs().max()):.1e}"
)
print(
    f"correlation of the two maps: {float(torch.corrcoef(torch.stack([e.contributions[0].flatten(), ixg[0].flatten()]))[0, 1]):.3f}"
)

# %%
# The same model, the same image and class: the exact explanation and Input x Gradient.

fig, axes = plt.subplots(1, 3, figsize=(8, 2.8))
axes[0].imshow(x[0].permute(1, 2, 0).numpy())
axes[0].set_title(model.class_names[int(e.targets[0])])
alignnet.plot_contribution_map(
    e.contributions[0], ax=axes[1], title=f"explain (sum+b = {float(e.contributions[0].sum() + bias[0]):.2f})"
)
alignnet.plot_contribution_map(
    ixg[0], ax=axes[2], title=f"Input x Gradient (sum+b = {float(ixg[0].sum() + bias[0]):.2f})"
)
for ax in axes:
    ax.axis("off")
fig.suptitle(f"logit = {float(e.outputs[0]):.2f}")
fig.tight_layout()
