"""What the user-facing commands share: choosing a model, reading images, output folders.

- ``--model``: a shipped model (``fmnist_bcos``, ``fmnist_coda``; the default is ``fmnist_bcos``),
  a ``.safetensors`` file written by :func:`alignnet.save_model`, or a registry name (untrained
  weights, with a warning: only useful to try the commands).
- Resize policy (``--resize``): ``crop`` (default) resizes the shorter side to the model's input
  size and centre-crops a square (the evaluation transform of the papers), ``stretch`` resizes to
  exactly the model's input size ignoring the aspect ratio, ``none`` keeps the image size
  (convolutional models accept any size). An image 4 pixels smaller than the input size (28x28 for
  the 32x32 models) is zero-padded by 2, as Fashion-MNIST images were in training. Images of any mode (grey, RGBA over white, palette,
  16-bit) become RGB in [0, 1] first.
- Output files are never overwritten silently: a command that would replace a file stops with an
  error naming it, unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = [
    "MODEL_HELP",
    "RESIZE_HELP",
    "RESIZE_POLICIES",
    "SHIPPED_MODELS",
    "add_model_arguments",
    "check_new_files",
    "class_name",
    "fit_to_model",
    "load_images",
    "model_input_size",
    "resolve_model",
    "shipped_model",
    "shipped_weights_path",
]

# name -> (file in alignnet/weights, architecture and arguments used by the quick fallback)
SHIPPED_MODELS: dict[str, tuple[str, str, dict]] = {
    "fmnist_bcos": ("fmnist_bcos.safetensors", "bcos_cifar10_9l", {"width": 0.25}),
    "fmnist_coda": ("fmnist_coda.safetensors", "coda_cifar10_9l", {"width": 0.25}),
}
RESIZE_POLICIES = ("crop", "stretch", "none")
RESIZE_HELP = (
    "how images are fitted to the model's input size (32x32 for the shipped models): "
    "'crop' (default) resizes the shorter side to that size and centre-crops a square; "
    "'stretch' resizes to exactly that size ignoring the aspect ratio; "
    "'none' keeps each image's own size (convolutional models accept any size). "
    "With crop/stretch, a 28x28 image for a 32x32 model is zero-padded by 2 (the Fashion-MNIST convention). "
    "Grey, RGBA (composited over white), palette and 16-bit images are converted to RGB in [0, 1] first"
)
MODEL_HELP = (
    "a shipped model (fmnist_bcos, fmnist_coda; default fmnist_bcos), a .safetensors file written by "
    "alignnet.save_model, or a registered model name (untrained weights: see 'alignnet models')"
)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--resize``, ``--device`` as every explaining command has them."""
    parser.add_argument("--model", default="fmnist_bcos", metavar="NAME_OR_PATH", help=MODEL_HELP)
    parser.add_argument("--resize", choices=RESIZE_POLICIES, default="crop", help=RESIZE_HELP)
    parser.add_argument("--device", default="cpu", help="torch device to run on (default: cpu)")


def shipped_weights_path(name: str) -> Path | None:
    """Path of a shipped weights file, or None when this installation does not have it."""
    if name not in SHIPPED_MODELS:
        raise ValueError(f"unknown shipped model {name!r}; shipped: {', '.join(SHIPPED_MODELS)}")
    try:
        path = Path(str(resources.files("alignnet").joinpath("weights", SHIPPED_MODELS[name][0])))
    except (ModuleNotFoundError, FileNotFoundError):
        return None
    return path if path.is_file() else None


def shipped_model(name: str, progress: bool = True) -> nn.Module:
    """A shipped Fashion-MNIST model in eval mode, with ``class_names`` and ``source`` attributes.

    If the weights file is missing (a development checkout before the training run committed it)
    a small model is trained in-process on the embedded subset for a few seconds instead, with a
    loud warning; ``model.source`` then starts with ``"FALLBACK"``.
    """
    from ..data import FASHION_MNIST_CLASSES
    from ..models import load_model

    path = shipped_weights_path(name)
    if path is not None:
        model = load_model(path)
        model.source = f"shipped weights {path.name}"
    else:
        model = _quick_train(name, progress=progress)
    model.class_names = FASHION_MNIST_CLASSES
    return model.eval()


