"""Evaluation data named by a short string, as ``alignnet evaluate --data`` takes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import InputError

__all__ = ["DATA_HELP", "dataset_from_spec"]

DATA_HELP = (
    "'embedded' (shipped Fashion-MNIST test subset), 'fmnist[:DIR]' (Fashion-MNIST test set), "
    "'cifar10:DIR' (CIFAR-10 test batch), 'imagenet:DIR' (ImageNet validation folder, DIR/<wnid>/<image>, "
    "labelled with the standard class indices) or an .npz with 'images' (N,C,H,W) in [0,1] and 'labels'"
)


def dataset_from_spec(spec: str, input_spec=None) -> Dataset | tuple[Tensor, Tensor]:
    """The dataset named by ``spec`` (see :data:`DATA_HELP`).

    ``input_spec``: the model's :class:`~alignnet.models.InputSpec`, used to fit ImageNet images
    (shorter side to ``resize``, centre crop to ``size``).
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
    path = Path(spec)
    if path.suffix == ".npz":
        if not path.exists():
            raise FileNotFoundError(f"no data file {path}")
        with np.load(path) as f:
            if "images" not in f or "labels" not in f:
                raise InputError(f"{path} needs arrays 'images' (N, C, H, W) and 'labels' (N,)")
            return torch.from_numpy(f["images"]).float(), torch.from_numpy(f["labels"]).long()
    raise InputError(f"unknown --data {spec!r}: use embedded, fmnist[:DIR], cifar10:DIR, imagenet:DIR or a .npz file")
