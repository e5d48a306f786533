"""Small Lightning callbacks; checkpoints, EMA and SIGTERM handling are Lightning's own
(``ModelCheckpoint``, ``OnExceptionCheckpoint``, ``EMAWeightAveraging``, its signal connector)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .._optional import require

L = require("lightning", "training (alignnet train)")


__all__ = ["EpochTimer", "ResumeHint"]


class EpochTimer(L.Callback):
    """Logs the wall time of every training epoch as ``epoch_time_s``."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        start = getattr(self, "_start", None)
        if start is not None:  # None when a resumed run re-enters an epoch half-way
            pl_module.log("epoch_time_s", time.perf_counter() - start, on_step=False, on_epoch=True)
        self._start = None


class ResumeHint(L.Callback):
    """After an interruption (SIGTERM, Ctrl-C, an error) tell the user how to resume.

    Runs after ``OnExceptionCheckpoint`` (it must come later in the callback list).
    """

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = Path(output_dir)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if trainer.is_global_zero:
            print(
                f"\ntraining stopped ({type(exception).__name__}); a resumable checkpoint is in "
                f"{self.output_dir / 'checkpoints' / 'interrupted.ckpt'}\n"
                f"continue with: alignnet train --resume {self.output_dir}",
                file=sys.stderr,
            )
