"""Dataset readers: Fashion-MNIST (idx files), the embedded subset, CIFAR-10, ImageFolder.

Nothing is downloaded: every reader takes a directory and says where the files should come from
when they are missing.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import warnings
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, Subset

from ..errors import InputError
from .transforms import (
    CorruptImageError,
    augment_32,
    eval_transform,
    fashion_mnist_to_input,
    pil_to_tensor,
    train_transform,
)

__all__ = [
    "CIFAR10_CLASSES",
    "DEFAULT_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "ArrayImageDataset",
    "CIFAR10Dataset",
    "SafeImageFolder",
    "cifar10",
    "collate_skip_none",
    "fashion_mnist",
    "image_folder",
    "load_embedded",
    "read_cifar_batch",
    "read_fashion_mnist",
    "read_idx",
]

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# Where Debian's ``dataset-fashion-mnist`` package installs the four idx files.
DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
EMBEDDED_FILE = "fashion_mnist_subset.npz"


def _check_split(split: str) -> str:
    if split not in ("train", "test"):
        raise InputError(f"split must be 'train' or 'test', got {split!r}")
    return split


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (the MNIST format), plain or gzipped.

    torchvision's ``FashionMNIST`` needs its own ``raw/`` folder layout and un-gzipped copies; this
    ~20-line parser reads the files where they lie (e.g. Debian's gzipped ones).

    Returns
    -------
    np.ndarray
        Array of the file's dtype and shape, e.g. uint8 ``(N, 28, 28)`` or ``(N,)``.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise InputError(f"{path} is not an idx file (bad magic number)")
    dtype, ndim = np.dtype(_IDX_DTYPES[data[2]]), data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = offset + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise InputError(f"{path} is truncated or corrupt: {len(data)} bytes, expected {expected} for shape {shape}")
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


def read_fashion_mnist(root: str | os.PathLike | None = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Read Fashion-MNIST from the four standard idx files (plain or ``.gz``).

    Parameters
    ----------
    root:
        Directory with ``train-images-idx3-ubyte[.gz]`` etc.; default
        ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
    split:
        ``"train"`` (60,000 images) or ``"test"`` (10,000).

    Returns
    -------
    images, labels
        uint8 ``(N, 28, 28)`` and int64 ``(N,)``.
    """
    split = _check_split(split)
    root = DEFAULT_FASHION_MNIST_DIR if root is None else Path(root)
    paths = [_find_idx(root, stem) for stem in _FMNIST_FILES[split]]
    if any(p is None for p in paths):
        missing = [s for s, p in zip(_FMNIST_FILES[split], paths, strict=True) if p is None]
        raise FileNotFoundError(
            f"Fashion-MNIST {split} files not found in {root} (missing {', '.join(missing)}[.gz]); "
            "install them with `apt-get install dataset-fashion-mnist` (puts them in "
            f"{DEFAULT_FASHION_MNIST_DIR}) or pass the directory that holds the four idx files"
        )
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise InputError(f"Fashion-MNIST files in {root} have inconsistent shapes {images.shape} / {labels.shape}")
    return images.astype(np.uint8), labels.astype(np.int64)


