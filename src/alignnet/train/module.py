"""Lightning module around any registered model: BCE on one-hot targets, Adam(W), schedules.

The papers train with binary cross-entropy on the logits against one-hot targets
(REFERENCE.md sections 3-4), not softmax cross-entropy.
"""

from __future__ import annotations

import math
import random

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig, OptimizerConfig, SchedulerConfig

__all__ = ["ClassifierModule", "LRSchedule", "bce_one_hot", "build_model"]


def build_model(config: ModelConfig) -> nn.Module:
    """A registered model (or a baseline of :mod:`alignnet.train.baselines`) from its config."""
    from .baselines import BASELINES

    args = dict(config.args)
    if config.paper_ablation:
        from ..models.cifar import ablation_overrides

        args = {**args, **ablation_overrides(args.get("b", 2.0))}
    if config.name in BASELINES:
        return BASELINES[config.name](num_classes=config.num_classes, **args)
    from ..models import create_model

    return create_model(config.name, num_classes=config.num_classes, **args)


def bce_one_hot(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean binary cross-entropy of ``(N, K)`` logits against one-hot ``(N,)`` labels."""
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

    Logs ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc`` (top-1) and ``lr``. The random
    number generators' states go into checkpoints so a resumed run reproduces the uninterrupted one.
    """

    def __init__(self, model: nn.Module, optimizer: OptimizerConfig, scheduler: SchedulerConfig, epochs: int) -> None:
        super().__init__()
        self.model = model
        self.optimizer_config, self.scheduler_config, self.epochs = optimizer, scheduler, epochs

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _step(self, batch, stage: str) -> Tensor | None:
        x, y = batch
        if x.numel() == 0:  # every image of the batch was unreadable and skipped
            return None
        logits = self.model(x)
        loss = bce_one_hot(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        on_step = stage == "train"
        self.log(
            f"{stage}_loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            sync_dist=not on_step,
            batch_size=len(y),
        )
        self.log(
            f"{stage}_acc", acc, on_step=on_step, on_epoch=True, prog_bar=True, sync_dist=not on_step, batch_size=len(y)
        )
        return loss

    def training_step(self, batch, batch_idx: int) -> Tensor | None:
        loss = self._step(batch, "train")
        if loss is not None:
            self.log("lr", self.optimizers().param_groups[0]["lr"], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self):
        cfg = self.optimizer_config
        cls = torch.optim.AdamW if cfg.name == "adamw" else torch.optim.Adam
        opt = cls(self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
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
