"""Helpers shared by the metrics: datasets as tensors, model fingerprints, result files."""

from __future__ import annotations

import contextlib
import dataclasses
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
from ..errors import InputError
from ..layers import eval_mode

__all__ = [
    "model_device",
    "as_tensors",
    "hash_tensor",
    "model_hash",
    "predict",
    "resolve_method",
    "save_result",
    "unique_stems",
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
            raise InputError("the dataset is empty")
        images = torch.cat([b[0] for b in batches])
        labels = torch.cat([torch.as_tensor(b[1]) for b in batches])
    images, labels = torch.as_tensor(images), torch.as_tensor(labels).long()
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    if images.dim() != 4 or labels.shape != (images.shape[0],):
        raise InputError(
            f"expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} / {tuple(labels.shape)}"
        )
    if images.shape[0] == 0:
        raise InputError("the dataset is empty")
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


#: what every ``nn.Module`` keeps in its ``__dict__`` (parameters, buffers, submodules, hooks, the train flag):
#: hashed through the tensors and the submodules, or (the train flag) irrelevant, since evaluation runs in eval mode
_MODULE_INTERNALS = frozenset(vars(nn.Module()))
_SKIP = object()


def _plain(value):
    """``value`` as JSON-able data when it is plain configuration (numbers, strings, flags, None, functions and
    classes by name, dataclasses, and lists/tuples/dicts of these); ``_SKIP`` for anything else."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return _SKIP if any(v is _SKIP for v in items) else [type(value).__name__, items]
    if isinstance(value, dict):
        items = {str(k): _plain(v) for k, v in value.items()}
        return _SKIP if any(v is _SKIP for v in items.values()) else items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    return _SKIP


def hash_tensor(h, tensor: Tensor) -> None:
    """Feed ``tensor``'s shape, dtype and bytes (on the CPU) into the hashlib object ``h``."""
    t = tensor.detach().cpu().contiguous()
    h.update(f"{tuple(t.shape)}{t.dtype}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def model_hash(model: nn.Module) -> str:
    """SHA-256 (16 hex digits) of everything that decides the model's function, the fingerprint that every
    cache key and result file of the metrics records.

    It covers every parameter and buffer (names, shapes, dtypes, values; non-persistent buffers too) and, for
    every module, its class and its plain Python attributes (:func:`_plain`; tensors kept as attributes by
    their bytes): constructor arguments that live outside the state dict, such as the B-cos exponent ``b``,
    a logit layer's ``temperature``, or ``model_name``/``model_args``. An instance attribute equal to its
    class's attribute of the same name (e.g. a flag restored to its default) changes nothing and is left out,
    and so is the train/eval flag (the metrics run in eval mode).
    """
    h = hashlib.sha256()
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for name, tensor in sorted(tensors.items()):
        h.update(name.encode())
        hash_tensor(h, tensor)
    for name, module in model.named_modules():
        attrs, extra = {}, {}
        for key, value in vars(module).items():
            if key in _MODULE_INTERNALS or _same_as_class(module, key, value):
                continue
            if isinstance(value, Tensor):
                extra[key] = value
            elif (plain := _plain(value)) is not _SKIP:
                attrs[key] = plain
        cls = type(module)
        h.update(json.dumps([name, f"{cls.__module__}.{cls.__qualname__}", attrs], sort_keys=True).encode())
        for key, value in sorted(extra.items()):
            h.update(f"{name}.{key}".encode())
            hash_tensor(h, value)
    return h.hexdigest()[:16]


def _same_as_class(module: nn.Module, key: str, value) -> bool:
    default = getattr(type(module), key, _SKIP)
    if default is _SKIP or isinstance(value, Tensor) or isinstance(default, Tensor):
        return False
    try:
        return bool(type(default) is type(value) and default == value)
    except Exception:  # noqa: BLE001 - an attribute whose comparison fails is hashed
        return False


def config_key(config: dict) -> str:
    """Short stable hash of a JSON-serialisable config."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolve_method(method: str | Attributor, model: nn.Module, method_config: dict | None) -> tuple[str, Attributor]:
    """``(name, attributor)`` from a registry name or a ready attributor."""
    if isinstance(method, Attributor):
        if method_config:
            raise InputError("method_config is only used with a method name, not with an attributor instance")
        return method.name or type(method).__name__, method
    if not isinstance(method, str):
        raise TypeError(f"method must be a registry name or an Attributor, got {type(method).__name__}")
    return method, get_attributor(method, model, **(method_config or {}))


def unique_stems(paths: Sequence[str | os.PathLike]) -> list[str]:
    """One distinct file-name label per path (input images, model files or names): its stem, with as many
    parent folders in front as it takes to tell paths with the same stem apart (``a/x.png``, ``b/x.png``,
    ``x_2.png`` -> ``a_x``, ``b_x``, ``x_2``). A path that still cannot be told apart (the same path twice)
    gets the first free ``<label>_<k>``, k = 2, 3, ...; no label is ever another path's label.
    """
    parts = []
    for p in paths:
        path = Path(p)
        folders = [f for f in path.parts[:-1] if f not in (path.anchor, ".", "..")]
        parts.append([*folders, path.stem or "image"])
    depth = [1] * len(parts)
    while True:
        labels = ["_".join(p[-d:]) for p, d in zip(parts, depth, strict=True)]
        clashing = [i for i, label in enumerate(labels) if labels.count(label) > 1]
        grown = [i for i in clashing if depth[i] < len(parts[i])]
        if not grown:
            break
        for i in grown:
            depth[i] += 1
    taken, kept = set(labels), set()
    for i in sorted(range(len(labels)), key=lambda i: (depth[i], i)):  # a path's own stem is kept first
        label = labels[i]
        if label in kept:
            k = 2
            while f"{label}_{k}" in taken:
                k += 1
            labels[i] = f"{label}_{k}"
            taken.add(labels[i])
        kept.add(labels[i])
    return labels


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
