"""Training configuration: frozen dataclasses, YAML presets and ``a.b=value`` overrides.

Presets are YAML files in ``alignnet/configs/`` named after the paper experiments
(``bcos-cifar10-9l``, ``coda-cifar10-9l-sq``, ``imagenet-bcos-resnet50``) and our Fashion-MNIST
runs (``fmnist-bcos``, ``fmnist-coda``, ``fmnist-cnn``) and the B-cosification fine-tuning runs
(``bcosify-fmnist``, ``bcosify-imagenet-resnet50``) and ``finetune`` (a pretrained model on an image folder).
Every value can be overridden with ``--set section.key=value`` (the value is parsed as YAML: ``1e-3``, ``true``, ``[1, 2]``, ``null``).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError

__all__ = [
    "DataConfig",
    "ModelConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "TrainConfig",
    "TrainerConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "list_presets",
    "load_config",
    "load_preset",
    "save_config",
]


@dataclass(frozen=True)
class ModelConfig:
    # None: the architecture (name and arguments) of the model that init_from names (fine-tuning)
    name: str | None = "bcos_cifar10_9l"
    # keyword arguments of create_model (architecture overrides such as b, width, temperature)
    args: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = 10  # None: the number of classes of the data
    # B-cos v1 B ablation: take each layer's scale and the logit temperature for args["b"]
    # from the paper's table (docs/models.md#b-ablation) instead of the layer defaults
    paper_ablation: bool = False
    # B-cosification (docs/bcosification.md): keyword arguments of alignnet.bcosify (b, keep_activation,
    # b_warmup_epochs, mean, std, ...); the model named above (a baseline, a registry name or
    # "torchvision:<builder>") is built, initialised from TrainConfig.init_from, then B-cosified
    bcosify: dict[str, Any] | None = None
    # fine-tuning (docs/training.md#fine-tuning-on-your-own-images): initialise everything but the head from
    # init_from and re-initialise the head (the layers whose shape depends on num_classes, and the logit bias,
    # set to the 1-in-K prior under BCE); None: a new head when init_from's classes differ from the data's
    new_head: bool | None = None
    freeze_backbone: bool = False  # train the head only (a linear probe on the pretrained features)
    # multi-label data (data.dataset: csv): a label is predicted when sigmoid(logit) >= threshold; saved with the
    # model (alignnet explain explains every label above it)
    threshold: float = 0.5


@dataclass(frozen=True)
class DataConfig:
    # fashion_mnist | embedded (the subset shipped in the package) | cifar10 | image_folder | csv (multi-label:
    # a CSV of image paths and ';'-separated label names, docs/own-data.md)
    dataset: str = "fashion_mnist"
    root: str | None = None  # None: Debian's Fashion-MNIST directory; the folder / CSV file for the others
    classes: str | None = None  # csv: the class order, "a;b;c" (None: the sorted label names of the file)
    image_size: int = 32
    val_fraction: float | None = None  # image_folder: None = train/ and val/ sub-folders; csv: without a split column
    split_seed: int = 0
    batch_size: int = 64  # per device; the effective batch is batch_size * devices * accumulate
    num_workers: int = 0
    augment: bool = True  # random crop (pad 4) + flip at 32 px; random resized crop + flip at 224
    hflip: bool = True  # the augmentation's random horizontal flip; false for digits, text, other asymmetric data
    strict: bool = False  # image_folder: fail on the first unreadable image instead of skipping it
    train_subset: int | None = None  # train on a seeded class-balanced subset of this many images


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"  # adam | adamw
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    head_lr: float | None = None  # the head's learning rate (fine-tuning); None: lr, as for the rest


@dataclass(frozen=True)
class SchedulerConfig:
    # cosine: min_lr + (lr - min_lr) * (1 + cos(pi * t)) / 2 over the run, per step
    # v1_cosine: lr * cos(pi * epoch / (2 * epochs)) + min_lr, per epoch (B-cos v1 CIFAR-10)
    # step: lr * gamma ** (epoch // step_epochs); constant: lr
    name: str = "cosine"
    warmup_epochs: float = 0.0  # linear warm-up from lr / 100, then the schedule
    min_lr: float = 0.0
    step_epochs: int = 30
    gamma: float = 0.1


@dataclass(frozen=True)
class TrainerConfig:
    epochs: int | None = 100  # None: from the training set's size (fine-tuning; runner.auto_epochs)
    # stop when val_acc has not improved for this many epochs (Lightning's EarlyStopping); None: never
    early_stopping_patience: int | None = None
    accumulate_grad_batches: int = 1  # "virtual batch": one optimiser step every N batches
    precision: str = "32-true"  # 16-mixed / bf16-mixed for AMP
    ema_decay: float | None = None  # exponential moving average of the weights, e.g. 0.999
    seed: int = 0
    accelerator: str = "auto"  # cpu | gpu | auto
    devices: int | str = 1
    strategy: str = "auto"  # ddp for several devices
    num_nodes: int = 1
    gradient_clip_val: float | None = None
    limit_train_batches: float | int = 1.0  # fraction or number of batches per epoch (quick runs)
    limit_val_batches: float | int = 1.0
    progress_bar: bool = True
    num_threads: int | None = None  # torch CPU threads (None: torch's default); 1 is fastest on a busy CPU
    # adaptive gradient clipping (NFNets; B-cos v2 and B-cosification, docs/models.md#adaptive-gradient-clipping): a gradient
    # row whose norm exceeds agc_clip_factor * max(weight row norm, agc_eps) is scaled down to it; null: off
    agc_clip_factor: float | None = None
    agc_eps: float = 1e-3


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    # initial weights of a fresh run (ignored when resuming): a .safetensors file (of the model named in
    # model.name, or of the B-cosified model), a torchvision weights name of a "torchvision:<builder>" model
    # (IMAGENET1K_V2, DEFAULT), or a pretrained-weights name (alignnet.load_pretrained)
    init_from: str | None = None


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain nested dict (tuples as lists), ready for YAML."""

    def plain(v):
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(config))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotated type (YAML gives '1e-3' as a string)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        real = [o for o in options if o is not type(None)]
        if len(real) == 1:  # "X | None": X's own message ("expected an integer")
            return _coerce(value, real[0], where)
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise InputError(f"{where}: {value!r} is not a valid {hint}")
    if hint is Any:
        return value
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise InputError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"{where}: expected a mapping, got {value!r}")
        return {str(k): _parse_scalar(v) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise InputError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise InputError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if hint is float:
        if isinstance(value, bool):
            raise InputError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise InputError(f"{where}: expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise InputError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: unsupported type {hint}")


def _parse_scalar(v: Any) -> Any:
    """YAML leaves ``1e-3`` a string (YAML 1.1); numbers written that way become floats."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise InputError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(names)}"
            raise InputError(f"unknown config key {where + '.' if where else ''}{key}{hint}")
        sub = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(hints[key]):
            kwargs[key] = _build(hints[key], value if value is not None else {}, sub)
        else:
            kwargs[key] = _coerce(value, hints[key], sub)
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Validate a nested dict (unknown keys and wrong types raise ``ValueError``) into a config."""
    config = _build(TrainConfig, data or {}, "")
    _validate(config)
    return config


def _validate(c: TrainConfig) -> None:
    checks = [
        (
            c.data.dataset in ("fashion_mnist", "embedded", "cifar10", "image_folder", "csv"),
            "data.dataset must be fashion_mnist, embedded, cifar10, image_folder or csv",
        ),
        (0 < c.model.threshold < 1, "model.threshold must be in (0, 1)"),
        (c.optimizer.name in ("adam", "adamw"), "optimizer.name must be adam or adamw"),
        (
            c.scheduler.name in ("cosine", "v1_cosine", "step", "constant"),
            "scheduler.name must be cosine, v1_cosine, step or constant",
        ),
        (c.optimizer.lr > 0, "optimizer.lr must be > 0"),
        (c.trainer.epochs is None or c.trainer.epochs >= 1, "trainer.epochs must be >= 1 or null"),
        (c.optimizer.head_lr is None or c.optimizer.head_lr > 0, "optimizer.head_lr must be > 0 or null"),
        (c.model.num_classes is None or c.model.num_classes >= 2, "model.num_classes must be >= 2 or null"),
        (
            c.trainer.early_stopping_patience is None or c.trainer.early_stopping_patience >= 1,
            "trainer.early_stopping_patience must be >= 1 or null",
        ),
        (
            c.model.bcosify is None or not (c.model.freeze_backbone or c.model.new_head),
            "model.freeze_backbone and model.new_head are for fine-tuning, not with model.bcosify",
        ),
        (c.data.batch_size >= 1, "data.batch_size must be >= 1"),
        (c.trainer.accumulate_grad_batches >= 1, "trainer.accumulate_grad_batches must be >= 1"),
        (c.trainer.ema_decay is None or 0 < c.trainer.ema_decay < 1, "trainer.ema_decay must be in (0, 1) or null"),
        (c.scheduler.warmup_epochs >= 0, "scheduler.warmup_epochs must be >= 0"),
        (
            c.trainer.agc_clip_factor is None or c.trainer.agc_clip_factor > 0,
            "trainer.agc_clip_factor must be > 0 or null",
        ),
        (c.trainer.agc_eps > 0, "trainer.agc_eps must be > 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(message)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``["optimizer.lr=1e-3", "model.args.b=1.5"]`` to a nested dict (a new one is returned)."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise InputError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise InputError(f"override {item!r}: bad key {key!r}")
        value = yaml.safe_load(raw) if raw.strip() else None
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise InputError(f"override {item!r}: {p} is not a section")
        node[parts[-1]] = value
    return data


def _configs_dir():
    return resources.files("alignnet.configs")


def list_presets() -> list[str]:
    """Names of the YAML presets shipped in ``alignnet/configs``."""
    return sorted(p.name[:-5] for p in _configs_dir().iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The raw nested dict of a preset (validate with :func:`config_from_dict`)."""
    names = list_presets()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"unknown preset {name!r}{hint}; presets: {', '.join(names)}")
    return yaml.safe_load(_configs_dir().joinpath(name + ".yaml").read_text()) or {}


def load_config(path: str | Path) -> dict[str, Any]:
    """The raw nested dict of a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a mapping of sections (model, data, optimizer, scheduler, trainer)")
    return data


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (loads back with ``config_from_dict(load_config(path))``)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
