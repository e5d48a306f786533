"""Run a training job from a :class:`TrainConfig`: data, model, Lightning trainer, export.

Output directory layout::

    OUT/config.yaml                 the resolved config (re-run or resume with it)
    OUT/metrics.csv                 per-step and per-epoch loss, accuracy, lr (CSV logger)
    OUT/checkpoints/best.ckpt       best validation accuracy
    OUT/checkpoints/last.ckpt       end of the latest epoch
    OUT/checkpoints/interrupted.ckpt  written on SIGTERM/SIGINT or an error (resumable)
    OUT/model.safetensors           the best validation checkpoint's weights via alignnet.save_model (loadable by path)
    OUT/summary.json                accuracy, epochs, wall time
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import InputError
from ..metrics.sharding import check_slurm_launch
from .callbacks import EpochTimer, ResumeHint
from .config import DataConfig, TrainConfig, config_to_dict, save_config
from .finetune import auto_epochs, freeze_backbone, head_tensor_names, init_backbone, resolve_model_config
from .module import ClassifierModule, build_model

__all__ = [
    "TrainResult",
    "build_datasets",
    "check_output_dir",
    "check_slurm_launch",
    "export_model",
    "find_resume_checkpoint",
    "restore_best",
    "train",
]


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    output_dir: Path
    model: nn.Module
    metrics: dict[str, float]  # final epoch's val_loss/val_acc/train_loss/train_acc
    best_val_acc: float | None
    epochs_completed: int
    wall_time_s: float
    interrupted: bool
    monitor: str = "val_acc"  # what best_score measures: val_acc, or val_map for multi-label data
    best_score: float | None = None


def _is_rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def check_output_dir(output_dir: Path, resume: bool, overwrite: bool) -> None:
    """Fail at start-up, not after an hour: the directory must be writable and not hold another run."""
    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"\0" * 4096)
        probe.unlink()
    except OSError as exc:
        raise PermissionError(f"cannot write to the output directory {output_dir}: {exc.strerror or exc}") from None
    ckpts = sorted((output_dir / "checkpoints").glob("*.ckpt"))
    if ckpts and not resume and not overwrite and _is_rank_zero():
        raise FileExistsError(
            f"{output_dir} already holds a run ({ckpts[0].name}); resume it with --resume {output_dir}, "
            "choose another --output or pass --overwrite"
        )


def _check_disk_space(output_dir: Path, model: nn.Module, ema: bool) -> None:
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    # each checkpoint: weights + 2 Adam moments (+ EMA copy); best, last, interrupted + the export
    need = n_bytes * (3 + int(ema)) * 3 + n_bytes + 16 * 2**20
    free = shutil.disk_usage(output_dir).free
    if free < need:
        raise InputError(
            f"not enough free disk space in {output_dir}: {free / 2**20:.0f} MiB free, "
            f"the checkpoints need about {need / 2**20:.0f} MiB"
        )


def _balanced_subset(dataset: Dataset, n: int, seed: int) -> Dataset:
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = getattr(dataset, "targets", None)
    rng = np.random.default_rng(seed)
    if n >= len(dataset):
        return dataset
    if labels is None:
        return Subset(dataset, rng.choice(len(dataset), n, replace=False).tolist())
    labels = np.asarray(labels)
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    # round-robin over classes until n are picked (balanced up to one image per class)
    picked = [int(idx[i]) for i in range(max(len(p) for p in per_class)) for idx in per_class if i < len(idx)][:n]
    return Subset(dataset, sorted(picked))


def build_datasets(config: DataConfig) -> tuple[Dataset, Dataset, int]:
    """(train, val, number of classes) for the data config; the validation set is the test split
    for Fashion-MNIST and CIFAR-10 (as in the papers)."""
    from .. import data

    d = config.dataset
    if d == "fashion_mnist":
        train = data.fashion_mnist(config.root, "train", augment=config.augment, hflip=config.hflip)
        val = data.fashion_mnist(config.root, "test")
        n_classes = 10
    elif d == "embedded":
        train = data.load_embedded("train", augment=config.augment, hflip=config.hflip)
        val, n_classes = data.load_embedded("test"), 10
    elif d == "cifar10":
        if config.root is None:
            raise InputError("data.root must name the directory with cifar-10-batches-py (--set data.root=PATH)")
        train = data.cifar10(config.root, train=True, augment=config.augment, hflip=config.hflip)
        val = data.cifar10(config.root, train=False)
        n_classes = 10
    else:  # the user's own data: a label CSV (multi-label) or an image folder
        if config.root is None:
            what = "the label CSV (--data csv:FILE or " if d == "csv" else "the image folder ("
            raise InputError(f"data.root must name {what}--set data.root=PATH)")
        if d == "csv":
            from ..data.multilabel import csv_datasets

            train, val = csv_datasets(config.root, config.image_size, config.val_fraction, config.split_seed,
                                      config.strict, config.hflip, config.classes)  # fmt: skip
        else:
            train, val = data.image_folder(
                config.root, config.image_size, config.val_fraction, config.split_seed, config.strict, config.hflip
            )
        if not config.augment:  # evaluation transform (resize + centre crop) for training too
            base = train.dataset if isinstance(train, Subset) else train
            base.transform = data.eval_transform(config.image_size)
        n_classes = len(train.classes)
    if config.train_subset is not None:
        sub = _balanced_subset(train, config.train_subset, config.split_seed)
        sub.classes = getattr(train, "classes", None)  # type: ignore[attr-defined]
        sub.multilabel = getattr(train, "multilabel", False)  # type: ignore[attr-defined]
        train = sub
    return train, val, n_classes


def find_resume_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory (its newest of interrupted/last)."""
    path = Path(path)
    if path.is_file():
        return path
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    candidates = [p for p in (folder / "interrupted.ckpt", folder / "last.ckpt") if p.is_file()]
    if not candidates:
        raise FileNotFoundError(f"no checkpoint to resume from in {folder} (expected last.ckpt or interrupted.ckpt)")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def export_model(model: nn.Module, path: Path) -> Path:
    """Save with ``alignnet.save_model`` (named models) or as plain safetensors (anything else)."""
    if getattr(model, "model_name", None):
        from ..models import save_model

        save_model(model, path)
    else:
        from safetensors.torch import save_file

        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        meta = {
            "model_name": getattr(model, "model_name", ""),
            "model_args": json.dumps(getattr(model, "model_args", {})),
        }
        save_file(state, str(path), metadata=meta)
    return path


