"""API tests of the web explorer (``alignnet serve``) through FastAPI's TestClient."""

from __future__ import annotations

import base64
import io
import re
import threading
import time
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # starlette's notice about httpx vs httpx2
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

import alignnet  # noqa: E402
from alignnet.cli import main  # noqa: E402
from alignnet.data import FASHION_MNIST_CLASSES, load_embedded  # noqa: E402
from alignnet.serve.app import STATIC_DIR, create_app  # noqa: E402
from alignnet.serve.backend import (  # noqa: E402
    ServedModel,
    build_models,
    decode_image,
    explain_image,
    signed_map_rgba,
)

METHODS = ["grad", "gradcam", "ixg"]


def _served(name: str, replicas: int = 1, **kw) -> ServedModel:
    torch.manual_seed(0)
    model = alignnet.create_model(name, **kw)
    model.input_spec = alignnet.models.InputSpec((32, 32), style="fashion_mnist")  # as the shipped models
    return ServedModel(
        id=name,
        label=name,
        model=model,
        classes=FASHION_MNIST_CLASSES,
        size=(32, 32),
        style="fashion_mnist",
        trained=False,
        source=name,
        replicas=replicas,
    )


@pytest.fixture(scope="module")
def models() -> list[ServedModel]:
    return [_served("bcos_cifar10_9l", replicas=2, width=0.125), _served("coda_cifar10_9l", width=0.125)]


@pytest.fixture(scope="module")
def client(models) -> TestClient:
    return TestClient(create_app(models, methods=METHODS))


@pytest.fixture(scope="module")
def embedded():
    return load_embedded("test")


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _decode_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def _logits(served: ServedModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return served.model(x[None])[0]


def test_page_and_assets_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text
        assert client.get(asset).status_code == 200
    for path in STATIC_DIR.iterdir():  # works offline: nothing loaded from another host
        assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", path.read_text()), path.name
        assert "cdn" not in path.read_text().lower(), path.name


def test_info(client, models):
    info = client.get("/api/info").json()
    assert [m["id"] for m in info["models"]] == [m.id for m in models]
    assert info["models"][0]["classes"] == list(FASHION_MNIST_CLASSES)
    assert info["models"][0]["trained"] is False
    assert info["methods"] == METHODS
    assert info["max_upload_bytes"] == 10 * 1024 * 1024
    assert client.get("/api/health").json() == {"status": "ok"}


def test_examples(client, embedded):
    examples = client.get("/api/examples").json()
    assert len(examples) == 20
    assert sorted(e["label"] for e in examples) == sorted(list(range(10)) * 2)
    assert all(e["name"] == FASHION_MNIST_CLASSES[e["label"]] for e in examples)
    png = client.get(f"/api/examples/{examples[3]['index']}.png")
    assert png.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(png.content)))
    expected = embedded.tensors()[0][examples[3]["index"]].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(pixels, (expected * 255).round().astype(np.uint8))
    assert client.get("/api/examples/100000.png").status_code == 404


