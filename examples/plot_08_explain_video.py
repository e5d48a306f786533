"""
# Explain a video

A video is explained frame by frame for one class; the stability of the explanation over time is the mean
correlation of consecutive frames' maps ([video](../../video.md)). On the command line:

```bash
alignnet video street.mp4 --model fmnist_bcos -o street_explained.gif
```

The Fashion-MNIST models know clothes, not streets, so this example builds a short clip out of two real test
images moving across a black canvas (`synthetic_clip`) and explains it with the shipped model.
"""

import matplotlib.pyplot as plt

import alignnet
from alignnet.data import load_embedded
from alignnet.video import explain_frames, render_panels, synthetic_clip

model = alignnet.load_pretrained("fmnist_bcos")
images, labels = load_embedded("test").tensors()
clip = synthetic_clip(images[0], images[1], n_frames=12, size=32)  # (T, 3, 32, 32)
result = explain_frames(model, clip, progress=False)
print(
    f"{clip.shape[0]} frames, explained class '{model.class_names[int(result.target)]}', "
    f"stability {result.stability:.3f}"
)

# %%
# Each frame as the video writer draws it: input | colour explanation | contribution map.

panels = render_panels(result, min_height=96)  # (T, H, W, 3) uint8
fig, axes = plt.subplots(3, 1, figsize=(6, 6.5))
for ax, t in zip(axes, (0, len(panels) // 2, len(panels) - 1), strict=True):
    ax.imshow(panels[t])
    ax.set_title(f"frame {t}", fontsize=9)
    ax.axis("off")
fig.tight_layout()