class ArrayImageDataset(Dataset):
    """In-memory grey image dataset (Fashion-MNIST and the embedded subset).

    Items are ``(image, label)`` with ``image`` the float32 ``(3, 32, 32)`` model input in ``[0, 1]``
    (see :func:`fashion_mnist_to_input`), then ``transform`` if given (e.g. :func:`augment_32`).

    Attributes
    ----------
    images: uint8 ``(N, 28, 28)`` raw pixels.
    labels: int64 ``(N,)``.
    classes: class names.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        classes: tuple[str, ...] = FASHION_MNIST_CLASSES,
        transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if len(images) != len(labels):
            raise InputError(f"{len(images)} images but {len(labels)} labels")
        self.images = np.ascontiguousarray(images)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = tuple(classes)
        self.transform = transform
        self._inputs = fashion_mnist_to_input(self.images)  # (N, 3, 32, 32) float, 12 KB per image

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x = self._inputs[index]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[index])

    def tensors(self) -> tuple[Tensor, Tensor]:
        """All inputs and labels at once: float32 ``(N, 3, 32, 32)`` (untransformed) and int64 ``(N,)``."""
        return self._inputs, torch.from_numpy(self.labels)


def fashion_mnist(
    root: str | os.PathLike | None = None, split: str = "train", augment: bool = False, hflip: bool = True
) -> ArrayImageDataset:
    """Fashion-MNIST as an :class:`ArrayImageDataset` (``augment`` adds random crop + flip, no flip with
    ``hflip=False``)."""
    images, labels = read_fashion_mnist(root, split)
    return ArrayImageDataset(images, labels, transform=augment_32(hflip=hflip) if augment else None)


def load_embedded(split: str = "train", augment: bool = False, hflip: bool = True) -> ArrayImageDataset:
    """The Fashion-MNIST subset shipped inside the package (no installation needed).

    1,000 training and 1,000 test images, 100 per class, drawn with a fixed seed by
    ``scripts/make_embedded_subset.py`` (MIT licence, Zalando SE: ``alignnet/data/LICENSE-fashion-mnist.txt``).

    Returns
    -------
    ArrayImageDataset
        Items ``(float32 (3, 32, 32) in [0, 1], int label)``; ``.tensors()`` gives all of them as
        ``(1000, 3, 32, 32)`` and ``(1000,)``, ``.images`` the raw uint8 ``(1000, 28, 28)``.
    """
    split = _check_split(split)
    with resources.files("alignnet.data").joinpath(EMBEDDED_FILE).open("rb") as f:
        data = np.load(f)
        images, labels = data[f"{split}_images"], data[f"{split}_labels"]
    return ArrayImageDataset(images, labels, transform=augment_32(hflip=hflip) if augment else None)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays and builtins (a CIFAR batch needs no more)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one ``cifar-10-batches-py`` pickle batch.

    torchvision's ``CIFAR10`` would do, but it insists on the official md5 sums and uses an
    unrestricted ``pickle.load``; this reader accepts any batch in the format and only rebuilds
    numpy arrays.

    Returns
    -------
    images, labels
        uint8 ``(N, 32, 32, 3)`` (HWC) and int64 ``(N,)``.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            entry = _NumpyOnlyUnpickler(f, encoding="latin1").load()
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"], dtype=np.int64)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"{path} is not a CIFAR python batch: {exc}") from None
    if len(images) != len(labels):
        raise InputError(f"{path}: {len(images)} images but {len(labels)} labels")
    return np.ascontiguousarray(images), labels


class CIFAR10Dataset(Dataset):
    """CIFAR-10 in memory; items ``(float32 (3, 32, 32) in [0, 1], int label)`` then ``transform``.

    Attributes: ``images`` uint8 ``(N, 32, 32, 3)``, ``labels`` int64 ``(N,)``, ``classes``.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None) -> None:
        self.images, self.labels, self.transform = images, labels, transform
        self.classes = CIFAR10_CLASSES

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x = torch.from_numpy(self.images[index]).permute(2, 0, 1).float() / 255.0
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[index])


def cifar10(
    root: str | os.PathLike, train: bool = True, augment: bool | None = None, hflip: bool = True
) -> CIFAR10Dataset:
    """CIFAR-10 from a ``cifar-10-batches-py`` directory (the python pickle batches).

    ``root`` may be that directory itself or its parent. ``augment`` (default: ``train``) adds
    random crop (padding 4) + horizontal flip (no flip with ``hflip=False``).
    """
    root = Path(root)
    folder = (
        root
        if root.name == "cifar-10-batches-py" or (root / "data_batch_1").is_file()
        else root / "cifar-10-batches-py"
    )
    needed = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    missing = [n for n in needed if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 not found: {folder} lacks {', '.join(missing)}. Download the python version "
            "(cifar-10-python.tar.gz) from https://www.cs.toronto.edu/~kriz/cifar.html, extract it and "
            "pass the cifar-10-batches-py directory (or its parent)"
        )
    parts = [read_cifar_batch(folder / n) for n in needed]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    augment = train if augment is None else augment
    return CIFAR10Dataset(images, labels, augment_32(hflip=hflip) if augment else None)


def collate_skip_none(batch: list) -> tuple[Tensor, Tensor]:
    """``default_collate`` that drops the ``None`` items :class:`SafeImageFolder` returns for bad files."""
    from torch.utils.data import default_collate

    kept = [item for item in batch if item is not None]
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return default_collate(kept)