@pytest.mark.parametrize("model_index", [0, 1])
def test_explain_example(client, models, embedded, model_index):
    served = models[model_index]
    index = 7
    x = embedded.tensors()[0][index]
    r = client.post(f"/api/explain?model={served.id}&example={index}")
    assert r.status_code == 200, r.text
    e = r.json()
    logits = _logits(served, x)
    expected_top = torch.argsort(logits, descending=True)[:5].tolist()
    assert [c["index"] for c in e["top"]] == expected_top
    assert e["predicted"] == expected_top[0] == e["target"]
    assert e["target_name"] == FASHION_MNIST_CLASSES[expected_top[0]]
    probs = [c["probability"] for c in e["top"]]
    np.testing.assert_allclose(probs, torch.sigmoid(logits[expected_top]).numpy(), rtol=1e-5)
    assert probs == sorted(probs, reverse=True)
    # completeness: the logit is the sum of the contributions plus the bias
    assert e["logit"] == pytest.approx(float(logits[e["target"]]), rel=1e-4, abs=1e-5)
    assert e["contribution_sum"] + e["bias"] == pytest.approx(e["logit"], rel=1e-3, abs=1e-4)
    assert e["completeness_error"] < 1e-3
    # the maps are the model's own explanation
    ref = alignnet.explain(served.model, x[None], targets=e["target"])
    expected_map = (signed_map_rgba(ref.contributions[0]) * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(_decode_url(e["contributions"]), expected_map)
    expected_colour = (alignnet.colour_explanation(ref) * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(_decode_url(e["colour"]), expected_colour)
    assert _decode_url(e["input"]).shape == (32, 32, 3)
    assert e["preprocessing"] == {"example": index}
    assert e["explain_ms"] > 0 and e["wait_ms"] >= 0


def test_explain_other_target(client, models):
    e = client.post("/api/explain?model=bcos_cifar10_9l&example=0&target=3").json()
    assert e["target"] == 3 and e["target_name"] == "Dress"
    assert e["contribution_sum"] + e["bias"] == pytest.approx(e["logit"], rel=1e-3, abs=1e-4)
    bad = client.post("/api/explain?example=0&target=10")
    assert bad.status_code == 400 and "target must be a class index in [0, 9]" in bad.json()["detail"]


def test_upload_matches_example_and_inverts_light_backgrounds(client, models, embedded):
    """A raw 28x28 Fashion-MNIST PNG is preprocessed exactly like the embedded input."""
    index = 11
    raw = embedded.images[index]
    from_example = client.post(f"/api/explain?example={index}").json()
    uploaded = client.post("/api/explain", content=_png(raw), headers={"content-type": "image/png"}).json()
    assert uploaded["preprocessing"] == {"original_size": [28, 28], "inverted": False}
    _assert_same_top(uploaded["top"], from_example["top"])
    # the same item dark-on-white, in RGB (as a photo would be), is inverted back
    light = np.repeat((255 - raw)[..., None], 3, axis=-1)
    inverted = client.post("/api/explain", content=_png(light)).json()
    assert inverted["preprocessing"]["inverted"] is True
    _assert_same_top(inverted["top"], from_example["top"])


def _assert_same_top(a: list[dict], b: list[dict]) -> None:
    assert [c["index"] for c in a] == [c["index"] for c in b]
    np.testing.assert_allclose([c["logit"] for c in a], [c["logit"] for c in b], rtol=1e-5, atol=1e-5)


def test_upload_any_size_and_mode(client):
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(90, 60, 4), dtype=np.uint8)
    e = client.post("/api/explain?model=coda_cifar10_9l", content=_png(rgba)).json()
    assert e["preprocessing"]["original_size"] == [90, 60]
    assert len(e["top"]) == 5 and _decode_url(e["contributions"]).shape == (32, 32, 4)
    buf = io.BytesIO()
    Image.fromarray(rgba[..., :3]).save(buf, format="JPEG")
    assert client.post("/api/explain", content=buf.getvalue()).status_code == 200


@pytest.mark.parametrize(
    ("content", "status", "message"),
    [
        (b"", 400, "the upload is empty"),
        (b"#!/bin/sh\nrm -rf /\n", 415, "not an image we can read"),
        (b"%PDF-1.4\n" + b"x" * 100, 415, "not an image we can read"),
        (_png(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8))[:400], 415, "damaged or truncated"),
    ],
    ids=["empty", "script", "pdf", "truncated"],
)
def test_bad_uploads_rejected(client, content, status, message):
    r = client.post("/api/explain", content=content)
    assert r.status_code == status
    assert message in r.json()["detail"]


