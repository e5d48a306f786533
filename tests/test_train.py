"""Training: configs and overrides, schedules, a real-data run, resume equivalence, SIGTERM, bad paths."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch

pytest.importorskip("lightning")

import lightning as L  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from alignnet.cli import main as cli_main  # noqa: E402
from alignnet.train import (  # noqa: E402
    LRSchedule,
    SchedulerConfig,
    apply_overrides,
    bce_one_hot,
    build_model,
    config_from_dict,
    config_to_dict,
    list_presets,
    load_config,
    load_preset,
    save_config,
    train,
)


def _tiny(**overrides) -> dict:
    """A few-second config: tiny B-cos net on part of the embedded Fashion-MNIST subset."""
    base = {
        "model": {"name": "bcos_cifar10_9l", "args": {"width": 0.125}},
        "data": {"dataset": "embedded", "batch_size": 32, "train_subset": 96},
        "optimizer": {"lr": 2e-3},
        "trainer": {"epochs": 2, "limit_val_batches": 2, "progress_bar": False, "num_threads": 1, "seed": 3},
    }
    return config_from_dict(apply_overrides(base, [f"{k}={v}" for k, v in overrides.items()]))


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_presets_load_validate_and_round_trip(tmp_path):
    names = list_presets()
    for required in ("bcos-cifar10-9l", "coda-cifar10-9l-sq", "imagenet-bcos-resnet50", "fmnist-bcos", "fmnist-coda"):
        assert required in names
    for name in names:
        config = config_from_dict(load_preset(name))
        save_config(config, tmp_path / f"{name}.yaml")
        assert config_from_dict(load_config(tmp_path / f"{name}.yaml")) == config
    coda = config_from_dict(load_preset("coda-cifar10-9l-sq"))
    assert coda.optimizer.lr == 2.5e-4 and coda.data.batch_size == 16 and coda.model.args["temperature"] == 1000
    data = apply_overrides(
        load_preset("bcos-cifar10-9l"), ["optimizer.lr=1e-3", "model.args.b=1.5", "trainer.ema_decay=0.99"]
    )
    c = config_from_dict(data)
    assert c.optimizer.lr == 1e-3 and isinstance(c.optimizer.lr, float) and c.model.args["b"] == 1.5
    assert c.trainer.ema_decay == 0.99
    assert config_to_dict(c)["optimizer"]["betas"] == [0.9, 0.999]


def test_config_errors():
    with pytest.raises(ValueError, match="did you mean lr"):
        config_from_dict({"optimizer": {"lrr": 1}})
    with pytest.raises(ValueError, match="optimizer.lr: expected a number"):
        config_from_dict(apply_overrides({}, ["optimizer.lr=fast"]))
    with pytest.raises(ValueError, match="trainer.epochs: expected an integer"):
        config_from_dict({"trainer": {"epochs": 1.5}})
    with pytest.raises(ValueError, match="data.dataset"):
        config_from_dict({"data": {"dataset": "mnist"}})
    with pytest.raises(ValueError, match="section.key=value"):
        apply_overrides({}, ["optimizer.lr"])
    with pytest.raises(ValueError, match="unknown preset 'fmnist-bcoss'; did you mean fmnist-bcos"):
        load_preset("fmnist-bcoss")


def test_paper_ablation_sets_scale_and_temperature():
    c = config_from_dict(
        apply_overrides(load_preset("bcos-cifar10-9l"), ["model.args.b=1.5", "model.args.width=0.125"])
    )
    model = build_model(c.model)
    assert model.logit_layer.temperature == 1e-2  # docs/models.md#b-ablation, B=1.5
    convs = [m for m in model.modules() if type(m).__name__ == "BcosConv2d"]
    assert all(m.b == 1.5 and math.isclose(m.scale, 10**-0.5) for m in convs)


def test_schedules():
    lr, epochs, spe = 1e-3, 10, 5
    cos = LRSchedule(SchedulerConfig(name="cosine", min_lr=1e-5), lr, epochs, spe)
    assert cos(0) == 1.0 and math.isclose(cos(epochs * spe), 1e-2) and math.isclose(cos(25), (1 + 1e-2) / 2)
    v1 = LRSchedule(SchedulerConfig(name="v1_cosine", min_lr=1e-5), lr, epochs, spe)
    for step in (0, 7, 23, 49):  # per epoch: lr * cos(pi * e / (2E)) + min_lr
        e = step // spe
        assert math.isclose(v1(step) * lr, lr * math.cos(math.pi * e / 20) + 1e-5)
    warm = LRSchedule(SchedulerConfig(name="constant", warmup_epochs=2), lr, epochs, spe)
    assert math.isclose(warm(0), 0.01) and math.isclose(warm(5), 0.01 + 0.99 * 0.5) and warm(10) == 1.0
    step = LRSchedule(SchedulerConfig(name="step", step_epochs=3, gamma=0.5), lr, epochs, spe)
    assert step(14) == 1.0 and step(15) == 0.5 and step(30) == 0.25


def test_bce_one_hot_matches_formula():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]], dtype=torch.float64)
    labels = torch.tensor([0, 2])
    t = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]], dtype=torch.float64)
    manual = -(t * torch.log(torch.sigmoid(logits)) + (1 - t) * torch.log(1 - torch.sigmoid(logits))).mean()
    assert torch.allclose(bce_one_hot(logits, labels).double(), manual, atol=1e-6)


@pytest.mark.slow
def test_real_data_run_beats_chance(tmp_path):
    """2 epochs on the embedded Fashion-MNIST subset (1,000 images), tested on its 1,000 test images."""
    config = config_from_dict(
        {
            "model": {"name": "bcos_cifar10_9l", "args": {"width": 0.25}},
            "data": {"dataset": "embedded", "batch_size": 16},
            "optimizer": {"lr": 1e-3},
            "trainer": {"epochs": 2, "progress_bar": False, "num_threads": 1},
        }
    )
    result = train(config, tmp_path / "run")
    assert result.metrics["val_acc"] > 0.25, result.metrics  # chance: 0.1; measured 0.372
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["val_images"] == 1000 and summary["epochs"] == 2
    lines = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert "val_acc" in lines[0] and len(lines) > 3
    from alignnet.models import load_model

    model = load_model(tmp_path / "run" / "model.safetensors")
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(model.eval()(x), result.model.eval()(x), atol=1e-6)


class _StopAfterFirstEpoch(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


@pytest.mark.slow
def test_resume_gives_the_same_weights(tmp_path):
    config = _tiny(**{"trainer.ema_decay": 0.9})
    full = train(config, tmp_path / "full")
    first = train(config, tmp_path / "split", callbacks=[_StopAfterFirstEpoch()])
    assert first.epochs_completed == 1
    resumed = train(config, tmp_path / "split", resume=tmp_path / "split")
    assert resumed.epochs_completed == 2
    a, b = _weights(full.model), _weights(resumed.model)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with pytest.raises(FileExistsError, match="--resume"):
        train(config, tmp_path / "full")


class _SigtermAt(L.Callback):
    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == self.batch and trainer.current_epoch == 0:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_sigterm_writes_resumable_checkpoint(tmp_path, capsys):
    config = _tiny()
    with pytest.raises(SystemExit):
        train(config, tmp_path / "run", callbacks=[_SigtermAt(1)])
    ckpt = tmp_path / "run" / "checkpoints" / "interrupted.ckpt"
    assert ckpt.is_file()
    assert "alignnet train --resume" in capsys.readouterr().err
    state = torch.load(ckpt, weights_only=True)
    assert state["global_step"] == 2
    result = train(config, tmp_path / "run", resume=tmp_path / "run")
    assert result.epochs_completed == 2 and (tmp_path / "run" / "model.safetensors").is_file()


def test_bad_output_and_data_paths_fail_at_start(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="cannot write to the output directory"):
        train(_tiny(), blocker / "run")
    config = _tiny(**{"data.dataset": "fashion_mnist", "data.root": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        train(config, tmp_path / "run")
    config = _tiny(**{"data.dataset": "cifar10"})
    with pytest.raises(ValueError, match="data.root"):
        train(config, tmp_path / "run2")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(_tiny(), tmp_path / "run3", resume=tmp_path)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["train", "--preset", "fmnist-bcos", "--set", "optimizer.lrr=1", "-o", str(tmp_path)]) == 2
    assert "did you mean lr" in capsys.readouterr().err
    assert cli_main(["train", "--preset", "fmnist-bcos"]) == 2
    assert "--output" in capsys.readouterr().err
    assert (
        cli_main(["train", "--preset", "fmnist-bcos", "--set", "optimizer.lr=3e-4", "--epochs", "7", "--print-config"])
        == 0
    )
    out = capsys.readouterr().out
    assert "lr: 0.0003" in out and "epochs: 7" in out


def test_image_folder_training_skips_corrupt_images(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / "imgs" / split / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(
                    tmp_path / "imgs" / split / c / f"{i}.png"
                )
    (tmp_path / "imgs" / "train" / "a" / "bad.png").write_bytes(b"garbage")
    base = {
        "model": {"name": "bcos_cifar10_9l", "args": {"width": 0.125}, "num_classes": 2},
        "data": {"dataset": "image_folder", "root": str(tmp_path / "imgs"), "image_size": 32, "batch_size": 4},
        "trainer": {"epochs": 1, "progress_bar": False, "num_threads": 1},
    }
    with pytest.warns(UserWarning, match="bad.png"):
        result = train(config_from_dict(base), tmp_path / "run")
    assert result.epochs_completed == 1
    base["data"]["strict"] = True
    with pytest.raises(ValueError, match="bad.png"):
        train(config_from_dict(base), tmp_path / "run_strict")
    assert load_file(tmp_path / "run" / "model.safetensors")


@pytest.mark.slow
def test_cli_train_then_resume_with_more_epochs(tmp_path):
    config = _tiny(**{"trainer.epochs": 1})
    save_config(config, tmp_path / "tiny.yaml")
    out = tmp_path / "run"
    assert cli_main(["train", "--config", str(tmp_path / "tiny.yaml"), "-o", str(out), "--no-progress"]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1
    assert cli_main(["train", "--config", str(tmp_path / "tiny.yaml"), "-o", str(out)]) == 2  # refuses to clobber
    assert cli_main(["train", "--resume", str(out), "--epochs", "2"]) == 0  # reuses out/config.yaml
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["resumed_from"].endswith("last.ckpt")
    assert load_config(out / "config.yaml")["trainer"]["epochs"] == 2
