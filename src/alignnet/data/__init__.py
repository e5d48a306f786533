"""Data: Fashion-MNIST (files and the embedded subset), CIFAR-10, ImageFolder, transforms.

All readers return float images in ``[0, 1]`` without mean/std normalisation: the models encode
their own input (docs/algorithms.md#input-encoding).
"""

from .datasets import (
    CIFAR10_CLASSES,
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    ArrayImageDataset,
    CIFAR10Dataset,
    SafeImageFolder,
    cifar10,
    collate_skip_none,
    fashion_mnist,
    image_folder,
    load_embedded,
    read_cifar_batch,
    read_fashion_mnist,
    read_idx,
)
from .multilabel import MultiLabelCsv, csv_datasets, make_mosaics, read_label_csv, write_label_csv
from .prepare import (
    MAX_ASPECT_RATIO,
    MAX_PREPARED_PIXELS,
    RESIZE_POLICIES,
    ImageTooLargeError,
    check_fit,
    fit_to_model,
    fit_to_spec,
    input_spec_of,
)
from .transforms import (
    CorruptImageError,
    augment_32,
    eval_transform,
    fashion_mnist_to_input,
    load_image,
    pil_to_tensor,
    train_transform,
)

__all__ = [
    "CIFAR10_CLASSES",
    "DEFAULT_FASHION_MNIST_DIR",
    "MAX_ASPECT_RATIO",
    "MAX_PREPARED_PIXELS",
    "RESIZE_POLICIES",
    "FASHION_MNIST_CLASSES",
    "ArrayImageDataset",
    "CIFAR10Dataset",
    "CorruptImageError",
    "ImageTooLargeError",
    "MultiLabelCsv",
    "SafeImageFolder",
    "augment_32",
    "cifar10",
    "check_fit",
    "collate_skip_none",
    "csv_datasets",
    "eval_transform",
    "fashion_mnist",
    "fashion_mnist_to_input",
    "fit_to_model",
    "fit_to_spec",
    "input_spec_of",
    "image_folder",
    "load_embedded",
    "load_image",
    "make_mosaics",
    "pil_to_tensor",
    "read_cifar_batch",
    "read_fashion_mnist",
    "read_idx",
    "read_label_csv",
    "train_transform",
    "write_label_csv",
]
