"""Lightning module around any registered model: BCE on one-hot targets, Adam(W), schedules.

The papers train with binary cross-entropy on the logits against one-hot targets
(docs/algorithms.md#training-loss), not softmax cross-entropy.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._optional import require
from ..errors import InputError
from .config import ModelConfig, OptimizerConfig, SchedulerConfig

L = require("lightning", "training (alignnet train)")

__all__ = ["ClassifierModule", "LRSchedule", "bce_one_hot", "build_model", "load_initial_weights"]

_TORCHVISION = "torchvision:"


def build_model(config: ModelConfig, init_from: str | None = None) -> nn.Module:
    """A registered model (``plain_cnn_9l`` and the other standard baselines among them) or
    ``torchvision:<builder>`` from its config; B-cosified when ``config.bcosify`` is set.

    ``init_from`` (see :func:`load_initial_weights`) initialises the source model before the
    B-cosification, or the B-cosified model when it names a saved B-cosified model.
    """
    args = dict(config.args)
    if config.paper_ablation:
        from ..models.cifar import ablation_overrides

        args = {**args, **ablation_overrides(args.get("b", 2.0))}
    num_classes = config.num_classes
    if config.name.startswith(_TORCHVISION):
        import torchvision

        arch = config.name[len(_TORCHVISION) :]
        if init_from is not None and not _is_file(init_from) and config.bcosify is not None:
            weights = _torchvision_weights(arch, init_from)
            num_classes = len(weights.meta["categories"])  # bcosify replaces the head if it differs
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **args)
        model.model_name, model.model_args = config.name, {"num_classes": num_classes, **args}
    else:
        from ..models import create_model

        model = create_model(config.name, num_classes=num_classes, **args)
    if config.bcosify is None:
        return load_initial_weights(model, init_from) if init_from is not None else model
    from ..bcosification import BCOSIFIED_NAME, bcosify

    if init_from is not None and _saved_model_name(init_from) != BCOSIFIED_NAME:
        load_initial_weights(model, init_from)
        init_from = None
    net = bcosify(model, config.num_classes, **config.bcosify)
    return load_initial_weights(net, init_from) if init_from is not None else net


def _is_file(spec: str) -> bool:
    from .finetune import is_file_spec

    return is_file_spec(spec)


def _saved_model_name(spec: str) -> str | None:
    if not _is_file(spec):
        return None
    from safetensors import safe_open

    with safe_open(spec, framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
    return meta.get("alignnet.model") or meta.get("model_name")


def _torchvision_weights(arch: str, spec: str):
    import torchvision

    weights_enum = torchvision.models.get_model_weights(arch)
    try:
        return weights_enum[spec.split(".")[-1]]
    except KeyError:
        names = ", ".join(w.name for w in weights_enum)
        raise InputError(f"init_from: {spec!r} is not a weights name of {arch}: {names}") from None


def load_initial_weights(model: nn.Module, spec: str) -> nn.Module:
    """Copy initial weights into ``model`` (names and shapes checked) and return it.

    ``spec``: a ``.safetensors`` file (``alignnet.save_model`` or a baseline export), a torchvision weights
    name (``IMAGENET1K_V2``, ``DEFAULT``) for a ``torchvision:<builder>`` model, or a pretrained-weights
    name of :func:`alignnet.load_pretrained`.
    """
    from ..models.io import load_weights

    if _is_file(spec):
        from safetensors.torch import load_file

        if not Path(spec).is_file():
            raise FileNotFoundError(f"init_from: no file at {spec}")
        return load_weights(model, load_file(spec), source=spec)
    name = getattr(model, "model_name", "")
    if isinstance(name, str) and name.startswith(_TORCHVISION):
        weights = _torchvision_weights(name[len(_TORCHVISION) :], spec)
        return load_weights(model, weights.get_state_dict(progress=False), source=f"torchvision weights {spec}")
    try:
        from .. import load_pretrained
    except ImportError:
        raise InputError(f"init_from: {spec!r} is neither a file nor a torchvision weights name") from None
    return load_weights(model, load_pretrained(spec).state_dict(), source=f"pretrained weights {spec}")


def bce_one_hot(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean binary cross-entropy of ``(N, K)`` logits against one-hot ``(N,)`` labels, or against multi-hot
    ``(N, K)`` targets (multi-label data: the same loss, several ones per row)."""
    if labels.dim() == 2:
        target = labels.to(torch.float32)
    else:
        target = F.one_hot(labels, logits.shape[1]).to(torch.float32)
    return F.binary_cross_entropy_with_logits(logits.float(), target)


class LRSchedule:
    """Learning-rate multiplier per optimiser step (a picklable callable for ``LambdaLR``).

    Linear warm-up over ``warmup_epochs`` (from 1/100), then ``cosine`` (per step, down to
    ``min_lr``), ``v1_cosine`` (per epoch: ``cos(pi*e/(2E)) + min_lr/lr``), ``step`` or ``constant``.
    """

    def __init__(self, config: SchedulerConfig, lr: float, epochs: int, steps_per_epoch: float) -> None:
        self.name, self.lr, self.epochs = config.name, lr, epochs
        self.steps_per_epoch = max(steps_per_epoch, 1e-9)
        self.warmup_steps = config.warmup_epochs * self.steps_per_epoch
        self.min_ratio = config.min_lr / lr
        self.step_epochs, self.gamma = config.step_epochs, config.gamma

    def __call__(self, step: int) -> float:
        epoch = step / self.steps_per_epoch
        if self.name == "cosine":
            total = self.epochs * self.steps_per_epoch - self.warmup_steps
            t = min(max(step - self.warmup_steps, 0) / max(total, 1), 1.0)
            factor = self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        elif self.name == "v1_cosine":
            factor = math.cos(math.pi * math.floor(epoch) / (2 * self.epochs)) + self.min_ratio
        elif self.name == "step":
            factor = self.gamma ** math.floor(epoch / self.step_epochs)
        else:
            factor = 1.0
        if step < self.warmup_steps:
            factor *= 0.01 + 0.99 * step / self.warmup_steps
        return factor


