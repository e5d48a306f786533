"""Evaluation data named by a short string, as ``alignnet evaluate --data`` takes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import InputError

__all__ = ["DATA_HELP", "LabelledFolder", "dataset_from_spec"]

DATA_HELP = (
    "'embedded' (shipped Fashion-MNIST test subset), 'fmnist[:DIR]' (Fashion-MNIST test set), "
    "'cifar10:DIR' (CIFAR-10 test batch), 'imagenet:DIR' (ImageNet validation folder, DIR/<wnid>/<image>, "
    "labelled with the standard class indices), 'imagefolder:DIR' (your images, DIR/<class>/<image>, labelled "
    "by the model's class names), 'csv:FILE' (multi-label: a path and a 'labels' column, names separated by ';') "
    "or an .npz with 'images' (N,C,H,W) in [0,1] and 'labels'"
)


class LabelledFolder(Dataset):
    """``DIR/<class>/<image>`` labelled with the index of ``<class>`` among ``class_names`` (a model's; the
    folder's sorted names when ``None``), images fitted to ``input_spec`` (:func:`~alignnet.data.fit_to_spec`).
    A folder whose class is not among ``class_names`` is refused, naming it."""

    def __init__(self, root: str | Path, input_spec=None, class_names=None) -> None:
        from .datasets import SafeImageFolder

        folder = SafeImageFolder(root)
        names = tuple(class_names) if class_names is not None else tuple(folder.classes)
        unknown = [c for c in folder.classes if c not in names]
        if unknown:
            raise InputError(
                f"{root}: the class folders {', '.join(unknown[:5])} are not among the model's classes "
                f"({', '.join(names[:12])}{' ...' if len(names) > 12 else ''}); name each folder after one of them"
            )
        index = {n: i for i, n in enumerate(names)}
        self.samples = [(p, index[folder.classes[t]]) for p, t in folder.samples]
        self.targets = [t for _, t in self.samples]
        self.classes, self.input_spec = names, input_spec

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        from .prepare import fit_to_spec

        path, target = self.samples[index]
        return fit_to_spec(path, self.input_spec, "crop"), target


def _model_spec(input_spec):
    from ..models import InputSpec

    return input_spec or InputSpec(size=(32, 32))


def dataset_from_spec(spec: str, input_spec=None, class_names=None) -> Dataset | tuple[Tensor, Tensor]:
    """The dataset named by ``spec`` (see :data:`DATA_HELP`).

    ``input_spec``: the model's :class:`~alignnet.models.InputSpec`, used to fit ImageNet images
    (shorter side to ``resize``, centre crop to ``size``) and your own (``imagefolder:``, ``csv:``; 32 x 32
    without one). ``class_names``: the model's, which ``imagefolder:`` and ``csv:`` labels are matched to by
    name. ``csv:`` items are ``(image, multi-hot (K,))``.
    """
    from . import cifar10, fashion_mnist, load_embedded
    from .imagenet import ImageNetVal

    kind, _, arg = spec.partition(":")
    if kind == "embedded":
        return load_embedded("test")
    if kind == "fmnist":
        return fashion_mnist(arg or None, split="test")
    if kind == "cifar10":
        if not arg:
            raise InputError("--data cifar10:DIR needs the directory of the CIFAR-10 python batches")
        return cifar10(arg, train=False)
    if kind == "imagenet":
        if not arg:
            raise InputError("--data imagenet:DIR needs the validation folder (DIR/n01440764/*.JPEG, ...)")
        return ImageNetVal(arg, input_spec)
    if kind == "imagefolder":
        if not arg:
            raise InputError("--data imagefolder:DIR needs the folder of class sub-folders (DIR/<class>/<image>)")
        return LabelledFolder(Path(arg).expanduser(), _model_spec(input_spec), class_names)
    if kind == "csv":
        if not arg:
            raise InputError("--data csv:FILE needs the label CSV (a path and a 'labels' column)")
        from .multilabel import MultiLabelCsv, read_label_csv
        from .prepare import fit_to_spec

        fitted = _model_spec(input_spec)
        return MultiLabelCsv(read_label_csv(arg, class_names), lambda image: fit_to_spec(image, fitted, "crop"),
                             strict=True)  # fmt: skip
    path = Path(spec)
    if path.suffix == ".npz":
        if not path.exists():
            raise FileNotFoundError(f"no data file {path}")
        with np.load(path) as f:
            if "images" not in f or "labels" not in f:
                raise InputError(f"{path} needs arrays 'images' (N, C, H, W) and 'labels' (N,)")
            return torch.from_numpy(f["images"]).float(), torch.from_numpy(f["labels"]).long()
    raise InputError(
        f"unknown --data {spec!r}: use embedded, fmnist[:DIR], cifar10:DIR, imagenet:DIR, imagefolder:DIR, csv:FILE "
        "or a .npz file"
    )
