"""
# Fine-tune on your folder

Put your images in one folder per class (`my_images/<class>/<image>`) and fine-tune a pretrained model on
them: the architecture and weights are kept, the head is new (your classes), and the result is a model file
that `alignnet explain`, `alignnet serve` and `alignnet.load_model` read
([fine-tuning](../../training.md)). On the command line:

```bash
alignnet train --data imagefolder:my_images --init-from fmnist_bcos -o runs/mine
```

Here a tiny folder is written to a temporary directory (three classes of real Fashion-MNIST images under new
names) and the model is fine-tuned for one epoch, only to show the steps; needs the `train` extra.
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

import alignnet
from alignnet.data import load_embedded

work = Path(tempfile.mkdtemp())
data = load_embedded("train")
for label, name in ((0, "shirts"), (1, "trousers"), (7, "sneakers")):
    (work / "my_images" / name).mkdir(parents=True)
    for i, index in enumerate(np.flatnonzero(data.labels == label)[:30]):
        Image.fromarray(data.images[index]).save(work / "my_images" / name / f"{i}.png")

result = alignnet.finetune(
    "fmnist_bcos",
    work / "my_images",
    work / "run",
    epochs=1,
    overrides=["trainer.progress_bar=false", "trainer.num_threads=1", "trainer.seed=0"],
)
print("epochs:", result.epochs_completed, "metrics:", {k: round(v, 3) for k, v in result.metrics.items()})

# %%
# The run directory holds the fine-tuned model with the folder's class names; explain it like any other.

model = alignnet.load_model(work / "run" / "model.safetensors")
print("classes:", model.class_names)
x = alignnet.data.fit_to_model(model, work / "my_images" / "trousers" / "0.png")
e = alignnet.explain(model, x[None])
fig, axes = plt.subplots(1, 2, figsize=(5, 2.6))
axes[0].imshow(x.permute(1, 2, 0).numpy())
axes[0].set_title("my_images/trousers/0.png", fontsize=8)
axes[1].imshow(alignnet.colour_explanation(e, index=0))
axes[1].set_facecolor("black")
axes[1].set_title(f"explanation of '{model.class_names[int(e.targets[0])]}'", fontsize=8)
for ax in axes:
    ax.axis("off")
fig.tight_layout()
