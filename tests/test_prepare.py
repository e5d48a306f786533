"""``alignnet.data.fit_to_model``: the one image-preparation path of the CLI, web page, video and demo."""

import numpy as np
import pytest
import torch
from PIL import Image

import alignnet
from alignnet.data import fashion_mnist_to_input, fit_to_model, fit_to_spec, load_embedded
from alignnet.models import InputSpec

RGB32 = InputSpec(size=(32, 32))
FMNIST = InputSpec(size=(32, 32), style="fashion_mnist")


def test_policies():
    x = torch.rand(3, 40, 60)
    assert fit_to_spec(x, RGB32, "crop").shape == (3, 32, 32)
    assert fit_to_spec(x, RGB32, "stretch").shape == (3, 32, 32)
    torch.testing.assert_close(fit_to_spec(x, RGB32, "none"), x)
    # crop keeps the centre: a left/right split keeps its middle
    y = torch.zeros(3, 32, 64)
    y[:, :, 32:] = 1.0
    cropped = fit_to_spec(y, RGB32, "crop")
    assert float(cropped[:, :, :12].max()) < 0.05 and float(cropped[:, :, 20:].min()) > 0.95
    with pytest.raises(ValueError, match="resize policy"):
        fit_to_spec(x, RGB32, "zoom")
    with pytest.raises(ValueError, match="floating point"):
        fit_to_spec(torch.zeros(3, 8, 8, dtype=torch.uint8), RGB32)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        fit_to_spec(torch.zeros(5, 8, 8), RGB32)
    with pytest.raises(ValueError, match="NaN"):
        fit_to_spec(torch.full((3, 8, 8), float("nan")), RGB32)


def test_imagenet_models_resize_to_256_then_crop_224():
    from torchvision.transforms.v2 import functional as TF

    model = alignnet.create_model("bcos_resnet18")
    assert model.input_spec.resize == 256 and model.input_spec.size == (224, 224)
    x = torch.rand(3, 300, 400)
    expected = TF.center_crop(TF.resize(x, 256, antialias=True), [224, 224]).clamp(0, 1)
    torch.testing.assert_close(fit_to_model(model, x), expected)


def test_fashion_mnist_sized_image_is_padded_like_the_training_data():
    raw = torch.as_tensor(load_embedded("test").images[:1])  # (1, 28, 28) uint8, as in the idx files
    grey = (raw.float() / 255).expand(3, -1, -1)
    for policy in ("crop", "stretch"):
        torch.testing.assert_close(fit_to_spec(grey, FMNIST, policy), fashion_mnist_to_input(raw)[0])
    # the padded 32x32 test images (what the model saw in training) are kept exactly
    images, _ = load_embedded("test").tensors()
    torch.testing.assert_close(fit_to_spec(images[:4], FMNIST), images[:4])


def test_fashion_style_greys_inverts_light_backgrounds_and_pads():
    photo = torch.ones(3, 50, 70)  # white background ...
    photo[:, 15:35, 25:45] = torch.tensor([0.2, 0.4, 0.6]).view(3, 1, 1)  # ... with a dark item
    notes: dict = {}
    x = fit_to_spec(photo, FMNIST, notes=notes)
    assert x.shape == (3, 32, 32) and notes == {"original_size": [50, 70], "inverted": True}
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # grey
    assert float(x[:, :2].abs().max()) == 0 and float(x[:, :, -2:].abs().max()) == 0  # zero padding
    assert float(x[0, 16, 16]) == pytest.approx(0.6, abs=0.02)  # 1 - mean(0.2, 0.4, 0.6): light on dark
    dark = 1 - photo
    notes = {}
    fit_to_spec(dark, FMNIST, notes=notes)
    assert notes["inverted"] is False
    # a batch: each image decides for itself
    batch = fit_to_spec(torch.stack([photo, dark]), FMNIST)
    torch.testing.assert_close(batch[0], batch[1])


def test_paths_pil_and_tensors_agree(tmp_path):
    model = alignnet.load_pretrained("fmnist_bcos")
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (45, 61, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    from_path = fit_to_model(model, tmp_path / "x.png")
    from_pil = fit_to_model(model, Image.fromarray(arr))
    from_tensor = fit_to_model(model, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    torch.testing.assert_close(from_path, from_pil)
    torch.testing.assert_close(from_path, from_tensor)
    with pytest.raises(FileNotFoundError):
        fit_to_model(model, tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        fit_to_model(model, tmp_path / "bad.png")
    with pytest.raises(TypeError, match="path, a PIL image or a tensor"):
        fit_to_model(model, 3)
