"""Fine-tuning a pretrained model on a folder of images with new classes (issue 24): new head, linear probe,
class names in the saved model, the CLI (``--data imagefolder:DIR --init-from``) and ``alignnet.finetune``."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")

from PIL import Image  # noqa: E402

import alignnet  # noqa: E402
import alignnet.train.callbacks  # noqa: E402
import alignnet.train.runner  # noqa: E402
from alignnet.cli import main as cli_main  # noqa: E402
from alignnet.data import load_embedded  # noqa: E402
from alignnet.errors import InputError  # noqa: E402
from alignnet.train import (  # noqa: E402
    ModelConfig,
    apply_overrides,
    build_model,
    config_from_dict,
    list_presets,
    load_preset,
)
from alignnet.train.finetune import (  # noqa: E402
    auto_epochs,
    finetune_settings,
    head_tensor_names,
    init_backbone,
    prior_logit_bias,
    resolve_model_config,
)

# Fashion-MNIST labels 0, 1, 7 written under new names (ImageFolder sorts them: index 0 is "boots")
FOLDER_CLASSES = {7: "boots", 0: "shirts", 1: "trousers"}
HEAD = {"features.8.weight", "logit_layer.bias"}  # bcos_cifar10_9l, MaxOut 2: (2K, 64, 1, 1) and the prior bias
QUICK = ["trainer.progress_bar=false", "trainer.num_threads=1", "data.batch_size=16", "trainer.seed=1"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """3 classes x 12 PNGs (32x32 RGB) from the embedded Fashion-MNIST subset."""
    root = tmp_path_factory.mktemp("folder")
    x, y = load_embedded("train").tensors()
    for label, name in FOLDER_CLASSES.items():
        (root / name).mkdir()
        for i in np.flatnonzero(y.numpy() == label)[:12]:
            pixels = (x[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def _backbone(state: dict) -> dict:
    return {k: v for k, v in state.items() if k not in HEAD}


@pytest.fixture(scope="module")
def pretrained_state():
    return alignnet.load_pretrained("fmnist_bcos").state_dict()


@pytest.fixture(scope="module")
def full_run(folder, tmp_path_factory):
    """Full fine-tuning through the CLI: ``alignnet train --data imagefolder:DIR --init-from fmnist_bcos``."""
    out = tmp_path_factory.mktemp("full")
    sets = [a for s in QUICK for a in ("--set", s)]
    lrs = ["--set", "optimizer.lr=1e-4", "--set", "optimizer.head_lr=1e-3"]
    assert cli_main(["train", "--data", f"imagefolder:{folder}", "--init-from", "fmnist_bcos", "--epochs", "2",
                     *lrs, *sets, "-o", str(out)]) == 0  # fmt: skip
    return out


@pytest.fixture(scope="module")
def probe_run(folder, tmp_path_factory):
    """A linear probe through the Python API."""
    out = tmp_path_factory.mktemp("probe")
    result = alignnet.finetune("fmnist_bcos", folder, out, freeze_backbone=True, epochs=2, overrides=QUICK)
    return out, result


def _initial_head() -> torch.Tensor:
    """The new head a run with ``trainer.seed=1`` starts from (the seed is set before the model is built)."""
    torch.manual_seed(1)
    config = ModelConfig(name="bcos_cifar10_9l", args={"b": 2.0, "width": 0.25, "logit_bias": math.log(0.5)},
                         num_classes=3)  # fmt: skip
    return build_model(config).state_dict()["features.8.weight"]


def _config(**sets):
    data = finetune_settings(load_preset("finetune"), "fmnist_bcos", None)
    return config_from_dict(apply_overrides(data, [f"{k}={v}" for k, v in sets.items()]))


def test_five_classes_get_a_new_head_instead_of_the_shape_error(pretrained_state):
    config = _config(**{"model.num_classes": 5})
    resolved, source = resolve_model_config(config.model, config.init_from, 5, None)
    assert resolved.name == "bcos_cifar10_9l" and resolved.num_classes == 5 and resolved.new_head is True
    assert resolved.args == {"b": 2.0, "width": 0.25, "logit_bias": pytest.approx(math.log(0.2 / 0.8), abs=1e-15)}
    model = build_model(resolved)
    init_backbone(model, source, head_tensor_names(resolved.name, resolved.args, 5))
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    state = model.state_dict()
    assert state["features.8.weight"].shape == (10, 64, 1, 1)
    assert float(state["logit_layer.bias"]) == pytest.approx(math.log(0.25), abs=1e-15)
    for k, v in _backbone(pretrained_state).items():
        assert torch.equal(state[k], v), k
    # keeping the old head is what failed before, and still does when asked for
    with pytest.raises(InputError, match=r"'features.8.weight' has shape \(20, 64, 1, 1\).*\(10, 64, 1, 1\)"):
        build_model(dataclasses.replace(resolved, args={"b": 2.0, "width": 0.25}), "fmnist_bcos")


def test_head_is_what_depends_on_the_class_count():
    assert head_tensor_names("bcos_cifar10_9l", {"width": 0.25}, 3) == HEAD
    assert prior_logit_bias(10) == pytest.approx(math.log(0.1 / 0.9), abs=1e-15)
    assert prior_logit_bias(2) == 0.0
    # same classes (count and names) as the source: the head is kept, as in a plain init_from run
    config = _config(**{"model.num_classes": 10})
    names = alignnet.load_pretrained("fmnist_bcos").class_names
    assert resolve_model_config(config.model, config.init_from, 10, names)[0].new_head is False
    renamed = [f"digit {i}" for i in range(10)]
    assert resolve_model_config(config.model, config.init_from, 10, renamed)[0].new_head is True


def test_finetune_preset_and_epochs_from_data_size():
    assert "finetune" in list_presets()
    config = config_from_dict(load_preset("finetune"))
    assert config.trainer.epochs is None and config.trainer.early_stopping_patience == 20
    assert config.data.val_fraction == 0.1 and config.data.augment and config.optimizer.lr == 1e-3
    assert [auto_epochs(n) for n in (30, 100, 1000, 5000, 10**6)] == [100, 100, 20, 10, 10]
    with pytest.raises(InputError, match="model.name: null needs init_from"):  # the preset alone: nothing to tune
        resolve_model_config(config.model, config.init_from, 3, None)


def test_imagefolder_settings_use_train_val_subfolders_or_split(tmp_path, folder, capsys):
    for sub in ("train", "val"):
        (tmp_path / sub).mkdir()
    data = finetune_settings(load_preset("fmnist-bcos"), "x.safetensors", tmp_path)
    assert data["data"] | {"root": None} == {**load_preset("fmnist-bcos")["data"], "dataset": "image_folder",
                                             "root": None, "val_fraction": None}  # fmt: skip
    assert data["data"]["root"] == str(tmp_path) and data["model"]["num_classes"] is None
    assert data["init_from"] == "x.safetensors"
    assert finetune_settings(load_preset("fmnist-bcos"), None, folder)["data"]["val_fraction"] == 0.1
    assert cli_main(["train", "--data", str(folder), "--print-config"]) == 2
    assert "use imagefolder:DIR" in capsys.readouterr().err


@pytest.mark.slow
def test_full_finetune_changes_the_backbone_and_saves_class_names(full_run, pretrained_state):
    model = alignnet.load_model(full_run / "model.safetensors")
    assert model.class_names == ("boots", "shirts", "trousers")
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 3)
    state = model.state_dict()
    changed = [k for k, v in _backbone(pretrained_state).items() if not torch.equal(state[k], v)]
    assert len(changed) == len(_backbone(pretrained_state))  # every backbone layer trained
    assert float(state["logit_layer.bias"]) == pytest.approx(math.log(0.5), abs=1e-15)  # 1-in-3 prior


@pytest.mark.slow
def test_linear_probe_keeps_the_backbone(probe_run, pretrained_state):
    out, result = probe_run
    model = alignnet.load_model(out / "model.safetensors")
    state = model.state_dict()
    for k, v in _backbone(pretrained_state).items():
        assert torch.equal(state[k], v), k
    head = state["features.8.weight"]
    assert head.shape == (6, 64, 1, 1)
    assert (head - _initial_head()).abs().max() > 1e-4  # the head trained
    assert model.class_names == ("boots", "shirts", "trousers")
    summary = (out / "summary.json").read_text()
    assert '"trainable_parameters": 384' in summary  # 6 x 64 head weights only


@pytest.mark.slow
def test_head_learning_rate_is_ten_times_the_backbones(full_run):
    import csv

    rows = [r for r in csv.DictReader((full_run / "metrics.csv").open()) if r.get("head_lr")]
    assert rows
    for r in rows:
        assert float(r["head_lr"]) == pytest.approx(10 * float(r["lr"]), rel=1e-6)  # logged as float32


@pytest.mark.slow
def test_completeness_holds_for_the_finetuned_model(full_run, folder):
    model = alignnet.load_model(full_run / "model.safetensors").double()
    x = torch.stack([alignnet.data.fit_to_model(model, p) for p in sorted(folder.glob("*/*.png"))[:4]]).double()
    e = alignnet.explain(model, x)
    assert e.contributions.dtype == torch.float64
    assert e.completeness_error() < 1e-12


@pytest.mark.slow
def test_cli_explain_prints_a_folder_class_name(full_run, folder, tmp_path, capsys):
    image = sorted((folder / "trousers").glob("*.png"))[0]
    capsys.readouterr()
    assert cli_main(["explain", str(image), "--model", str(full_run / "model.safetensors"),
                     "--out", str(tmp_path / "x")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if image.name in x)
    assert any(f": {name} (" in line for name in FOLDER_CLASSES.values()), line


@pytest.mark.slow
def test_early_stopping_on_validation_accuracy(folder, tmp_path):
    # an lr so small nothing changes: val_acc never improves after epoch 1, patience 1 stops after epoch 2
    result = alignnet.finetune("fmnist_bcos", folder, tmp_path, epochs=20, lr=1e-12, head_lr=1e-12,
                               overrides=[*QUICK, "trainer.early_stopping_patience=1"])  # fmt: skip
    assert result.epochs_completed == 2
    head = alignnet.load_model(tmp_path / "model.safetensors").state_dict()["features.8.weight"]
    assert torch.allclose(head, _initial_head(), rtol=0, atol=1e-6)  # so _initial_head is where runs start


@pytest.mark.parametrize("hflip", [True, False])
def test_data_hflip_switches_the_training_flip(tmp_path, hflip):
    # one class folder with a 32x32 image bright on its left half only: a flip puts the light on the right
    (tmp_path / "a").mkdir()
    pixels = np.zeros((32, 32, 3), np.uint8)
    pixels[:, :12] = 255
    Image.fromarray(pixels).save(tmp_path / "a" / "x.png")
    Image.fromarray(pixels).save(tmp_path / "a" / "y.png")
    config = _config(**{"data.hflip": str(hflip).lower()})
    assert config.data.hflip is hflip
    train_set, _, _ = alignnet.train.runner.build_datasets(dataclasses.replace(config.data, root=str(tmp_path)))
    torch.manual_seed(0)
    flipped = [bool(x[:, :, 16:].sum() > x[:, :, :16].sum()) for x, _ in (train_set[0] for _ in range(40))]
    assert any(flipped) is hflip  # with a flip: 40 draws all unflipped has probability 2**-40
    assert load_preset("finetune")["data"]["hflip"] is True  # photos: flip (documented: false for digits)


class _NegateWeightsInEpoch2(alignnet.train.callbacks.L.Callback):
    """Epoch 2 starts from the negated weights: every logit changes sign, val_acc drops to about 0."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            with torch.no_grad():
                for p in pl_module.model.parameters():
                    p.neg_()


def test_exported_model_is_the_best_validation_checkpoint(tmp_path):
    from safetensors.torch import load_file

    from alignnet.train.runner import train

    config = _config(**{"data.dataset": "embedded", "model.num_classes": 10, "trainer.epochs": 2,
                        "trainer.limit_train_batches": 2, "trainer.limit_val_batches": 4, "optimizer.lr": 1e-12,
                        **dict(s.split("=") for s in QUICK)})  # fmt: skip
    result = train(config, tmp_path, callbacks=[_NegateWeightsInEpoch2()])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["exported_epoch"] == 1
    assert result.best_val_acc > 0.8  # fmnist_bcos on its own classes; epoch 2's negated model scores ~0
    exported = load_file(tmp_path / "model.safetensors")
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    w = "features.8.weight"
    assert torch.equal(exported[w], best[f"model.{w}"])
    assert torch.allclose(exported[w], -last[f"model.{w}"], atol=1e-6)  # the last epoch's are the negated ones
    assert torch.equal(result.model.state_dict()[w], exported[w])
