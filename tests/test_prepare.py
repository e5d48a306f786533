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


# --- hostile images: absurd shapes and decompression bombs (issue 21) --------------------------------------


def _png_1bit(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of any size, written row by row (a decompression bomb when large)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


IMAGENET = InputSpec(size=(224, 224), resize=256)


def test_png_helper_writes_real_images():
    import io

    with Image.open(io.BytesIO(_png_1bit(37, 5))) as im:
        im.load()
        assert im.size == (37, 5) and im.mode == "1" and not np.asarray(im).any()


@pytest.mark.parametrize("policy", ["crop", "stretch", "none"])
def test_200000x2_strip_is_refused_before_decoding_for_every_policy(tmp_path, monkeypatch, policy):
    """The 200000x2 PNG would make crop resize to 25,600,000x256 (78.6 GB) for an ImageNet model."""
    from alignnet.data import prepare, transforms

    path = tmp_path / "strip.png"
    path.write_bytes(_png_1bit(200_000, 2))
    assert path.stat().st_size < 2000
    model = alignnet.load_pretrained("fmnist_bcos")

    def never(*_a, **_k):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(transforms, "load_image", never)
    monkeypatch.setattr(transforms, "pil_to_tensor", never)
    for image, name in [(path, str(path)), (Image.new("L", (200_000, 2)), None)]:
        with pytest.raises(prepare.ImageTooLargeError) as info:
            fit_to_model(model, image, policy)
        message = str(info.value)
        assert "200000x2 pixels" in message and f"resize {policy!r}" in message
        assert "aspect ratio 100000:1 is over the limit of 100:1" in message
        assert (name or "the image") in message
    for spec in (IMAGENET, RGB32, FMNIST):
        with pytest.raises(ValueError, match="aspect ratio 100000:1"):
            fit_to_spec(torch.zeros(3, 2, 200_000), spec, policy)
        with pytest.raises(ValueError, match="aspect ratio 100000:1"):
            fit_to_spec(torch.zeros(3, 200_000, 2), spec, policy)  # and tall


def test_limits_keep_photos_and_panoramas():
    from alignnet.data.prepare import MAX_ASPECT_RATIO, MAX_PREPARED_PIXELS, ImageTooLargeError, check_fit

    assert MAX_ASPECT_RATIO == 100 and MAX_PREPARED_PIXELS == 2**25
    # phone and camera photos, a 10:1 panorama, a 50 MP camera image, all resized: accepted
    for h, w in [(3024, 4032), (4000, 6000), (3000, 30000), (6000, 8000), (8688, 5792), (500, 50_000)]:
        for policy in ("crop", "stretch"):
            for spec in (IMAGENET, FMNIST):
                check_fit(h, w, spec, policy)
    check_fit(4000, 6000, IMAGENET, "none")  # 24 MP kept at its size
    # exactly at the aspect-ratio limit: accepted and prepared; one pixel over: refused
    x = torch.rand(3, 3, 300)
    assert fit_to_spec(x, IMAGENET, "crop").shape == (3, 224, 224)
    assert fit_to_spec(x, FMNIST, "stretch").shape == (3, 32, 32)
    assert fit_to_spec(x, RGB32, "none").shape == (3, 3, 300)
    with pytest.raises(ImageTooLargeError, match="aspect ratio 101:1"):
        fit_to_spec(torch.rand(3, 3, 303), IMAGENET, "crop")
    # none keeps the size: a 48 MP image is over the pixel limit
    with pytest.raises(ImageTooLargeError, match=r"8000x6000 pixels.*48.0 megapixels, over the limit of 33.6"):
        check_fit(6000, 8000, IMAGENET, "none")
    # crop's resize before the centre crop is bounded too (a large custom input size, aspect 90:1)
    big = InputSpec(size=(2048, 2048))
    with pytest.raises(ImageTooLargeError, match=r"resized to 184320x2048 before the centre crop, 377.5 megapixels"):
        check_fit(100, 9000, big, "crop")
    check_fit(100, 9000, big, "stretch")  # stretch goes straight to 2048x2048
    with pytest.raises(ValueError, match="empty"):
        fit_to_spec(torch.rand(3, 0, 5), RGB32)


@pytest.mark.parametrize("size", [(20_000, 10_000), (10_000, 9_500)], ids=["bomb-error", "bomb-warning"])
def test_decompression_bombs_are_one_clear_error_naming_the_file(tmp_path, capsys, size):
    """Above Pillow's limit (89.5 MP: warning; 179 MP: DecompressionBombError), never a traceback."""
    import warnings

    from alignnet.cli import main
    from alignnet.data.imagenet import ImageNetVal
    from alignnet.data.prepare import ImageTooLargeError

    path = tmp_path / "bomb.png"
    path.write_bytes(_png_1bit(*size))
    assert path.stat().st_size < 30_000
    model = alignnet.load_pretrained("fmnist_bcos")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow warning escapes either
        for policy in ("crop", "stretch", "none"):
            with pytest.raises(ImageTooLargeError, match=f"cannot read image {path}: it is too large to decode safely"):
                fit_to_model(model, path, policy)
    # the CLI: exit 2 and one line naming the file
    assert main(["explain", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(path) in lines[0] and "too large to decode safely" in lines[0] and "MAX_IMAGE_PIXELS" in lines[0]
    assert not (tmp_path / "out").exists()
    # the ImageNet evaluation reader goes through the same path
    folder = tmp_path / "val" / "n01440764"
    folder.mkdir(parents=True)
    (folder / "bomb.png").write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match=f"cannot read image {folder / 'bomb.png'}: it is too large"):
        ImageNetVal(tmp_path / "val")[0]
