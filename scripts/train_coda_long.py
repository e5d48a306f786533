"""The CoDA training-budget experiment (issue: "the CoDA gap"): the shipped ``fmnist-coda`` preset
(T=1000, width 0.25, all 60,000 images) trained for more epochs, with the weights exported after every
few epochs so that accuracy and localisation can be measured along the way.

Usage: python scripts/train_coda_long.py OUT [EPOCHS] [EVERY] [--resume]
Writes OUT/epoch_NN.safetensors every EVERY epochs (and the usual run layout of ``alignnet train``).
``--resume`` continues an interrupted run in OUT from its checkpoints (``alignnet train --resume``).
``THREADS=N`` in the environment sets torch's thread count (default 1).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L

from alignnet.train import apply_overrides, config_from_dict, load_preset, train
from alignnet.train.runner import export_model


class ExportEvery(L.Callback):
    """Write the weights as ``epoch_NN.safetensors`` after every ``every`` epochs."""

    def __init__(self, out: Path, every: int) -> None:
        self.out, self.every = Path(out), every

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if trainer.is_global_zero and epoch % self.every == 0:
            import copy

            export_model(copy.deepcopy(pl_module.model).cpu().eval(), self.out / f"epoch_{epoch:02d}.safetensors")


def main() -> None:
    resume = "--resume" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--resume"]
    out = Path(args[0])
    epochs = int(args[1]) if len(args) > 1 else 15
    every = int(args[2]) if len(args) > 2 else 3
    data = apply_overrides(
        load_preset("fmnist-coda"),
        [
            f"trainer.epochs={epochs}",
            f"trainer.num_threads={os.environ.get('THREADS', '1')}",
            "trainer.progress_bar=false",
        ],
    )
    result = train(
        config_from_dict(data),
        out,
        resume=out if resume else None,
        overwrite=not resume,
        callbacks=[ExportEvery(out, every)],
    )
    print(result.metrics, result.wall_time_s)


if __name__ == "__main__":
    main()
