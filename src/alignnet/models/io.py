"""Save and load models as safetensors files with their name and constructor arguments.

The weights are plain tensors (no pickle): a file can never run code when loaded. The header
metadata holds ``alignnet.model`` (registry name, ``torchvision:<builder>`` or ``bcosified``),
``alignnet.args`` (JSON constructor arguments) and ``alignnet.version``, so :func:`load_model` rebuilds
the model with no other input.

A model's function also depends on Python attributes that are not tensors (a B-cos layer's ``b`` changed
after construction, e.g. during the b warm-up of a B-cosified network; a norm's ``eps``; a temperature).
:func:`save_model` rebuilds the architecture from the name and arguments (on the meta device: no weights
are computed) and compares every module's class, tensor shapes and attributes with the model's
(:func:`module_configuration`). Attributes that differ and are plain JSON values are recorded in
``alignnet.attributes`` and set again by :func:`load_model`; any other difference (a module replaced,
added or removed, an attribute that is an object) cannot be rebuilt, so saving is refused, naming it.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ..errors import InputError

__all__ = [
    "configuration_differences",
    "load_model",
    "load_weights",
    "module_configuration",
    "multilabel_threshold",
    "save_model",
]

_NAME, _ARGS, _VERSION = "alignnet.model", "alignnet.args", "alignnet.version"
_CLASSES, _SPEC, _ATTRS = "alignnet.class_names", "alignnet.input_spec", "alignnet.attributes"
_MULTILABEL = "alignnet.multilabel_threshold"  # a multi-label model: labels with sigmoid(logit) >= this
# attributes alignnet attaches to a whole model: recorded on their own (name, arguments, class names,
# input spec) or describing where it came from; none of them changes what the model computes
_DESCRIPTIVE = frozenset({"model_name", "model_args", "class_names", "input_spec", "paper", "source", "weights_name",
                          "untrained", "multilabel_threshold"})  # fmt: skip


def _normalise(value: Any) -> Any:
    """A comparable stand-in for an attribute value: plain values as they are, sequences as tuples,
    callables by qualified name (``functools.partial`` with its arguments), tensors by shape and dtype."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple | list):  # torch.Size too
        return tuple(_normalise(v) for v in value)
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _normalise(v)) for k, v in value.items())))
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), str(value.dtype))
    if isinstance(value, torch.dtype | torch.device | enum.Enum):
        return ("value", str(value))
    if isinstance(value, functools.partial):
        return ("partial", _normalise(value.func), _normalise(value.args), _normalise(value.keywords))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return ("dataclass", type(value).__qualname__, _normalise(dataclasses.asdict(value)))
    if callable(value):  # functions, classes, methods
        return ("callable", getattr(value, "__module__", None), getattr(value, "__qualname__", repr(value)))
    return ("object", type(value).__module__, type(value).__qualname__)


def module_configuration(model: nn.Module) -> dict[str, tuple[str, dict[str, tuple], dict[str, Any]]]:
    """``{module path: (class, {tensor name: shape}, {attribute: normalised value})}`` for every module.

    The attributes are the module's public Python attributes, its own and its class's plain defaults
    (hyper-parameters such as ``num_heads``, ``eps``, ``p`` and run-time settings such as a B-cos layer's
    ``b``), without ``training``, the model's recorded ``model_args`` and, on the root, alignnet's
    descriptive annotations. Two models with the same configuration and weights compute the same function,
    unless a forward reads state kept elsewhere."""
    recorded = getattr(model, "model_args", None)
    config = {}
    for path, m in model.named_modules():
        tensors = {n: tuple(t.shape) for n, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]}
        defaults = {}
        for cls in reversed(type(m).__mro__[: type(m).__mro__.index(nn.Module)]):
            defaults.update((k, v) for k, v in vars(cls).items() if _plain(v))
        attrs = {}
        for k, v in {**defaults, **vars(m)}.items():
            if k.startswith("_") or k == "training" or (path == "" and k in _DESCRIPTIVE):
                continue
            if recorded is not None and v is recorded:  # e.g. a B-cosified network's recipe: it *is* model_args
                continue
            attrs[k] = _normalise(v)
        config[path] = (f"{type(m).__module__}.{type(m).__qualname__}", tensors, attrs)
    return config


class _Absent:
    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()


class Difference(NamedTuple):
    """One way two configurations differ at module ``path``: its ``attribute`` (values ``mine`` and
    ``theirs``, :data:`ABSENT` where one lacks it) or, with ``attribute=None``, the module itself (its
    class, a tensor's shape or its existence, described in ``mine``/``theirs``), which no attribute can fix."""

    path: str
    attribute: str | None
    mine: Any
    theirs: Any

    def __str__(self) -> str:
        where = f"{self.path or '<model>'}" + (f".{self.attribute}" if self.attribute else "")
        return f"{where}: {self.mine!r} here, {self.theirs!r} when rebuilt"