def restore_best(model: nn.Module, checkpoint_callback) -> int | None:
    """Load the best validation checkpoint's weights (the EMA weights when EMA is on) into ``model``; returns
    its epoch (1-based), or ``None`` when there is none (then the model keeps the last epoch's weights)."""
    path = getattr(checkpoint_callback, "best_model_path", "") or ""
    if not path or not Path(path).is_file():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    device = next(iter(model.state_dict().values()), torch.empty(0)).device
    model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
    return int(ckpt.get("epoch", -1)) + 1


def train(
    config: TrainConfig,
    output_dir: str | os.PathLike,
    resume: str | os.PathLike | None = None,
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train ``config`` and write the run to ``output_dir`` (layout in the module docstring).

    ``resume``: a checkpoint or run directory to continue; the run ends with the same weights as
    an uninterrupted one on CPU when resumed from an epoch-end checkpoint (``last.ckpt``).
    ``callbacks``: extra Lightning callbacks.
    """
    check_slurm_launch()
    output_dir = Path(output_dir)
    check_output_dir(output_dir, resume is not None, overwrite)
    ckpt_path = find_resume_checkpoint(resume) if resume is not None else None
    if ckpt_path is None and _is_rank_zero():
        # a fresh run: Lightning would otherwise resume from a stale last/interrupted checkpoint
        for stale in (output_dir / "checkpoints").glob("*.ckpt"):
            stale.unlink()
    threads = torch.get_num_threads()
    try:
        return _train(config, output_dir, ckpt_path, callbacks)
    finally:
        torch.set_num_threads(threads)


def _train(config: TrainConfig, output_dir: Path, ckpt_path: Path | None, callbacks: Sequence[Any]) -> TrainResult:
    import lightning as L
    from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint, OnExceptionCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from ..data import collate_skip_none

    tc = config.trainer
    if tc.num_threads is not None:
        torch.set_num_threads(tc.num_threads)
    L.seed_everything(tc.seed, workers=True, verbose=False)
    train_set, val_set, n_classes = build_datasets(config.data)
    if config.model.num_classes is not None and n_classes != config.model.num_classes:
        raise InputError(f"the data has {n_classes} classes but model.num_classes={config.model.num_classes}")
    class_names = getattr(train_set, "classes", None)
    # initial weights only for a fresh run: a resumed one gets everything from its checkpoint (and its
    # config.yaml holds the resolved architecture, class count, head decision and epochs)
    init_from = config.init_from if ckpt_path is None else None
    model_config, source = resolve_model_config(config.model, init_from, n_classes, class_names)
    model = build_model(model_config, init_from=None if source is not None else init_from)
    head: frozenset[str] = frozenset()
    if model_config.bcosify is None and not model_config.name.startswith("torchvision:"):
        if source is not None or model_config.freeze_backbone or config.optimizer.head_lr is not None:
            head = head_tensor_names(model_config.name, model_config.args, model_config.num_classes)
    if source is not None:
        init_backbone(model, source, head)
    if model_config.freeze_backbone:
        freeze_backbone(model, head)
    if class_names is not None and len(class_names) == n_classes:
        model.class_names = tuple(class_names)  # saved in model.safetensors (alignnet explain prints them)
    multilabel = bool(getattr(train_set, "multilabel", False))
    if multilabel:  # saved too: alignnet explain/evaluate/serve treat the model as multi-label
        model.multilabel_threshold = float(model_config.threshold)
    if config.data.dataset in ("image_folder", "csv"):  # how alignnet explain/evaluate must prepare an image
        from ..models import InputSpec

        size = config.data.image_size
        model.input_spec = InputSpec(size=(size, size), resize=round(size * 8 / 7) if size > 64 else None)
    epochs = tc.epochs if tc.epochs is not None else auto_epochs(len(train_set))
    config = dataclasses.replace(config, model=model_config, trainer=dataclasses.replace(tc, epochs=epochs))
    tc = config.trainer
    _check_disk_space(output_dir, model, tc.ema_decay is not None)
    if _is_rank_zero():
        save_config(config, output_dir / "config.yaml")

    dc = config.data
    loader_kw = {
        "batch_size": dc.batch_size,
        "num_workers": dc.num_workers,
        "collate_fn": collate_skip_none,
        "persistent_workers": dc.num_workers > 0,
    }
    train_loader = DataLoader(train_set, shuffle=True, **loader_kw)
    val_loader = DataLoader(val_set, shuffle=False, **loader_kw)

    agc = (tc.agc_clip_factor, tc.agc_eps) if tc.agc_clip_factor is not None else None
    module = ClassifierModule(model, config.optimizer, config.scheduler, tc.epochs, agc=agc, head=head,
                              multilabel=multilabel, threshold=model_config.threshold)  # fmt: skip
    monitor = "val_map" if multilabel else "val_acc"  # the best checkpoint's (and early stopping's) criterion
    ckpt_dir = output_dir / "checkpoints"
    cbs: list[Any] = [
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best",
            monitor=monitor,
            mode="max",
            save_top_k=1,
            auto_insert_metric_name=False,
        ),
        # the end of every epoch (Lightning 2.6's save_last=True writes last.ckpt only when best.ckpt improves)
        ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False),
        OnExceptionCheckpoint(ckpt_dir, filename="interrupted"),
        EpochTimer(),
        ResumeHint(output_dir),
    ]
    if tc.ema_decay is not None:
        cbs.append(EMAWeightAveraging(decay=tc.ema_decay))
    if tc.early_stopping_patience is not None:
        from lightning.pytorch.callbacks import EarlyStopping

        cbs.append(EarlyStopping(monitor=monitor, mode="max", patience=tc.early_stopping_patience))
    cbs.extend(callbacks)
    loggers: list[Any] = [CSVLogger(save_dir=str(output_dir), name="", version="")]
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(output_dir), name="tensorboard", version=""))

    n_batches = max(1, math.ceil(len(train_set) / dc.batch_size))
    trainer = L.Trainer(
        max_epochs=tc.epochs,
        accelerator=tc.accelerator,
        devices=tc.devices,
        strategy=tc.strategy,
        num_nodes=tc.num_nodes,
        precision=tc.precision,
        accumulate_grad_batches=tc.accumulate_grad_batches,
        gradient_clip_val=tc.gradient_clip_val,
        limit_train_batches=tc.limit_train_batches,
        limit_val_batches=tc.limit_val_batches,
        callbacks=cbs,
        logger=loggers,
        default_root_dir=str(output_dir),
        enable_progress_bar=tc.progress_bar,
        enable_model_summary=tc.progress_bar,
        log_every_n_steps=max(1, min(50, n_batches // 4)),
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    fit_kw = {"ckpt_path": str(ckpt_path), "weights_only": True} if ckpt_path is not None else {}
    with warnings.catch_warnings():
        # a fresh run has no checkpoint to resume (stale ones were removed) and its own log directory
        warnings.filterwarnings("ignore", message=r".*ckpt_path.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists", category=UserWarning)
        trainer.fit(module, train_loader, val_loader, **fit_kw)
    wall = time.perf_counter() - start
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
               if k.endswith(("_loss", "_acc", "_s", "_map", "_f1", "_exact"))}  # fmt: skip
    best = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    best_epoch = None
    if trainer.is_global_zero and not trainer.interrupted:
        best_epoch = restore_best(module.model, trainer.checkpoint_callback)
    result = TrainResult(
        output_dir=output_dir,
        model=module.model,
        metrics=metrics,
        best_val_acc=float(best) if best is not None and monitor == "val_acc" else None,
        monitor=monitor,
        best_score=float(best) if best is not None else None,
        epochs_completed=trainer.current_epoch,
        wall_time_s=wall,
        interrupted=trainer.interrupted,
    )
    if trainer.is_global_zero and not trainer.interrupted:
        export_model(module.model.cpu(), output_dir / "model.safetensors")
        summary = {
            "model": config.model.name,
            "init_from": config.init_from if ckpt_path is None else None,
            "trainable_parameters": sum(p.numel() for p in module.model.parameters() if p.requires_grad),
            "model_args": dict(config.model.args),
            "parameters": sum(p.numel() for p in module.model.parameters()),
            "train_images": len(train_set),
            "val_images": len(val_set),
            "epochs": trainer.current_epoch,
            "exported_epoch": best_epoch,  # model.safetensors holds this epoch's weights (1-based; the best val)
            "final": metrics,
            "best_val_acc": result.best_val_acc,
            "monitor": monitor,  # the criterion of the best checkpoint: val_acc, or val_map (multi-label)
            "best_val_score": result.best_score,
            "multilabel": multilabel,
            "wall_time_s": round(wall, 1),
            "resumed_from": str(ckpt_path) if ckpt_path else None,
            "config": config_to_dict(config),
        }
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return result
