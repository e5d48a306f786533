"""The ImageNet validation reader and the ImageNet presets, on a generated miniature ImageNet folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from _attr_nets import TemplateNet, blob_images
from alignnet.cli import main
from alignnet.data.imagenet import ImageNetVal, imagenet_synsets
from alignnet.data.sources import dataset_from_spec
from alignnet.models import InputSpec
from alignnet.pretrained import imagenet_classes


def _write_folder(root, images, labels, synsets, quality=95):
    for i, (x, y) in enumerate(zip(images, labels.tolist(), strict=True)):
        folder = root / synsets[y]
        folder.mkdir(parents=True, exist_ok=True)
        arr = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(folder / f"ILSVRC2012_val_{i:08d}.JPEG", quality=quality, subsampling=0)


@pytest.fixture
def mini_imagenet(tmp_path):
    """10 synset folders (classes 0-9) of 8x8 JPEGs with the blob of their class (TemplateNet reads them)."""
    images, labels = blob_images(per_class=6)
    root = tmp_path / "val"
    _write_folder(root, images, labels, imagenet_synsets())
    return root


def test_synsets_are_the_1000_classes_in_index_order():
    wnids = imagenet_synsets()
    assert len(wnids) == 1000 == len(set(wnids)) == len(imagenet_classes())
    assert wnids[0] == "n01440764" and wnids[-1] == "n15075141"  # tench ... toilet tissue
    assert list(wnids) == sorted(wnids)  # the standard class index is the sorted WordNet-ID order


def test_reader_labels_folders_by_their_wordnet_id(tmp_path):
    rng = np.random.default_rng(0)
    wnids = imagenet_synsets()
    for wnid in (wnids[1], wnids[10], wnids[999]):  # a subset: a plain ImageFolder would number them 0, 1, 2
        (tmp_path / wnid).mkdir()
        for j in range(2):
            Image.fromarray(rng.integers(0, 255, (20 + j, 30, 3), dtype=np.uint8)).save(tmp_path / wnid / f"{j}.JPEG")
    (tmp_path / wnids[10] / "notes.txt").write_text("not an image")
    data = ImageNetVal(tmp_path)
    assert data.targets == [1, 1, 10, 10, 999, 999]
    x, y = data[5]
    assert x.shape == (3, 224, 224) and y == 999 and 0 <= float(x.min()) and float(x.max()) <= 1
    small = ImageNetVal(tmp_path, InputSpec(size=(32, 32)))
    assert small[0][0].shape == (3, 32, 32)
    assert isinstance(dataset_from_spec(f"imagenet:{tmp_path}"), ImageNetVal)
    (tmp_path / "cats").mkdir()
    with pytest.raises(ValueError, match="WordNet IDs"):
        ImageNetVal(tmp_path)
    with pytest.raises(FileNotFoundError):
        ImageNetVal(tmp_path / "missing")
    with pytest.raises(ValueError, match="imagenet:DIR"):
        dataset_from_spec("imagenet")


@pytest.fixture
def template_model(monkeypatch):
    """`--model template` resolves to a TemplateNet taking 8x8 images (the reader fits the JPEGs to it)."""
    from alignnet.cli import evaluate as evaluate_cli

    def template(spec, device, progress=True):
        model = TemplateNet()
        model.input_spec = InputSpec(size=(8, 8))
        return model

    monkeypatch.setattr(evaluate_cli, "resolve_model", template)


def test_bcos_v2_localisation_preset_on_the_miniature_folder(mini_imagenet, tmp_path, template_model):
    out = tmp_path / "loc"
    args = ["evaluate", "--model", "template", "--data", f"imagenet:{mini_imagenet}", "--preset",
            "bcos-v2-localisation", "--methods", "ours,grad", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    saved = json.loads((out / "localisation_ours.json").read_text())
    cfg = saved["config"]
    assert (cfg["grid"], cfg["n_grids"], cfg["smooth"], cfg["confidence"]) == (2, 250, 15, 0.5)
    assert cfg["protocol"]["batch_size"] == 8 and 0 < cfg["grids_made"] <= 250
    assert saved["summary"]["n"] == 4 * cfg["grids_made"]
    assert saved["summary"]["mean"] > 0.5  # smoothing 15 on 16x16 grids blurs, but ours stays in its cell
    assert json.loads((out / "summary.json").read_text())["protocol"]["smooth"] == 15


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:bcos_cifar10_9l is an architecture without pretrained weights")
def test_imagenet_pixel_removal_preset_with_a_random_weight_model(mini_imagenet, tmp_path):
    out = tmp_path / "pr"
    args = ["evaluate", "--model", "bcos_cifar10_9l", "--data", f"imagenet:{mini_imagenet}", "--preset",
            "imagenet-pixel-removal", "--n-images", "6", "--steps", "3", "--methods", "ours",
            "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    with np.load(out / "pixel_removal_ours.npz") as f:
        assert f["curves_least"].shape == (6, 3) and f["curves_most"].shape == (6, 3)
    cfg = json.loads((out / "pixel_removal_ours.json").read_text())["config"]
    assert cfg["n_images"] == 6 and cfg["fraction"] == 0.25 and cfg["protocol"]["batch_size"] == 16


def test_rescale_tiles_shrunk_images_into_one_image_size():
    import torch
    import torch.nn.functional as F

    from alignnet.metrics.localisation import tile_grids

    torch.manual_seed(0)
    images = torch.rand(3, 4, 3, 16, 12, dtype=torch.float64)
    tiled = tile_grids(images, 2, rescale=True)
    assert tiled.shape == (3, 3, 16, 12)
    shrunk = F.interpolate(images[1, 2][None], size=(8, 6), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(tiled[1, :, 8:, :6], shrunk[0], rtol=0, atol=0)  # cell 2: second row, first column
    assert tile_grids(images, 2).shape == (3, 3, 32, 24)
    with pytest.raises(ValueError, match="divisible"):
        tile_grids(torch.rand(1, 9, 3, 10, 10), 3, rescale=True)


def test_bcosification_vit_preset_on_the_miniature_folder(mini_imagenet, tmp_path, template_model):
    """500_2x2_rescale: each 8x8 image shrunk to 4x4, so a 2x2 grid is the model's 8x8 input."""
    out = tmp_path / "vit"
    args = ["evaluate", "--model", "template", "--data", f"imagenet:{mini_imagenet}", "--preset",
            "bcosification-localisation-vit", "--methods", "ours", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    cfg = json.loads((out / "localisation_ours.json").read_text())["config"]
    assert (cfg["grid"], cfg["n_grids"], cfg["smooth"], cfg["rescale"]) == (2, 500, 15, True)
    assert cfg["data"]["shape"][-2:] == [8, 8]  # the grid has one image's size
    assert cfg["protocol"]["rescale"] is True
    out2 = tmp_path / "plain"
    assert main([*args[:-3], "--out", str(out2), "--quiet", "--preset", "bcos-v2-localisation"]) == 0
    assert json.loads((out2 / "localisation_ours.json").read_text())["config"]["data"]["shape"][-2:] == [16, 16]
