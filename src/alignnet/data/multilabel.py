"""Multi-label images listed in a CSV file (docs/own-data.md#multi-label-images-a-csv-file).

The file has a header row, a path column (``path``, ``image``, ``file`` or ``filename``: relative to the CSV's
folder, or absolute) and a ``labels`` column with the image's label names separated by ``;`` (empty: none of the
labels), and optionally a ``split`` column (``train`` / ``val``)::

    path,labels
    photos/0001.png,cat;dog
    photos/0002.png,dog
    photos/0003.png,

The classes are the sorted union of the label names unless an order is given. Items are
``(image (3, S, S) float in [0, 1], multi-hot float (K,))``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError

__all__ = [
    "LabelTable",
    "MultiLabelCsv",
    "csv_datasets",
    "make_mosaics",
    "parse_classes",
    "read_label_csv",
    "write_label_csv",
]

PATH_COLUMNS = ("path", "image", "file", "filename")
LABEL_COLUMNS = ("labels", "label")
SEPARATOR = ";"


@dataclass(frozen=True)
class LabelTable:
    """What a label CSV holds: absolute image paths, the class names and the ``(N, K)`` multi-hot targets."""

    paths: tuple[str, ...]
    classes: tuple[str, ...]
    targets: np.ndarray  # float32 (N, K)
    splits: tuple[str, ...] | None  # per row, "train" or "val"; None without a split column


def parse_classes(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """A class order given as ``"a;b;c"`` or a sequence of names (``None`` stays ``None``)."""
    if text is None:
        return None
    names = [n.strip() for n in (text.split(SEPARATOR) if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if len(set(names)) != len(names) or not names:
        raise InputError(f"the class order must be distinct, non-empty names separated by ';', got {text!r}")
    return tuple(names)


def read_label_csv(path: str | os.PathLike, classes: str | Sequence[str] | None = None) -> LabelTable:
    """Read a label CSV (module docstring). ``classes``: the class order (``"a;b;c"`` or names); every label in
    the file must be one of them. Missing image files, unknown columns, labels or splits raise
    :class:`~alignnet.errors.InputError` naming them."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"label CSV not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip().lower() for h in reader.fieldnames or []]
        rows = [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()} for row in reader]
    path_col = next((c for c in PATH_COLUMNS if c in header), None)
    label_col = next((c for c in LABEL_COLUMNS if c in header), None)
    if path_col is None or label_col is None:
        raise InputError(
            f"{path}: the header must name a path column ({' or '.join(PATH_COLUMNS)}) and a 'labels' column "
            f"(names separated by '{SEPARATOR}'); it has {', '.join(header) or 'no columns'}"
        )
    if not rows:
        raise InputError(f"{path} lists no images")
    base = path.parent
    paths = [str(p if (p := Path(r[path_col]).expanduser()).is_absolute() else base / p) for r in rows]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise InputError(f"{path}: {len(missing)} image files not found, e.g. {', '.join(missing[:3])}")
    labels = [[n.strip() for n in r[label_col].split(SEPARATOR) if n.strip()] for r in rows]
    found = sorted({n for row in labels for n in row})
    order = parse_classes(classes) or tuple(found)
    unknown = [n for n in found if n not in order]
    if unknown:
        raise InputError(f"{path}: labels {', '.join(unknown[:5])} are not among the classes {', '.join(order)}")
    if len(order) < 2:
        raise InputError(f"{path}: multi-label data needs at least 2 classes, found {', '.join(order) or 'none'}")
    index = {n: i for i, n in enumerate(order)}
    targets = np.zeros((len(rows), len(order)), np.float32)
    for i, row in enumerate(labels):
        targets[i, [index[n] for n in row]] = 1
    splits = None
    if "split" in header:
        splits = tuple(r["split"].lower() for r in rows)
        bad = sorted(set(splits) - {"train", "val"})
        if bad:
            raise InputError(f"{path}: the split column must hold train or val, found {', '.join(bad)}")
    return LabelTable(tuple(paths), order, targets, splits)


class MultiLabelCsv(Dataset):
    """Images of a :class:`LabelTable` (or some of its rows): items ``(transform(image), multi-hot (K,))``.

    Unreadable images behave as in :class:`~alignnet.data.SafeImageFolder` (``strict``: raise; otherwise a
    warning and a ``None`` item for :func:`~alignnet.data.collate_skip_none`).
    """

    multilabel = True

    def __init__(
        self,
        table: LabelTable,
        transform: Callable | None = None,
        rows: Sequence[int] | None = None,
        strict: bool = False,
    ) -> None:
        self.table = table
        self.rows = list(range(len(table.paths))) if rows is None else [int(r) for r in rows]
        self.transform, self.strict, self.skipped = transform, strict, 0
        self.classes = table.classes
        self.samples = [table.paths[r] for r in self.rows]
        self.multi_hot = torch.from_numpy(table.targets[self.rows])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int):
        from .datasets import open_or_skip
        from .transforms import pil_to_tensor

        image = open_or_skip(self, self.samples[index])
        if image is None:
            return None
        x = self.transform(image) if self.transform is not None else pil_to_tensor(image)
        return x, self.multi_hot[index]


