"""Fine-tuning a pretrained model on a folder of images with new classes (docs/training.md).

The backbone comes from ``init_from`` (a pretrained-weights name of :func:`alignnet.load_pretrained` or a
``.safetensors`` file of :func:`alignnet.save_model`), the head is new: the tensors whose shape depends on the
number of classes (found by building the architecture for K and K+1 classes on the meta device) and the fixed
logit bias, set to ``log((1/K) / (1 - 1/K))``, the 1-in-K prior under binary cross-entropy. Nothing here
imports Lightning until :func:`finetune` trains.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from .config import ModelConfig

__all__ = [
    "Source",
    "auto_epochs",
    "finetune",
    "finetune_settings",
    "freeze_backbone",
    "head_tensor_names",
    "init_backbone",
    "load_source",
    "prior_logit_bias",
    "resolve_model_config",
]

_TORCHVISION = "torchvision:"


def is_file_spec(spec: str) -> bool:
    """``init_from`` names a file (rather than a weights name)."""
    return spec.endswith(".safetensors") or Path(spec).is_file()


@dataclass
class Source:
    """A model to start from: its architecture, weights and class names."""

    spec: str
    name: str
    args: dict[str, Any]
    state: dict[str, torch.Tensor]
    class_names: tuple[str, ...] | None


def load_source(spec: str) -> Source:
    """The model ``init_from`` names: a ``.safetensors`` file of ``alignnet.save_model`` or a pretrained name."""
    if is_file_spec(spec):
        from safetensors import safe_open

        if not Path(spec).is_file():
            raise FileNotFoundError(f"init_from: no file at {spec}")
        with safe_open(spec, framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        name = meta.get("alignnet.model") or meta.get("model_name")
        try:
            args = json.loads(meta.get("alignnet.args") or meta.get("model_args") or "null")
            classes = json.loads(meta["alignnet.class_names"]) if "alignnet.class_names" in meta else None
        except json.JSONDecodeError as exc:
            raise InputError(f"init_from: unreadable metadata in {spec}: {exc}") from None
        if not name or not isinstance(args, dict):
            raise InputError(f"init_from: {spec} has no model name and arguments (not written by alignnet.save_model)")
        return Source(spec, name, args, state, tuple(classes) if classes else None)
    from ..pretrained import load_pretrained

    with torch.random.fork_rng(devices=[]):  # the new head starts as in a from-scratch run with the same seed
        model = load_pretrained(spec)
    names = getattr(model, "class_names", None)
    return Source(spec, model.model_name, dict(model.model_args), model.state_dict(), tuple(names) if names else None)


def prior_logit_bias(num_classes: int) -> float:
    """``log(p / (1 - p))`` with ``p = 1/K``: the logit of one class in K under BCE (``-log(K - 1)``)."""
    return math.log((1 / num_classes) / (1 - 1 / num_classes))


def _build(name: str, args: dict, num_classes: int) -> nn.Module:
    from ..models import create_model

    with torch.random.fork_rng(devices=[]):  # leaves the random state to the model that trains
        try:
            with torch.device("meta"):  # shapes only: no weights are computed
                return create_model(name, num_classes=num_classes, **args)
        except Exception:  # a constructor that needs real tensors
            return create_model(name, num_classes=num_classes, **args)


def head_tensor_names(name: str, args: dict, num_classes: int) -> frozenset[str]:
    """State-dict keys of the head: tensors whose shape depends on the number of classes, and the bias of
    each :class:`~alignnet.layers.LogitLayer` (its value does)."""
    from ..layers import LogitLayer

    a, b = _build(name, args, num_classes), _build(name, args, num_classes + 1)
    sa, sb = a.state_dict(), b.state_dict()
    head = {k for k, v in sa.items() if k not in sb or sb[k].shape != v.shape}
    for path, module in a.named_modules():
        if isinstance(module, LogitLayer):
            head.add(f"{path}.bias" if path else "bias")
    if not any(k in dict(a.named_parameters()) for k in head):
        raise InputError(f"cannot tell the head of {name}: no parameter's shape depends on num_classes")
    return frozenset(head)


def resolve_model_config(
    config: ModelConfig, init_from: str | None, n_classes: int, class_names: Sequence[str] | None
) -> tuple[ModelConfig, Source | None]:
    """The concrete model config of a fresh run (name, arguments, ``num_classes``, ``new_head`` decided) and
    the source model to initialise from (``None`` unless a new head is needed: then the weights come from
    :func:`init_backbone`, otherwise from ``build_model``'s ``init_from`` as before)."""
    num_classes = config.num_classes if config.num_classes is not None else n_classes
    fine_tunable = init_from is not None and config.bcosify is None
    if fine_tunable and config.name is not None and config.name.startswith(_TORCHVISION):
        if config.new_head or config.freeze_backbone:
            raise InputError("model.new_head and model.freeze_backbone need an alignnet model, not a torchvision: one")
        fine_tunable = False
    if not fine_tunable:
        if config.name is None:
            raise InputError("model.name: null needs init_from (the model to fine-tune)")
        return dataclasses.replace(config, num_classes=num_classes, new_head=bool(config.new_head)), None
    source = load_source(init_from)
    if config.name is None:
        if source.name == "bcosified":
            raise InputError(
                f"init_from: {init_from} is a B-cosified model; fine-tuning one with new classes is not supported yet"
            )
        name = source.name
        args = {k: v for k, v in source.args.items() if k != "num_classes"} | dict(config.args)
    else:
        name, args = config.name, dict(config.args)
    new_head = config.new_head
    head = head_tensor_names(name, args, num_classes)
    if new_head is None:
        shapes = _build(name, args, num_classes).state_dict()
        differs = any(k in source.state and source.state[k].shape != shapes[k].shape for k in head)
        renamed = source.class_names is not None and class_names is not None
        new_head = differs or (renamed and tuple(source.class_names) != tuple(class_names))
    if new_head and "logit_bias" not in args:
        from ..models import model_entrypoint

        default = inspect.signature(model_entrypoint(name)).parameters.get("logit_bias")
        if default is not None and isinstance(default.default, float):  # a fixed 1-in-10 prior: make it 1-in-K
            args["logit_bias"] = prior_logit_bias(num_classes)
    resolved = dataclasses.replace(config, name=name, args=args, num_classes=num_classes, new_head=bool(new_head))
    return resolved, (source if new_head else None)


def init_backbone(model: nn.Module, source: Source, head: frozenset[str]) -> nn.Module:
    """Copy every tensor but the head's from ``source`` into ``model`` (names and shapes checked)."""
    from ..models.io import load_weights

    state = model.state_dict()
    merged = {k: v for k, v in source.state.items() if k not in head}
    merged.update({k: state[k] for k in head if k in state})
    return load_weights(model, merged, source=f"init_from {source.spec}")


def freeze_backbone(model: nn.Module, head: frozenset[str]) -> list[str]:
    """Only the head's parameters keep ``requires_grad``; returns their names."""
    trainable = []
    for name, p in model.named_parameters():
        p.requires_grad_(name in head)
        if name in head:
            trainable.append(name)
    if not trainable:
        raise InputError("model.freeze_backbone: the head has no parameters to train")
    return trainable


def auto_epochs(n_train: int) -> int:
    """Epochs when ``trainer.epochs`` is null: about 20,000 images seen, at least 10 and at most 100 epochs."""
    return int(min(100, max(10, math.ceil(20_000 / max(n_train, 1)))))


def finetune_settings(data: dict[str, Any], init_from: str | None, data_dir: str | os.PathLike | None) -> dict:
    """``data`` (a raw config dict) with ``init_from`` and the image folder ``data_dir`` set: a folder with
    ``train/`` and ``val/`` is used as split, any other one is split by ``data.val_fraction``. A ``.csv`` file
    (multi-label, :mod:`alignnet.data.multilabel`) is split by its ``split`` column or ``data.val_fraction``."""
    import copy

    data = copy.deepcopy(data)
    if init_from is not None:
        data["init_from"] = str(init_from)
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        section = data.setdefault("data", {})
        is_csv = root.suffix.lower() == ".csv"
        section.update(dataset="csv" if is_csv else "image_folder", root=str(root))
        if is_csv:
            if section.get("val_fraction") is None:
                section["val_fraction"] = 0.1
        elif (root / "train").is_dir() and (root / "val").is_dir():
            section["val_fraction"] = None
        elif section.get("val_fraction") is None:
            section["val_fraction"] = 0.1
        data.setdefault("model", {})["num_classes"] = None  # the folder's
    return data


def finetune(
    source: str | os.PathLike,
    data_dir: str | os.PathLike,
    output: str | os.PathLike,
    *,
    freeze_backbone: bool = False,
    epochs: int | None = None,
    lr: float | None = None,
    head_lr: float | None = None,
    overrides: Sequence[str] = (),
    overwrite: bool = False,
):
    """Fine-tune ``source`` (a pretrained-weights name or a ``.safetensors`` file) on the image folder
    ``data_dir`` (``<class>/<image>``, or ``train/`` and ``val/`` of those) or a multi-label ``.csv`` file (image
    paths and ``;``-separated labels, docs/own-data.md) with the ``finetune`` preset; the run goes to ``output``
    (``output/model.safetensors``: the best validation epoch's weights, with the class names).

    ``freeze_backbone``: a linear probe (only the new head trains). ``epochs``: None chooses them from the
    data size. ``lr`` (everything), ``head_lr`` (the head): None keeps the preset's. ``overrides``:
    ``"section.key=value"`` strings as for ``alignnet train --set``. Returns the :class:`TrainResult`.
    Needs the ``train`` extra (Lightning).
    """
    from .config import apply_overrides, config_from_dict, load_preset
    from .runner import train

    data = finetune_settings(load_preset("finetune"), str(source), data_dir)
    data["model"]["freeze_backbone"] = bool(freeze_backbone)
    data.setdefault("trainer", {})["epochs"] = epochs
    if lr is not None:
        data.setdefault("optimizer", {})["lr"] = lr
    if head_lr is not None:
        data.setdefault("optimizer", {})["head_lr"] = head_lr
    config = config_from_dict(apply_overrides(data, list(overrides)))
    return train(config, output, overwrite=overwrite)
