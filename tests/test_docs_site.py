"""The documentation site (issue 25): ``mkdocs build --strict`` from a clean copy, every gallery example executed,
and the built pages in a real browser (Debian's chromium driven by Playwright, as in test_serve_browser.py).

The build runs once per module in a temporary copy of what it reads (``mkdocs.yml``, ``docs/``, ``examples/``,
``benchmarks/RESULTS.md``; ``src`` linked), so earlier generated pages in the checkout are never reused and the
checkout is not written to. Strict mode turns a broken link, a missing API object or a failing example into a
failed build. Needs the ``docs`` extra (``pip install -e ".[docs]"``; ``test`` includes it).
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytest.importorskip("mkdocs_gallery", reason="the docs extra is not installed (pip install -e '.[docs]')")
pytest.importorskip("mkdocstrings", reason="the docs extra is not installed (pip install -e '.[docs]')")

ROOT = Path(__file__).resolve().parents[1]
from _browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

EXAMPLES = sorted(ROOT.glob("examples/plot_*.py"))
QUESTIONS = sorted(ROOT.glob("docs/questions/plot_*.py"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Build the site from a clean copy of its sources; returns the site directory."""
    work = tmp_path_factory.mktemp("docs-build")
    shutil.copy2(ROOT / "mkdocs.yml", work / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", work / "docs", ignore=shutil.ignore_patterns("generated", "__pycache__"))
    shutil.copytree(ROOT / "examples", work / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    (work / "benchmarks").mkdir()
    shutil.copy2(ROOT / "benchmarks" / "RESULTS.md", work / "benchmarks" / "RESULTS.md")
    (work / "src").symlink_to(ROOT / "src", target_is_directory=True)
    env = {**os.environ, "MPLBACKEND": "Agg", "NO_MKDOCS_2_WARNING": "1"}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(work / "mkdocs.yml"), "-d", str(work / "site")],
        cwd=work, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    seconds = time.monotonic() - start
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    pages = sorted((work / "site").rglob("index.html"))
    print(f"docs site: built in {seconds:.1f} s, {len(pages)} pages, {len(EXAMPLES) + len(QUESTIONS)} examples run")
    return work / "site"


def _page(site: Path, url_path: str) -> str:
    return (site / url_path / "index.html").read_text(encoding="utf-8")


def _images(html: str) -> list[str]:
    return re.findall(r'<img[^>]*\bsrc="([^"]+)"', html)


@pytest.mark.parametrize(
    "script", EXAMPLES + QUESTIONS, ids=[p.stem for p in EXAMPLES + QUESTIONS]
)  # fmt: skip
def test_every_example_ran_and_drew_its_figure(site, script):
    gallery = "gallery" if script.parent.name == "examples" else "questions"
    page = site / "generated" / gallery / script.stem
    html = _page(site, f"generated/{gallery}/{script.stem}")
    figures = [src for src in _images(html) if src.startswith("../images/mkd_glr_")]
    assert figures, f"{script.name}: no figure on its page"
    for src in figures:
        png = (page / src).resolve()
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", (script.name, src)
        assert png.stat().st_size > 2000, f"{script.name}: {src} is (nearly) empty"
    assert "Traceback" not in html, f"{script.name}: an error is shown on its page"


def test_site_pages_api_and_offline_assets(site):
    pages = sorted(site.rglob("index.html"))
    assert len(pages) >= 35, len(pages)
    # every existing Markdown page of docs/ is in the site (the nav), and the measured results too
    for md in sorted((ROOT / "docs").glob("*.md")):
        target = "" if md.name == "README.md" else md.stem
        assert (site / target / "index.html").is_file(), f"docs/{md.name} is not in the site"
    assert "Measured results" in _page(site, "results") or "RESULTS" in _page(site, "results")
    # the API reference is generated from the docstrings
    layers = _page(site, "api/layers")
    for name in ("alignnet.layers.BcosConv2d", "alignnet.layers.AddInverse", "alignnet.layers.explanation_mode"):
        assert f'id="{name}"' in layers, name
    assert 'id="alignnet.explain"' in _page(site, "api")
    # the ImageNet example says which weights it used: the cached release or the labelled random stand-in
    photo = _page(site, "generated/gallery/plot_02_imagenet_photo")
    assert "official B-cos v2 release (cached)" in photo or "RANDOM (untrained stand-in)" in photo
    # nothing that a browser would fetch from another host: scripts, stylesheets, images, fonts
    foreign = set()
    for path in site.rglob("*.html"):
        html = path.read_text(encoding="utf-8")
        foreign |= set(re.findall(r'<(?:script|img|iframe|source)[^>]*\bsrc="(https?://[^"]+)"', html))
        foreign |= set(re.findall(r'<link[^>]*\bhref="(https?://[^"]+)"', html))
    assert not foreign, foreign
    for css in site.rglob("*.css"):
        assert not re.search(r"url\(\s*['\"]?https?://", css.read_text(encoding="utf-8")), css


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason=f"chromium not found at {CHROMIUM} (apt-get install -y chromium)"
)
def test_pages_render_in_chromium_with_their_figures(site):
    playwright_sync = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    foreign: list[str] = []
    problems: list[str] = []
    try:
        with playwright_sync.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})

                def route(r):  # block and record every request to another host
                    host = urlparse(r.request.url).hostname
                    if r.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
                        r.continue_()
                    else:
                        foreign.append(r.request.url)
                        r.abort()

                page.route("**/*", route)
                page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                for path, min_images in (
                    ("/", 0),
                    ("/generated/gallery/", 10),  # the thumbnails
                    ("/generated/gallery/plot_01_five_lines/", 1),
                    ("/api/layers/", 0),
                ):
                    response = page.goto(base + path, wait_until="load")
                    assert response is not None and response.status == 200, path
                    page.wait_for_selector("article h1")
                    images = page.eval_on_selector_all(
                        "article img", "els => els.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
                    )
                    assert len(images) >= min_images, (path, images)
                    broken = [src for src, complete, width in images if not (complete and width > 0)]
                    assert not broken, f"{path}: images that did not load: {broken}"
                # the built-in search works offline
                page.goto(base + "/", wait_until="load")
                page.keyboard.press("/")
                page.fill("input.md-search__input", "explanation mode")
                page.wait_for_selector(".md-search-result__item", timeout=30_000)
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()
    assert foreign == [], f"the site requested other hosts: {foreign}"
    assert problems == [], problems