def test_upload_limits(models, client):
    r = client.post("/api/explain", content=b"\0" * (10 * 1024 * 1024 + 1))  # the default limit: 10 MB
    assert r.status_code == 413 and "the limit is 10 MB" in r.json()["detail"]
    small = TestClient(create_app(models, methods=METHODS, max_upload_bytes=2000))
    big = _png(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert len(big) > 2000
    r = small.post("/api/explain", content=big)
    assert r.status_code == 413 and "the limit is" in r.json()["detail"]

    def chunks():  # no content-length: the limit is enforced while the body streams in
        for i in range(0, len(big), 500):
            yield big[i : i + 500]

    r = small.post("/api/explain", content=chunks())
    assert r.status_code == 413 and "larger than the limit" in r.json()["detail"]
    # a small file that decodes to a huge image (decompression bomb) is refused before decoding
    bomb = io.BytesIO()
    Image.new("1", (8000, 6000)).save(bomb, format="PNG")
    assert len(bomb.getvalue()) < 100_000
    with pytest.raises(ValueError, match="8000x6000 pixels; the limit is 40 megapixels"):
        decode_image(bomb.getvalue())


def test_request_errors(client):
    assert client.post("/api/explain?model=nope&example=0").status_code == 404
    assert "unknown model 'nope'" in client.post("/api/explain?model=nope&example=0").json()["detail"]
    both = client.post("/api/explain?example=0", content=_png(np.zeros((28, 28), np.uint8)))
    assert both.status_code == 400 and "not both" in both.json()["detail"]
    assert client.post("/api/explain?example=99999").status_code == 404
    assert client.post("/api/explain?example=abc").status_code == 422
    r = client.post("/api/attribute?example=0&methods=grad,lime")
    assert r.status_code == 400 and "unknown method(s) lime" in r.json()["detail"]
    r = client.post("/api/attribute?example=0&methods=grad,gradcam,ixg,grad,grad")
    assert r.status_code == 400 and "choose 1 to 4 methods" in r.json()["detail"]


def test_attribute(client, models, embedded):
    served = models[0]
    x = embedded.tensors()[0][5]
    r = client.post("/api/attribute?model=bcos_cifar10_9l&example=5&target=2&methods=grad,gradcam")
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["target"] == 2 and a["target_name"] == "Pullover"
    assert [m["method"] for m in a["methods"]] == ["grad", "gradcam"]
    from alignnet.attribution import get_attributor

    for m in a["methods"]:
        assert m["ms"] > 0
        ref = get_attributor(m["method"], served.model).attribute(x[None], 2)[0].sum(0)
        expected = (signed_map_rgba(ref) * 255).round().astype(np.uint8)
        np.testing.assert_array_equal(_decode_url(m["map"]), expected)
    # default target: the predicted class
    a = client.post("/api/attribute?model=bcos_cifar10_9l&example=5&methods=ixg").json()
    assert a["target"] == int(_logits(served, x).argmax())


def test_concurrent_requests_match_serial(models, embedded):
    """Many threads on a model with 2 copies: every answer equals the serial one."""
    served = models[0]
    inputs = embedded.tensors()[0][:12]
    serial = [explain_image(served, x) for x in inputs]
    results: dict[int, dict] = {}

    def work(i: int) -> None:
        results[i] = explain_image(served, inputs[i], target=None)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, ref in enumerate(serial):
        assert results[i]["top"] == ref["top"]
        assert results[i]["contributions"] == ref["contributions"]
    # every copy went back to the pool, and none is left in explanation mode or training mode
    copies = []
    with served.borrow() as a, served.borrow() as b:
        copies = [a, b]
    assert copies[0] is not copies[1]
    assert all(not m.training for c in copies for m in c.modules())


def test_build_models_from_file_and_names(tmp_path):
    torch.manual_seed(1)
    model = alignnet.create_model("coda_cifar10_9l", width=0.125)
    model.class_names = FASHION_MNIST_CLASSES  # saved with the weights, with the input spec
    model.input_spec = alignnet.models.InputSpec((32, 32), style="fashion_mnist")
    path = tmp_path / "my_fmnist_coda.safetensors"
    alignnet.save_model(model, path)
    served = build_models([str(path), "bcos_cifar10_9l", str(path)])
    assert [s.id for s in served] == ["my_fmnist_coda", "bcos_cifar10_9l", "my_fmnist_coda-2"]
    assert served[0].trained and served[0].classes == FASHION_MNIST_CLASSES and served[0].style == "fashion_mnist"
    assert not served[1].trained and "UNTRAINED" in served[1].label
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(served[0].model(x), model.eval()(x))
    with pytest.raises(FileNotFoundError, match="no model file"):
        build_models([str(tmp_path / "missing.safetensors")])
    with pytest.raises(ValueError, match="did you mean bcos_cifar10_9l"):
        build_models(["bcos_cifar10_9"])


def test_default_models_are_labelled():
    served = build_models()
    assert [s.id for s in served] == ["fmnist_bcos", "fmnist_coda"]
    for s in served:
        assert s.classes == FASHION_MNIST_CLASSES
        assert s.trained == ("UNTRAINED" not in s.label)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--port", "70000"], "--port must be in 1..65535"),
        (["serve", "--workers", "0"], "--workers must be >= 1"),
        (["serve", "--methods", "grad,nope"], "unknown method(s) nope"),
        (["serve", "--model", "missing_model.safetensors"], "no model file"),
    ],
)
def test_cli_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_defaults_bind_localhost():
    from alignnet.cli import build_parser

    args = build_parser(load="serve").parse_args(["serve"])
    assert (args.host, args.port, args.model, args.workers) == ("127.0.0.1", 7860, [], None)
    args = build_parser(load="serve").parse_args(
        ["serve", "--model", "a.safetensors", "--model", "b", "--host", "0.0.0.0"]
    )
    assert args.model == ["a.safetensors", "b"] and args.host == "0.0.0.0"


