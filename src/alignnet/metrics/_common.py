"""Helpers shared by the metrics: datasets as tensors, model fingerprints, result files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..attribution import Attributor, get_attributor
from ..layers import eval_mode

__all__ = [
    "model_device",
    "as_tensors",
    "model_hash",
    "predict",
    "resolve_method",
    "save_result",
    "config_key",
    "work_dir",
]


def as_tensors(dataset: Dataset | tuple[Tensor, Tensor] | Sequence, limit: int | None = None) -> tuple[Tensor, Tensor]:
    """``(images (N, C, H, W) float, labels (N,) long)`` from a dataset of ``(image, label)`` items,
    an object with ``.tensors()``, or a pair of tensors; the first ``limit`` items only if given."""
    if isinstance(dataset, tuple) and len(dataset) == 2 and isinstance(dataset[0], Tensor):
        images, labels = dataset
    elif hasattr(dataset, "tensors") and callable(dataset.tensors) and getattr(dataset, "transform", None) is None:
        images, labels = dataset.tensors()
    else:
        n = len(dataset) if limit is None else min(limit, len(dataset))
        subset = torch.utils.data.Subset(dataset, range(n))
        batches = list(DataLoader(subset, batch_size=256, shuffle=False))
        if not batches:
            raise ValueError("the dataset is empty")
        images = torch.cat([b[0] for b in batches])
        labels = torch.cat([torch.as_tensor(b[1]) for b in batches])
    images, labels = torch.as_tensor(images), torch.as_tensor(labels).long()
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    if images.dim() != 4 or labels.shape != (images.shape[0],):
        raise ValueError(
            f"expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} / {tuple(labels.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError("the dataset is empty")
    return images.float(), labels


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without tensors)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def predict(
    model: nn.Module, images: Tensor, batch_size: int = 256, device: torch.device | str | None = None
) -> Tensor:
    """Logits ``(N, K)`` of the model in eval mode (its training flags are restored)."""
    device = torch.device(device) if device is not None else model_device(model)
    with eval_mode(model):
        out = [model(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def model_hash(model: nn.Module) -> str:
    """SHA-256 (16 hex digits) of the model's class name, state-dict names, shapes and values."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def config_key(config: dict) -> str:
    """Short stable hash of a JSON-serialisable config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolve_method(method: str | Attributor, model: nn.Module, method_config: dict | None) -> tuple[str, Attributor]:
    """``(name, attributor)`` from a registry name or a ready attributor."""
    if isinstance(method, Attributor):
        if method_config:
            raise ValueError("method_config is only used with a method name, not with an attributor instance")
        return method.name or type(method).__name__, method
    if not isinstance(method, str):
        raise TypeError(f"method must be a registry name or an Attributor, got {type(method).__name__}")
    return method, get_attributor(method, model, **(method_config or {}))


def save_result(
    out_dir: str | os.PathLike, stem: str, summary: dict, arrays: dict[str, np.ndarray]
) -> tuple[Path, Path]:
    """Write ``stem.json`` (summary + full config) and ``stem.npz`` (raw arrays) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, npz_path = out / f"{stem}.json", out / f"{stem}.npz"
    json_path.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    np.savez_compressed(npz_path, **{k: np.asarray(v) for k, v in arrays.items()})
    return json_path, npz_path


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


@contextlib.contextmanager
def work_dir(cache_dir: str | os.PathLike | None):
    """``cache_dir`` itself, or a temporary folder removed afterwards."""
    if cache_dir is not None:
        yield Path(cache_dir)
        return
    with tempfile.TemporaryDirectory(prefix="alignnet-") as tmp:
        yield Path(tmp)