class SafeImageFolder(Dataset):
    """``torchvision.datasets.ImageFolder`` whose unreadable files are reported by path.

    With ``strict=True`` a bad file raises :class:`CorruptImageError` naming it; otherwise a
    ``UserWarning`` names it, the item is ``None`` (drop it with :func:`collate_skip_none`) and
    ``skipped`` counts them (per process; each DataLoader worker has its own copy).
    """

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None, strict: bool = False) -> None:
        from torchvision.datasets import ImageFolder

        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        try:
            self.folder = ImageFolder(str(root), loader=_open_rgb_or_raise, allow_empty=False)
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"{root} has no images in class sub-folders (expected {root}/<class>/<image>): {exc}"
            ) from None
        self.transform, self.strict, self.skipped = transform, strict, 0
        self.classes, self.samples = self.folder.classes, self.folder.samples
        self.targets = self.folder.targets

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, index: int):
        path, target = self.samples[index]
        image = open_or_skip(self, path)
        if image is None:
            return None
        x = self.transform(image) if self.transform is not None else pil_to_tensor(image)
        return x, target


def open_or_skip(dataset, path: str) -> Image.Image | None:
    """The image at ``path``; an unreadable one raises :class:`CorruptImageError` when ``dataset.strict``, else it
    is counted in ``dataset.skipped``, named in a warning, and ``None`` is returned."""
    try:
        return _open_rgb_or_raise(path)
    except CorruptImageError as exc:
        if dataset.strict:
            raise
        dataset.skipped += 1
        warnings.warn(f"skipping {exc} ({dataset.skipped} skipped so far)", stacklevel=3)
        return None


def _open_rgb_or_raise(path: str) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(path, str(exc) or type(exc).__name__) from None


def _folder_train_transform(image_size: int, hflip: bool = True):
    """At 32-ish pixels: the evaluation transform (images of any size fitted to ``image_size``, as at test
    time) then random crop (padding 4) + flip; larger: :func:`train_transform` (random resized crop).
    ``hflip=False``: no flip (digits, text: a mirrored "2" is no "2")."""
    if image_size > 64:
        return train_transform(image_size, hflip=hflip)
    from torchvision.transforms import v2

    flip = [v2.RandomHorizontalFlip()] if hflip else []
    return v2.Compose([eval_transform(image_size), v2.RandomCrop(image_size, padding=4), *flip])


def image_folder(
    root: str | os.PathLike,
    image_size: int = 224,
    val_fraction: float | None = None,
    seed: int = 0,
    strict: bool = False,
    hflip: bool = True,
) -> tuple[Dataset, Dataset]:
    """Training and validation sets from an ImageFolder-style directory.

    Parameters
    ----------
    root:
        Either ``root/train/<class>/*`` and ``root/val/<class>/*`` (``val_fraction=None``), or
        ``root/<class>/*`` split at random with ``val_fraction`` and ``seed``.
    image_size:
        32-ish: resize + centre crop to ``image_size``, then random crop (padding 4) + flip; larger: random
        resized crop + flip (training) and resize + centre crop (validation). No mean/std normalisation.
    strict:
        Raise on the first unreadable image instead of skipping it with a warning.
    hflip:
        Flip training images horizontally at random (``False`` for digits, text, anything not mirror-symmetric).

    Returns
    -------
    (train, val)
        Datasets of ``(float32 (3, S, S) in [0, 1], int label)`` (``None`` for a skipped file:
        use :func:`collate_skip_none`).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    if val_fraction is None:
        train_dir, val_dir = root / "train", root / "val"
        if not train_dir.is_dir() or not val_dir.is_dir():
            raise FileNotFoundError(
                f"{root} needs train/ and val/ sub-folders (or give a validation fraction to split {root}/<class>/*)"
            )
        train = SafeImageFolder(train_dir, _folder_train_transform(image_size, hflip), strict)
        val = SafeImageFolder(val_dir, eval_transform(image_size), strict)
        if train.classes != val.classes:
            raise InputError(f"train/ and val/ of {root} have different class folders")
        return train, val
    if not 0 < val_fraction < 1:
        raise InputError(f"val_fraction must be in (0, 1), got {val_fraction}")
    train_all = SafeImageFolder(root, _folder_train_transform(image_size, hflip), strict)
    val_all = SafeImageFolder(root, eval_transform(image_size), strict)
    n = len(train_all)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, round(n * val_fraction))
    train, val = Subset(train_all, order[n_val:]), Subset(val_all, order[:n_val])
    train.classes = val.classes = train_all.classes  # type: ignore[attr-defined]
    return train, val