# --- hostile uploads and load limits (issue 21) ------------------------------------------------------------


def _png_1bit(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of any size, written row by row (a decompression bomb when large)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_absurd_shapes_and_bombs_are_refused_before_decoding(client, monkeypatch):
    import alignnet.serve.backend as backend

    def never(*_a, **_k):
        raise AssertionError("the upload was decoded")

    monkeypatch.setattr(backend, "decode_image", never)
    for size in [(200_000, 2), (2, 200_000)]:
        for route in ("/api/explain", "/api/attribute?methods=grad"):
            r = client.post(route, content=_png_1bit(*size), headers={"content-type": "image/png"})
            assert r.status_code == 413, r.text
            detail = r.json()["detail"]
            assert (
                f"{size[0]}x{size[1]} pixels" in detail and "aspect ratio 100000:1 is over the limit of 100:1" in detail
            )
    r = client.post("/api/explain", content=_png_1bit(8000, 6000))
    assert r.status_code == 413 and "8000x6000 pixels; the limit is 40 megapixels" in r.json()["detail"]
    # Pillow's bomb error (above 179 MP), and its warning band (89-179 MP) caught by our 40 MP limit
    for size, message in [
        ((20_000, 10_000), "too large to decode safely: Image size (200000000 pixels) exceeds limit"),
        ((10_000, 9_500), "10000x9500 pixels; the limit is 40 megapixels"),
    ]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            r = client.post("/api/explain", content=_png_1bit(*size))
        assert r.status_code == 413 and message in r.json()["detail"], r.text
    assert client.get("/api/health").json() == {"status": "ok"}


def test_strip_within_limits_is_explained(client):
    r = client.post("/api/explain", content=_png_1bit(2000, 20))  # 100:1, the limit: accepted
    assert r.status_code == 200, r.text
    assert r.json()["preprocessing"]["original_size"] == [20, 2000]
    r = client.post("/api/explain", content=_png_1bit(2020, 20))  # 101:1
    assert r.status_code == 413 and "aspect ratio 101:1" in r.json()["detail"]


def test_pixel_budget_bounds_pixels_in_flight_in_arrival_order():
    from alignnet.serve.backend import PixelBudget

    budget = PixelBudget(100)
    peak, order, lock = [0], [], threading.Lock()

    def work(name: str, pixels: int, started: threading.Event) -> None:
        started.set()
        with budget.hold(pixels):
            with lock:
                peak[0] = max(peak[0], budget.used)
                order.append(name)

    with budget.hold(60):  # 60 of 100 held: 50 must wait, and so must 10 that arrives after it
        threads = []
        for name, pixels in [("fifty", 50), ("ten", 10), ("huge", 10**9)]:
            started = threading.Event()
            threads.append(threading.Thread(target=work, args=(name, pixels, started)))
            threads[-1].start()
            started.wait()
            time.sleep(0.05)  # it is waiting in hold() now
        assert order == [] and budget.used == 60
    for t in threads:
        t.join(10)
    assert order == ["fifty", "ten", "huge"]  # first come, first served; huge ran alone (held all 100)
    assert peak[0] <= 100 and budget.used == 0
    with pytest.raises(ValueError, match="pixel budget must be >= 1"):
        PixelBudget(0)


def test_busy_server_answers_429_and_recovers(models):
    app = create_app(models, methods=METHODS, max_pending=1)
    limits = app.state.limits
    upload = _png(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8))
    results: dict = {}
    with TestClient(app) as c:
        with limits.budget.hold(limits.budget.total):  # the first upload waits for pixels, still pending
            first = threading.Thread(target=lambda: results.setdefault("first", c.post("/api/explain", content=upload)))
            first.start()
            for _ in range(500):
                if limits.pending == 1:
                    break
                threading.Event().wait(0.01)
            assert limits.pending == 1
            busy = c.post("/api/explain", content=upload)
            assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
            assert "the server is busy (1 requests in progress, the limit is 1); retry" in busy.json()["detail"]
            assert c.post("/api/explain?example=3").status_code == 429  # examples are computed too
            assert c.get("/api/health").status_code == 200  # cheap routes are not limited
        first.join(30)
        assert results["first"].status_code == 200
        assert limits.pending == 0 and limits.refused == 2 and limits.budget.used == 0
        assert c.post("/api/explain", content=upload).status_code == 200
        info = c.get("/api/info").json()
        assert info["max_pending"] == 1 and info["max_pixels"] == 40_000_000