def _same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def configuration_differences(mine: dict, theirs: dict) -> list[Difference]:
    """Every difference between two :func:`module_configuration` results, module by module."""
    out = []
    for path in [*mine, *(p for p in theirs if p not in mine)]:
        if path not in mine or path not in theirs:
            out.append(Difference(path, None, mine.get(path, ("no module",))[0], theirs.get(path, ("no module",))[0]))
            continue
        (cls_a, tensors_a, attrs_a), (cls_b, tensors_b, attrs_b) = mine[path], theirs[path]
        if cls_a != cls_b:
            out.append(Difference(path, None, cls_a, cls_b))
            continue
        for name in [*tensors_a, *(n for n in tensors_b if n not in tensors_a)]:
            if tensors_a.get(name) != tensors_b.get(name):
                out.append(Difference(f"{path}.{name}" if path else name, None,
                                      tensors_a.get(name, "no tensor"), tensors_b.get(name, "no tensor")))  # fmt: skip
        for k in [*attrs_a, *(k for k in attrs_b if k not in attrs_a)]:
            a, b = attrs_a.get(k, ABSENT), attrs_b.get(k, ABSENT)
            if not _same(a, b):
                out.append(Difference(path, k, a, b))
    return out


def _plain(value: Any) -> bool:
    """A value JSON keeps exactly (numbers, strings, booleans, None and lists/tuples of them)."""
    if value is None or isinstance(value, bool | int | float | str):
        return True
    return isinstance(value, tuple | list) and all(_plain(v) for v in value)


def _build(name: str, args: dict) -> nn.Module:
    """The architecture ``name`` with ``args`` and random weights, as :func:`load_model` builds it."""
    from ..bcosification import BCOSIFIED_NAME, build_source, from_recipe

    args = json.loads(json.dumps(args))  # as a file holds them (a copy; tuples become lists)
    if name == BCOSIFIED_NAME:  # alignnet.bcosify's output: rebuilt from its recorded recipe
        return from_recipe(args)
    return build_source({"name": name, "args": args})  # a registry name or torchvision:<builder>


def _recorded_attributes(model: nn.Module, name: str, args: dict) -> dict[str, dict[str, Any]]:
    """The attributes :func:`load_model` must set on the rebuilt architecture; ``ValueError`` naming what
    it could not rebuild at all."""
    try:
        with torch.device("meta"):  # the architecture only: no weights are initialised
            reference = _build(name, args)
    except Exception:  # some constructor that needs real tensors: build it for real (the error, if any, is real)
        reference = _build(name, args)
    recorded: dict[str, dict[str, Any]] = {}
    problems = []
    for d in configuration_differences(module_configuration(model), module_configuration(reference)):
        value = getattr(model.get_submodule(d.path), d.attribute, ABSENT) if d.attribute else ABSENT
        if value is ABSENT or not _plain(value):
            problems.append(str(d))
        else:
            recorded.setdefault(d.path, {})[d.attribute] = value
    if problems:
        raise InputError(
            f"save_model cannot record this model: rebuilt from its name {name!r} and arguments it would differ "
            f"at {'; '.join(problems[:4])}{' ...' if len(problems) > 4 else ''}. A module replaced, added or removed "
            "after construction, or an attribute that is not a plain value, cannot be rebuilt: build the model "
            "with those settings as arguments, or save the state dict with safetensors.torch.save_file"
        )
    return recorded