def csv_datasets(
    path: str | os.PathLike,
    image_size: int = 32,
    val_fraction: float | None = 0.1,
    seed: int = 0,
    strict: bool = False,
    hflip: bool = True,
    classes: str | Sequence[str] | None = None,
) -> tuple[MultiLabelCsv, MultiLabelCsv]:
    """Training and validation sets of a label CSV: its ``split`` column when it has one, otherwise a seeded
    random split with ``val_fraction``. Transforms as :func:`~alignnet.data.image_folder`'s."""
    from .datasets import _folder_train_transform
    from .transforms import eval_transform

    table = read_label_csv(path, classes)
    n = len(table.paths)
    if table.splits is not None:
        train_rows = [i for i, s in enumerate(table.splits) if s == "train"]
        val_rows = [i for i, s in enumerate(table.splits) if s == "val"]
        if not train_rows or not val_rows:
            raise InputError(f"{path}: the split column needs both train and val rows")
    else:
        if val_fraction is None or not 0 < val_fraction < 1:
            raise InputError(f"{path} has no split column: give a validation fraction in (0, 1), got {val_fraction}")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        n_val = max(1, round(n * val_fraction))
        train_rows, val_rows = sorted(order[n_val:]), sorted(order[:n_val])
    train = MultiLabelCsv(table, _folder_train_transform(image_size, hflip), train_rows, strict)
    val = MultiLabelCsv(table, eval_transform(image_size), val_rows, strict)
    return train, val


def make_mosaics(
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    grid: int = 2,
    max_items: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-label mosaics: ``grid x grid`` cells, each empty (zeros) or holding one item of ``images``.

    Each mosaic draws its number of items uniformly from 1 to ``max_items`` (default ``grid**2``), that many
    distinct classes among ``labels``, one random item of each and random distinct cells, all with
    ``numpy.random.default_rng(seed)``. ``images``: ``(N, h, w)`` or ``(N, h, w, C)`` (any dtype);
    ``labels``: ``(N,)`` ints. Returns the mosaics ``(n, grid*h, grid*w[, C])`` and the cell labels
    ``(n, grid**2)`` (row-major, ``-1`` for an empty cell; :func:`alignnet.metrics.label_cells` reads them).
    """
    images, labels = np.asarray(images), np.asarray(labels).astype(np.int64)
    cells = int(grid) ** 2
    max_items = cells if max_items is None else int(max_items)
    classes = np.unique(labels)
    if not 1 <= max_items <= min(cells, len(classes)):
        raise InputError(f"max_items must be in [1, {min(cells, len(classes))}], got {max_items}")
    rng = np.random.default_rng(seed)
    by_class = {int(c): np.flatnonzero(labels == c) for c in classes}
    h, w = images.shape[1:3]
    out = np.zeros((n, grid * h, grid * w, *images.shape[3:]), images.dtype)
    cell_labels = np.full((n, cells), -1, np.int64)
    for i in range(n):
        k = int(rng.integers(1, max_items + 1))
        for cls, cell in zip(rng.choice(classes, k, replace=False), rng.choice(cells, k, replace=False), strict=True):
            r, c = divmod(int(cell), grid)
            out[i, r * h : (r + 1) * h, c * w : (c + 1) * w] = images[rng.choice(by_class[int(cls)])]
            cell_labels[i, cell] = int(cls)
    return out, cell_labels


def write_label_csv(
    csv_path: str | os.PathLike,
    images: np.ndarray,
    labels: Sequence[Sequence[str]],
    splits: Sequence[str] | None = None,
    image_dir: str = "images",
) -> Path:
    """Write uint8 ``images`` (``(N, H, W)`` grey or ``(N, H, W, 3)``) as PNGs in ``<csv folder>/<image_dir>/``
    and the label CSV naming them (``path,labels[,split]``). Refuses to replace an existing CSV or image."""
    from PIL import Image

    csv_path = Path(csv_path)
    if len(images) != len(labels) or (splits is not None and len(splits) != len(images)):
        raise InputError(f"{len(images)} images but {len(labels)} label lists / {len(splits or [])} splits")
    folder = csv_path.parent / image_dir
    names = [f"{image_dir}/{i:06d}.png" for i in range(len(images))]
    existing = [p for p in [csv_path, *(csv_path.parent / n for n in names)] if p.exists()]
    if existing:
        raise FileExistsError(f"would overwrite {existing[0]} ({len(existing)} files exist); choose another folder")
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in zip(names, images, strict=True):
        Image.fromarray(np.asarray(image, np.uint8)).save(csv_path.parent / name)
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "labels", *(["split"] if splits is not None else [])])
        for i, name in enumerate(names):
            writer.writerow([name, SEPARATOR.join(labels[i]), *([splits[i]] if splits is not None else [])])
    return csv_path