def test_banded_decoding_gives_the_same_tensor_as_pil_to_tensor(monkeypatch):
    """decode_image converts large images band by band (bounded temporaries): the numbers must not change."""
    import alignnet.serve.backend as backend
    from alignnet.data import pil_to_tensor

    monkeypatch.setattr(backend, "BAND_PIXELS", 64)  # bands of 2 rows of 37 pixels (the last one shorter)
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (23, 37, 4), dtype=np.uint8))
    palette = rgba.convert("RGB").quantize(16)
    palette.info["transparency"] = 3
    images = [rgba.convert(mode) for mode in ("1", "L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "PA")] + [palette]
    images.append(Image.fromarray(rng.integers(0, 65536, (23, 37), dtype=np.uint16)))  # I;16
    images.append(Image.fromarray(rng.random((23, 37), dtype=np.float32) * 300))  # F: scaled by the whole image
    for im in images:
        expected = pil_to_tensor(im)
        got = backend._to_tensor(im)
        assert got.shape == (3, 23, 37) and torch.equal(got, expected), im.mode
    # 32-bit images are converted at once (about 40 bytes a pixel): a quarter of the pixel limit
    buf = io.BytesIO()
    Image.new("I", (4000, 3000)).save(buf, format="TIFF", compression="tiff_deflate")
    with pytest.raises(ValueError, match="4000x3000 pixels of 32-bit values; the limit for those is 10 megapixels"):
        decode_image(buf.getvalue())
    buf = io.BytesIO()
    Image.new("I", (2000, 1250), 40000).save(buf, format="TIFF", compression="tiff_deflate")  # 2.5 MP: accepted
    x = decode_image(buf.getvalue())
    assert x.shape == (3, 1250, 2000) and float(x.min()) == float(x.max()) == pytest.approx(40000 / 65535)


def test_served_models_are_frozen_snapshots_with_the_model_s_explanations(tmp_path):
    """The server serves alignnet.freeze's copy (batch norms folded, rows normalised): the same logits and
    explanations as the saved model, and /api/info reports the model's own parameter count."""
    torch.manual_seed(2)
    model = alignnet.create_model("bcos_resnet18", num_classes=4, logit_bias=0.0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, alignnet.layers.BatchNormUncentered2d):
                m.running_var.uniform_(0.3, 2.0)
    model.input_spec = alignnet.models.InputSpec((32, 32))
    path = tmp_path / "rn.safetensors"
    alignnet.save_model(model, path)
    (served,) = build_models([str(path)])
    assert alignnet.models.is_frozen(served.model)
    assert not any(isinstance(m, alignnet.layers.BatchNormUncentered2d) for m in served.model.modules())
    assert served.info()["parameters"] == sum(p.numel() for p in model.parameters())
    x = torch.rand(2, 3, 32, 32)
    e, f = alignnet.explain(model.eval(), x), alignnet.explain(served.model, x)
    torch.testing.assert_close(f.logits, e.logits, rtol=1e-4, atol=1e-6 * float(e.logits.abs().max()))
    torch.testing.assert_close(f.weights, e.weights, rtol=1e-3, atol=1e-4 * float(e.weights.abs().max()))