def save_model(model: nn.Module, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Write ``model``'s state dict and its ``model_name``/``model_args`` to a safetensors file.

    The model must come from :func:`alignnet.create_model` (or :func:`load_model`, or be a
    :func:`alignnet.bcosify` result), which sets those attributes. Attributes changed since construction
    (e.g. B-cos ``b``) are recorded too; a model that its name and arguments cannot rebuild raises
    ``ValueError`` (module docstring). Returns the path written.
    """
    from safetensors.torch import save_file

    from .._version import __version__
    from .frozen import is_frozen

    if is_frozen(model):
        raise InputError(
            "this model is a snapshot made by alignnet.freeze (normalised rows, folded batch norms) that "
            "load_model could not rebuild: save the original model, and freeze it again after loading"
        )
    name, args = getattr(model, "model_name", None), getattr(model, "model_args", None)
    if not isinstance(name, str) or not isinstance(args, dict):
        raise InputError(
            "save_model needs a model built by alignnet.create_model (it has no model_name/model_args); "
            "for other modules use safetensors.torch.save_file(model.state_dict(), path)"
        )
    if name == "bcosified" and not isinstance(args.get("source"), dict):
        why = getattr(model, "source_problem", None) or "not a torchvision builder or an alignnet model"
        raise InputError(
            f"this B-cosified model does not know its source architecture ({why}), so load_model could not "
            "rebuild it. B-cosify a source that records how it was built: alignnet.create_model(name, ...), "
            "alignnet.bcosification.build_source({'name': 'torchvision:<builder>', 'args': {...}}), or a "
            "torchvision builder's own model with its default arguments; or save the state dict with "
            "safetensors.torch.save_file"
        )
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    attributes = _recorded_attributes(model, name, args)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {_NAME: name, _ARGS: json.dumps(args, sort_keys=True), _VERSION: __version__, "format": "pt"}
    if attributes:
        metadata[_ATTRS] = json.dumps(attributes, sort_keys=True)
    # what a user of the file needs besides the weights: class names and how to prepare images
    names = getattr(model, "class_names", None)
    if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
        metadata[_CLASSES] = json.dumps(list(names))
    spec = getattr(model, "input_spec", None)
    if hasattr(spec, "to_dict"):
        metadata[_SPEC] = json.dumps(spec.to_dict())
    threshold = multilabel_threshold(model)
    if threshold is not None:
        metadata[_MULTILABEL] = json.dumps(threshold)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=metadata)
    return path


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable safetensors file (corrupt or another format): {exc}") from None
    return metadata, tensors


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str = "the file") -> nn.Module:
    """Copy ``state`` into ``model`` after checking names and shapes.

    Raises ``ValueError`` naming the first missing, unexpected or mismatched tensor with its shape.
    """
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise InputError(f"{source} lacks tensor {key!r} of shape {tuple(value.shape)}: wrong architecture?")
        if state[key].shape != value.shape:
            raise InputError(
                f"tensor {key!r} has shape {tuple(state[key].shape)} in {source} but "
                f"{tuple(value.shape)} in the model: wrong architecture or arguments?"
            )
    extra = [k for k in state if k not in expected]
    if extra:
        raise InputError(
            f"{source} has tensor {extra[0]!r} of shape {tuple(state[extra[0]].shape)} that the model lacks "
            f"({len(extra)} unexpected in all): wrong architecture?"
        )
    model.load_state_dict(state, strict=True)
    return model


def load_model(path: str | os.PathLike) -> nn.Module:
    """Rebuild a model saved by :func:`save_model`: architecture from the metadata, then weights.

    Returns the model in eval mode. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` for a corrupt file, missing metadata, an unknown model name or weights that do
    not fit the architecture.
    """
    path = Path(path)
    metadata, state = _read(path)
    if _NAME not in metadata or _ARGS not in metadata:
        raise InputError(
            f"{path} is a safetensors file without alignnet metadata ({_NAME!r}, {_ARGS!r}); "
            "build the model with create_model and load the tensors with alignnet.models.io.load_weights"
        )
    try:
        args = json.loads(metadata[_ARGS])
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: the metadata {_ARGS!r} is not valid JSON: {exc}") from None
    if not isinstance(args, dict):
        raise InputError(f"{path}: the metadata {_ARGS!r} must be a JSON object, got {type(args).__name__}")
    model = _build(metadata[_NAME], args)
    _set_attributes(model, metadata, path)
    floating = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(floating) == 1:  # a model saved in float64 (or half) comes back in it, not cast to float32
        model.to(floating.pop())
    load_weights(model, state, source=str(path))
    _restore_extras(model, metadata, path)
    return model.eval()


def _set_attributes(model: nn.Module, metadata: dict[str, str], path: Path) -> None:
    """The attributes :func:`save_model` recorded (plain values only, on existing modules)."""
    if _ATTRS not in metadata:
        return
    try:
        recorded = json.loads(metadata[_ATTRS])
        for module_path, attrs in recorded.items():
            module = model.get_submodule(module_path)
            for k, v in attrs.items():
                current = vars(module).get(k, getattr(type(module), k, None))
                if k.startswith("_") or not _plain(v) or not _plain(current):
                    raise InputError(f"{module_path}.{k} = {v!r} is not a plain attribute value")
                setattr(module, k, tuple(v) if isinstance(current, tuple) and isinstance(v, list) else v)
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: unusable attributes in the metadata {_ATTRS!r}: {exc}") from None


def multilabel_threshold(model: nn.Module) -> float | None:
    """The threshold of a multi-label model (trained on multi-hot targets: every label with ``sigmoid(logit) >=
    threshold`` is predicted), ``None`` for a single-label one. Saved and restored with the model."""
    value = getattr(model, "multilabel_threshold", None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < float(value) < 1:
        raise InputError(f"multilabel_threshold must be a number in (0, 1), got {value!r}")
    return float(value)


def _restore_extras(model: nn.Module, metadata: dict[str, str], path: Path) -> None:
    """``class_names``, ``input_spec`` and the multi-label threshold saved by :func:`save_model` (files of older
    versions lack them)."""
    from ._registry import InputSpec

    try:
        if _MULTILABEL in metadata:
            model.multilabel_threshold = json.loads(metadata[_MULTILABEL])
            multilabel_threshold(model)
        if _CLASSES in metadata:
            model.class_names = tuple(json.loads(metadata[_CLASSES]))
        if _SPEC in metadata:
            model.input_spec = InputSpec.from_dict(json.loads(metadata[_SPEC]))
    except (json.JSONDecodeError, TypeError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: unreadable class names or input spec in the metadata: {exc}") from None
