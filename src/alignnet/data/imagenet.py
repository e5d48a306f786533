"""ImageNet validation images in the ImageFolder layout, labelled with the standard class indices.

``root/<wnid>/<image>`` where ``<wnid>`` is a WordNet ID such as ``n01440764`` (tench). The class
index of a folder is the position of its WordNet ID in ``imagenet_synsets.txt`` (shipped with the
package: the 1000 ILSVRC-2012 WordNet IDs in class-index order, i.e. sorted, the order the
official models' outputs and :func:`alignnet.pretrained.imagenet_classes` use; the list is the one
timm ships as ``imagenet_synsets.txt``). So a folder holding only some classes still gets the right
labels, unlike a plain ImageFolder, which numbers the folders it finds.

Images are read as RGB in [0, 1] and fitted like every model input (:func:`~alignnet.data.fit_to_spec`):
for the 224-pixel ImageNet models, shorter side to 256 and centre crop 224 (docs/pretrained.md#imagenet-evaluation-transform).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from ..errors import InputError

__all__ = ["IMAGE_SUFFIXES", "ImageNetVal", "imagenet_synsets"]

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ImageNet WordNet IDs in class-index order (``n01440764`` is class 0)."""
    text = resources.files("alignnet").joinpath("data", "imagenet_synsets.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


class ImageNetVal(Dataset):
    """``(image (3, H, W) float in [0, 1], class index)`` items of an ImageNet validation folder.

    Parameters
    ----------
    root:
        The folder with one sub-folder per WordNet ID (any subset of the 1000; other names are an error).
    input_spec:
        The model's :class:`~alignnet.models.InputSpec` (size, resize before the crop, style);
        ``None``: 224 x 224 after resizing the shorter side to 256.
    resize:
        ``"crop"`` (the evaluation transform), ``"stretch"`` or ``"none"`` (:func:`~alignnet.data.fit_to_spec`).
    """

    def __init__(self, root: str | os.PathLike, input_spec=None, resize: str = "crop") -> None:
        from ..models import InputSpec

        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"ImageNet folder not found: {root}")
        index = {wnid: i for i, wnid in enumerate(imagenet_synsets())}
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        unknown = [p.name for p in folders if p.name not in index]
        if unknown:
            raise InputError(
                f"{root}: sub-folders must be ImageNet WordNet IDs (e.g. n01440764); not one: {', '.join(unknown[:5])}"
            )
        self.samples = [
            (str(f), index[d.name])
            for d in folders
            for f in sorted(d.iterdir())
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not self.samples:
            raise FileNotFoundError(f"{root} has no images in WordNet-ID sub-folders ({root}/n01440764/*.JPEG)")
        self.targets = [t for _, t in self.samples]
        self.classes = imagenet_synsets()
        self.input_spec = input_spec or InputSpec(size=(224, 224), resize=256)
        self.resize = resize

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from .prepare import fit_to_spec

        path, target = self.samples[index]
        return fit_to_spec(path, self.input_spec, self.resize), target