def _quick_train(name: str, steps: int = 100, progress: bool = True) -> nn.Module:
    """Fallback when the shipped weights are missing: a few Adam steps on the embedded training subset.

    Written here (not with Lightning) because it is a seconds-long stand-in, not a training recipe.
    """
    from tqdm.auto import tqdm

    from ..data import load_embedded
    from ..models import create_model

    _file, arch, kwargs = SHIPPED_MODELS[name]
    msg = (
        f"the shipped weights for {name} are missing from this installation: training a small stand-in "
        f"({arch}, {kwargs}) on the embedded subset for {steps} steps; its explanations and accuracy are "
        "NOT those of the shipped model"
    )
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, **kwargs)
    images, labels = load_embedded("train").tensors()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2 if arch.startswith("bcos") else 2e-3)
    onehot = torch.nn.functional.one_hot(labels, 10).float()
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in tqdm(range(steps), desc=f"fallback training {name}", disable=not progress, leave=False):
        idx = torch.randint(0, len(labels), (64,), generator=g)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images[idx]), onehot[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.source = f"FALLBACK: {arch} trained in-process for {steps} steps (shipped weights missing)"
    return model.eval()


def resolve_model(spec: str | None, device: str | torch.device = "cpu", progress: bool = True) -> nn.Module:
    """The model named by ``--model`` (see :data:`MODEL_HELP`), in eval mode on ``device``."""
    from ..models import create_model, list_models, load_model

    spec = spec or "fmnist_bcos"
    if spec in SHIPPED_MODELS:
        model = shipped_model(spec, progress=progress)
    elif os.path.exists(spec) or spec.endswith(".safetensors"):
        model = load_model(spec)
        model.source = f"file {spec}"
    elif spec in list_models():
        warnings.warn(
            f"{spec} is a registry name: its weights are random, so its explanations show an untrained network",
            RuntimeWarning,
            stacklevel=2,
        )
        model = create_model(spec)
        model.source = f"{spec} (untrained)"
    else:
        raise ValueError(
            f"--model {spec!r} is neither a shipped model ({', '.join(SHIPPED_MODELS)}), an existing file, "
            "nor a registered model name (see 'alignnet models')"
        )
    try:
        return model.to(device).eval()
    except (RuntimeError, AssertionError) as exc:
        raise ValueError(f"cannot use device {device!r}: {exc}") from None


def class_name(model: nn.Module, index: int) -> str:
    """Human-readable name of class ``index`` (``class_names`` attribute if the model has one)."""
    names = getattr(model, "class_names", None)
    if names is not None and 0 <= index < len(names):
        return f"{names[index]} ({index})"
    return f"class {index}"


def model_input_size(model: nn.Module) -> tuple[int, int] | None:
    """``(H, W)`` the model was trained at (``model.input_spec.size``), or None."""
    spec = getattr(model, "input_spec", None)
    size = getattr(spec, "size", None)
    return (int(size[0]), int(size[1])) if size is not None else None


def fit_to_model(image: Tensor, size: tuple[int, int] | None, policy: str = "crop") -> Tensor:
    """Fit ``(C, H, W)`` or ``(N, C, H, W)`` images in [0, 1] to ``size`` with ``policy`` (see module doc)."""
    from torchvision.transforms.v2 import functional as TF

    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize policy must be one of {', '.join(RESIZE_POLICIES)}, got {policy!r}")
    if size is None or policy == "none":
        return image
    if tuple(image.shape[-2:]) == (size[0] - 4, size[1] - 4):
        # 28x28 for a 32x32 model: the Fashion-MNIST/MNIST convention the shipped models were trained
        # with (alignnet.data.fashion_mnist_to_input) is zero padding by 2, not upscaling
        return torch.nn.functional.pad(image, (2, 2, 2, 2)).clamp(0, 1)
    if policy == "stretch":
        out = TF.resize(image, list(size), antialias=True)
    else:
        scale = max(size[0] / image.shape[-2], size[1] / image.shape[-1])
        new = [max(size[0], round(image.shape[-2] * scale)), max(size[1], round(image.shape[-1] * scale))]
        out = TF.center_crop(TF.resize(image, new, antialias=True), list(size))
    return out.clamp(0, 1)


def load_images(paths: Sequence[str | os.PathLike], model: nn.Module, policy: str = "crop") -> list[Tensor]:
    """Read image files as the model's input: a list of ``(3, H, W)`` tensors in [0, 1].

    Raises ``FileNotFoundError`` / ``ValueError`` naming the first missing or unreadable file;
    every unreadable path is listed in the message.
    """
    from ..data import load_image

    if not paths:
        raise ValueError("no image given")
    size = model_input_size(model)
    out, problems = [], []
    for p in paths:
        try:
            out.append(fit_to_model(load_image(p), size, policy))
        except (FileNotFoundError, ValueError) as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError(f"{len(problems)} of {len(paths)} images could not be read: " + "; ".join(problems))
    return out


def check_new_files(paths: Iterable[Path], force: bool) -> None:
    """Raise ``FileExistsError`` naming the files that exist, unless ``force``."""
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not force:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise FileExistsError(f"would overwrite {shown}; pass --force to overwrite or choose another --out")
