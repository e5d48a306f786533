"""End-to-end test of ``alignnet serve`` in a real browser: Debian's chromium driven by Playwright.

The server runs in a thread (real uvicorn on a free localhost port) with the default models (the
shipped Fashion-MNIST ones, or their labelled untrained stand-ins). The browser uploads an
embedded test image, waits for the explanation and the post-hoc maps, checks the predicted class
against the model run directly, clicks another class, downloads the figure and saves a screenshot
to ``tests/artifacts/serve_browser.png``.

Needs ``pip install playwright`` (no ``playwright install``: the browser is Debian's) and
``apt-get install chromium``; skipped with the reason when either is missing.
"""

from __future__ import annotations

import io
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
playwright_sync = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
)

from PIL import Image  # noqa: E402

from _browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from alignnet.data import load_embedded  # noqa: E402
from alignnet.serve.app import create_app  # noqa: E402
from alignnet.serve.backend import build_models  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None, reason=f"chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    ),
]


class _ServerThread:
    """uvicorn serving ``app`` on an already bound localhost socket, in a daemon thread."""

    def __init__(self, app) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> _ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the explorer did not start within 30 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.fixture(scope="module")
def served():
    models = build_models(replicas=2)
    with _ServerThread(create_app(models)) as server:
        yield server, models


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_upload_explain_and_download_in_chromium(served, tmp_path):
    server, models = served
    data = load_embedded("test")
    index = 3
    raw = data.images[index]
    with torch.no_grad():
        logits = models[0].model(data.tensors()[0][index : index + 1])[0]
    order = torch.argsort(logits, descending=True).tolist()
    expected, second = models[0].classes[order[0]], models[0].classes[order[1]]

    foreign: list[str] = []
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
            page.on(
                "request",
                lambda r: None if r.url.startswith((server.url, "data:", "blob:")) else foreign.append(r.url),
            )
            page_errors: list[str] = []
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.goto(server.url + "/")
            page.wait_for_selector("#model-select option", state="attached")
            page.wait_for_selector("#examples button")  # the embedded examples are offered too
            badge_hidden = page.locator("#model-badge").is_hidden()
            assert badge_hidden == models[0].trained  # untrained stand-ins are labelled on the page

            # 1. upload an embedded test image (the raw 28x28 Fashion-MNIST PNG)
            page.set_input_files(
                "#file-input", files=[{"name": "item.png", "mimeType": "image/png", "buffer": _png(raw)}]
            )
            page.wait_for_function("document.getElementById('status').textContent === 'done'", timeout=120_000)
            assert page.locator("#error").is_hidden()
            predicted = page.locator("#predicted").inner_text()
            assert predicted.startswith(expected), (predicted, expected)
            assert page.locator("#top5 li").count() == 5

            # 2. the explanation images are there and not empty
            for selector in ("#input-img", "#colour-img", "#contrib-img"):
                assert page.eval_on_selector(selector, "img => img.complete && img.naturalWidth") == 32
            colour = _data_url_pixels(page.get_attribute("#colour-img", "src"))
            assert colour.shape == (32, 32, 4) and (colour[..., 3] > 0).sum() > 20
            contributions = _data_url_pixels(page.get_attribute("#contrib-img", "src"))
            assert (np.abs(contributions[..., :3].astype(int) - 255).sum(-1) > 30).sum() > 20  # not all white

            # 3. ours + the default post-hoc methods side by side, each with its time
            figures = page.locator("#methods figure")
            n_methods = 1 + page.locator("#method-choice input:checked").count()
            assert figures.count() == n_methods >= 3
            captions = [figures.nth(i).locator("figcaption").inner_text() for i in range(n_methods)]
            assert all(c.endswith(" ms") for c in captions), captions
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "serve_browser.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")

            # 4. clicking another class explains that class
            page.locator("#top5 button").nth(1).click()
            page.wait_for_function(
                f"document.getElementById('explained').textContent.startsWith({second!r})", timeout=60_000
            )
            page.wait_for_function("document.getElementById('status').textContent === 'done'", timeout=120_000)
            assert page.locator("#top5 button.active").inner_text().startswith(second)

            # 5. download the figure as PNG
            with page.expect_download() as info:
                page.click("#download")
            figure = tmp_path / "figure.png"
            info.value.save_as(figure)
            with Image.open(figure) as im:
                assert im.format == "PNG" and im.width >= 3 * 192 and im.height >= 192
            print(f"downloaded figure: {figure} ({figure.stat().st_size} bytes)")

            # 6. a file that is not an image gets a clear message on the page
            page.set_input_files(
                "#file-input", files=[{"name": "notes.png", "mimeType": "image/png", "buffer": b"not an image"}]
            )
            page.wait_for_selector("#error:not([hidden])")
            assert "not an image we can read" in page.locator("#error").inner_text()
            assert page_errors == []
        finally:
            browser.close()
    assert foreign == [], f"the page requested other hosts: {foreign}"


def _data_url_pixels(url: str) -> np.ndarray:
    import base64

    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