class ClassifierModule(L.LightningModule):
    """Trains ``model`` (images ``(N, 3, H, W)`` in [0, 1] -> logits ``(N, K)``) with BCE on one-hot targets.

    Logs ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc`` (top-1) and ``lr``. Multi-label data (multi-hot
    ``(N, K)`` targets, ``multilabel=True``): ``train_loss``, ``val_loss`` and, over the whole validation set,
    ``val_map`` (mean average precision), ``val_f1`` (macro F1 at ``threshold``) and ``val_exact`` (exact label
    sets). The random number generators' states go into checkpoints so a resumed run reproduces the
    uninterrupted one.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        epochs: int,
        agc: tuple[float, float] | None = None,
        head: Collection[str] = (),
        multilabel: bool = False,
        threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.model = model
        self.multilabel, self.threshold = multilabel, threshold
        self._val_outputs: list[tuple[Tensor, Tensor]] = []
        self.optimizer_config, self.scheduler_config, self.epochs = optimizer, scheduler, epochs
        self.agc = agc  # (clip_factor, eps) of adaptive gradient clipping, or None
        self.head = frozenset(head)  # state-dict keys of the head (optimizer.head_lr applies to them)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:  # a frozen backbone (linear probe) keeps its normalisation statistics too
            for m in self.model.modules():
                params = list(m.parameters(recurse=False))
                if getattr(m, "track_running_stats", False) and params and not any(p.requires_grad for p in params):
                    m.eval()
        return self

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.agc is not None:
            from .agc import adaptive_clip_grad_

            adaptive_clip_grad_(self.model.parameters(), *self.agc)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # B-cosification's b-schedule ablation: b rises linearly from 1 over b_warmup_epochs
        if getattr(self.model, "b_warmup_epochs", 0) > 0:
            n = max(self.trainer.num_training_batches, 1)
            self.model.set_b(self.model.b_at(self.current_epoch + batch_idx / n))

    def on_train_end(self) -> None:
        if getattr(self.model, "b_warmup_epochs", 0) > 0:
            self.model.set_b(self.model.b_at(self.epochs))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _step(self, batch, stage: str) -> Tensor | None:
        x, y = batch
        if x.numel() == 0:  # every image of the batch was unreadable and skipped
            return None
        logits = self.model(x)
        loss = bce_one_hot(logits, y)
        on_step = stage == "train"
        how = {"on_step": on_step, "on_epoch": True, "prog_bar": True, "sync_dist": not on_step, "batch_size": len(y)}
        self.log(f"{stage}_loss", loss, **how)
        if self.multilabel:  # mAP and F1 need the whole validation set: on_validation_epoch_end
            if stage == "val":
                self._val_outputs.append((logits.detach().float(), y.detach().float()))
            return loss
        self.log(f"{stage}_acc", (logits.argmax(dim=1) == y).float().mean(), **how)
        return loss

    def training_step(self, batch, batch_idx: int) -> Tensor | None:
        loss = self._step(batch, "train")
        if loss is not None:
            groups = self.optimizers().param_groups
            self.log("lr", groups[0]["lr"], on_step=True, on_epoch=False)
            if len(groups) > 1:
                self.log("head_lr", groups[-1]["lr"], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def on_validation_epoch_end(self) -> None:
        if not self.multilabel or not self._val_outputs:
            return
        from ..metrics.multilabel import multilabel_summary

        logits = torch.cat([o[0] for o in self._val_outputs])
        targets = torch.cat([o[1] for o in self._val_outputs])
        self._val_outputs = []
        if self.trainer.world_size > 1:  # every rank's share (the distributed sampler pads them to one size)
            logits, targets = self.all_gather(logits).flatten(0, 1), self.all_gather(targets).flatten(0, 1)
        summary = multilabel_summary(logits.cpu(), targets.cpu(), self.threshold)
        for key in ("map", "f1", "exact"):
            value = summary["exact_match" if key == "exact" else key]
            self.log(f"val_{key}", float(value) if value == value else 0.0, prog_bar=key != "exact")

    def configure_optimizers(self):
        cfg = self.optimizer_config
        cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        head_lr = cfg.head_lr if cfg.head_lr is not None else cfg.lr
        groups = [
            {"params": [p for n, p in params if n not in self.head], "lr": cfg.lr},
            {"params": [p for n, p in params if n in self.head], "lr": head_lr},
        ]
        groups = [g for g in groups if g["params"]]
        opt = cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        steps_per_epoch = self.trainer.estimated_stepping_batches / max(self.trainer.max_epochs, 1)
        schedule = LRSchedule(self.scheduler_config, cfg.lr, self.epochs, steps_per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # plain tensors and ints only, so checkpoints load with torch.load(weights_only=True)
        np_state = np.random.get_state()
        py_state = random.getstate()
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_rest": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": [py_state[0], list(py_state[1]), py_state[2]],
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states")
        if states:
            torch.set_rng_state(states["torch"])
            pos, has_gauss, cached = states["numpy_rest"]
            np.random.set_state(("MT19937", states["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
            version, internal, gauss = states["python"]
            random.setstate((version, tuple(internal), gauss))
