"""Data readers on real files (the embedded subset, Debian's Fashion-MNIST) and generated files."""

from __future__ import annotations

import gzip
import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from alignnet import data
from alignnet.data import (
    DEFAULT_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    CorruptImageError,
    cifar10,
    collate_skip_none,
    fashion_mnist_to_input,
    image_folder,
    load_embedded,
    load_image,
    read_fashion_mnist,
    read_idx,
)

HAVE_FMNIST = (DEFAULT_FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file()


def _write_idx(path, array: np.ndarray, compress: bool) -> None:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    if compress:
        payload = gzip.compress(payload)
    path.write_bytes(payload)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip_and_fashion_mnist_layout(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, compress)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labels, compress)
    x, y = read_fashion_mnist(tmp_path, "test")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    assert y.dtype == np.int64
    big = np.arange(12, dtype=">i4").reshape(3, 4)
    _write_idx(tmp_path / "ints.idx", big, compress=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "ints.idx"), np.arange(12).reshape(3, 4))


def test_idx_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04junk")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(tmp_path / "bad")
    images = np.zeros((5, 28, 28), np.uint8)
    _write_idx(tmp_path / "cut", images, compress=False)
    (tmp_path / "cut").write_bytes((tmp_path / "cut").read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "cut")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        read_fashion_mnist(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        read_fashion_mnist(tmp_path, "val")


def test_fashion_mnist_transform_pads_and_replicates():
    img = np.arange(28 * 28, dtype=np.int64).reshape(28, 28).astype(np.uint8)
    x = fashion_mnist_to_input(img)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert x[:, :2].abs().sum() == 0 and x[:, :, -2:].abs().sum() == 0  # zero border
    assert torch.allclose(x[0, 2:30, 2:30], torch.from_numpy(img).float() / 255)
    assert fashion_mnist_to_input(np.stack([img, img])).shape == (2, 3, 32, 32)
    with pytest.raises(TypeError):
        fashion_mnist_to_input(img.astype(np.float32))


def test_embedded_subset_balanced_and_matches_source():
    for split in ("train", "test"):
        ds = load_embedded(split)
        x, y = ds.tensors()
        assert x.shape == (1000, 3, 32, 32) and y.shape == (1000,)
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        assert np.bincount(y.numpy(), minlength=10).tolist() == [100] * 10
        image, label = ds[5]
        assert image.shape == (3, 32, 32) and label == int(y[5])
    assert len(FASHION_MNIST_CLASSES) == 10 and FASHION_MNIST_CLASSES[9] == "Ankle boot"
    aug = load_embedded("train", augment=True)
    torch.manual_seed(0)
    diffs = [not torch.equal(aug[i][0], aug._inputs[i]) for i in range(20)]
    assert any(diffs)  # random crop/flip changes most images
    with pytest.raises(ValueError, match="split"):
        load_embedded("validation")


@pytest.mark.skipif(not HAVE_FMNIST, reason="needs apt-get install dataset-fashion-mnist")
def test_embedded_subset_is_from_the_real_files():
    full_x, full_y = read_fashion_mnist(split="test")
    assert full_x.shape == (10000, 28, 28) and np.bincount(full_y).tolist() == [1000] * 10
    with np.load(data.datasets.resources.files("alignnet.data") / "fashion_mnist_subset.npz") as f:
        idx = f["test_source_index"]
        np.testing.assert_array_equal(full_x[idx], f["test_images"])
        np.testing.assert_array_equal(full_y[idx], f["test_labels"])


def _write_cifar(folder, n: int, names: list[str], seed: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        arr = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        with open(folder / name, "wb") as f:  # the real format: a protocol-2 pickle of a dict
            pickle.dump({"batch_label": name, "labels": labels, "data": arr, "filenames": ["x.png"] * n}, f, protocol=2)
        out[name] = (arr, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(data.CIFAR10_CLASSES), "num_vis": 3072}, f, protocol=2)
    return out


def test_cifar10_reader_on_generated_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    written = _write_cifar(folder, 4, [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"])
    test = cifar10(tmp_path, train=False)
    assert len(test) == 4
    x, y = test[2]
    arr, labels = written["test_batch"]
    expected = torch.from_numpy(arr[2].reshape(3, 32, 32)).float() / 255
    assert torch.allclose(x, expected) and y == labels[2]
    train = cifar10(folder, train=True)  # the batches directory itself works too
    assert len(train) == 20 and train[0][0].shape == (3, 32, 32)


def test_cifar10_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        cifar10(tmp_path, train=True)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(), "labels": [0]}, f)
    with pytest.raises(ValueError, match="not a CIFAR python batch"):
        cifar10(tmp_path, train=False)


def _make_folder(root, classes=("cat", "dog"), n=3, size=40):
    rng = np.random.default_rng(1)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_image_folder_train_val_and_split(tmp_path):
    _make_folder(tmp_path / "tv" / "train")
    _make_folder(tmp_path / "tv" / "val", n=2)
    train, val = image_folder(tmp_path / "tv", image_size=32)
    assert len(train) == 6 and len(val) == 4 and train.classes == ["cat", "dog"]
    x, y = train[0]
    assert x.shape == (3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1 and y == 0
    assert val[3][0].shape == (3, 32, 32) and val[3][1] == 1
    _make_folder(tmp_path / "flat", n=5)
    tr1, va1 = image_folder(tmp_path / "flat", image_size=224, val_fraction=0.3, seed=3)
    tr2, va2 = image_folder(tmp_path / "flat", image_size=224, val_fraction=0.3, seed=3)
    assert len(tr1) == 7 and len(va1) == 3 and tr1.indices == tr2.indices
    assert set(tr1.indices).isdisjoint(va1.indices)
    assert va1[0][0].shape == (3, 224, 224)
    with pytest.raises(FileNotFoundError, match="train/ and val/"):
        image_folder(tmp_path / "flat")
    with pytest.raises(FileNotFoundError):
        image_folder(tmp_path / "nope")


def test_image_folder_corrupt_files(tmp_path):
    _make_folder(tmp_path / "train")
    _make_folder(tmp_path / "val")
    bad = tmp_path / "train" / "dog" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    train, _ = image_folder(tmp_path, image_size=32)
    index = train.samples.index((str(bad), 1))
    with pytest.warns(UserWarning, match="broken.png"):
        assert train[index] is None
    assert train.skipped == 1
    loader = torch.utils.data.DataLoader(train, batch_size=len(train), collate_fn=collate_skip_none)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xb, yb = next(iter(loader))
    assert xb.shape == (6, 3, 32, 32) and yb.tolist().count(1) == 3
    strict, _ = image_folder(tmp_path, image_size=32, strict=True)
    with pytest.raises(CorruptImageError, match="broken.png"):
        strict[index]


def test_load_image_modes(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    x = load_image(tmp_path / "rgb.png")
    assert x.shape == (3, 5, 6) and torch.allclose(x, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
    grey = rgb[..., 0]
    Image.fromarray(grey).save(tmp_path / "grey.png")
    g = load_image(tmp_path / "grey.png")
    assert torch.equal(g[0], g[2]) and torch.allclose(g[1], torch.from_numpy(grey).float() / 255)
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    assert torch.allclose(load_image(tmp_path / "grey16.png"), g, atol=1e-6)
    rgba = np.concatenate([rgb, np.zeros((5, 6, 1), np.uint8)], axis=2)  # fully transparent -> white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert torch.allclose(load_image(tmp_path / "rgba.png"), torch.ones(3, 5, 6))
    Image.fromarray(rgb).convert("P").save(tmp_path / "pal.png")
    assert load_image(tmp_path / "pal.png").shape == (3, 5, 6)
    assert load_image(tmp_path / "rgb.png", size=4).shape == (3, 4, 4)
    assert load_image(tmp_path / "rgb.png", size=(8, 9)).shape == (3, 8, 9)
    (tmp_path / "junk.jpg").write_bytes(b"definitely not a jpeg")
    with pytest.raises(CorruptImageError, match="junk.jpg"):
        load_image(tmp_path / "junk.jpg")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")
