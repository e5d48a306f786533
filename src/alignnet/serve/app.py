"""The FastAPI application of the web explorer.

Routes
------
``GET /``                      the page (``static/index.html``; its script and style sheet under ``/static``)
``GET /api/info``              models, post-hoc methods, limits
``GET /api/examples``          the embedded Fashion-MNIST test images offered as examples
``GET /api/examples/{i}.png``  one example as PNG
``POST /api/explain``          top classes, colour explanation and contribution map
``POST /api/attribute``        post-hoc maps of 1-4 methods with their times
``GET /api/health``            ``{"status": "ok"}``

The two POST routes take the query parameters ``model``, ``target`` (class index; default the
predicted class), ``example`` (an embedded test image instead of an upload) and, for
``/api/attribute``, ``methods`` (comma-separated). An uploaded image is the raw request body
(``curl --data-binary @photo.jpg``), not a multipart form: the body is read in memory with the
size limit enforced while it streams in, so an upload is never written to disk (Starlette spools
multipart files over 1 MB to temporary files).

Load limits: at most ``max_pending`` explain/attribute requests are computed or waiting at once; more get
``429`` with ``Retry-After: 1`` ("busy, retry") and their body is read and dropped, never kept. Uploads are
decoded in the thread pool while holding their pixel count from one :class:`~alignnet.serve.backend.PixelBudget`
(decodes in progress hold at most ``max_pixels`` pixels together), and explanations wait for a free model
copy. Every refusal is a 4xx JSON ``{"detail": "..."}`` saying why.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .._version import __version__
from ..errors import InputError
from .backend import (
    DEFAULT_METHODS,
    MAX_METHODS,
    MAX_PENDING,
    MAX_PIXELS,
    MAX_UPLOAD_BYTES,
    PixelBudget,
    ServedModel,
    UploadError,
    attribute_methods,
    explain_image,
    load_upload,
    png_bytes,
    prepare_image,
)

__all__ = ["STATIC_DIR", "Limits", "create_app"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
EXAMPLES_PER_CLASS = 2


class _Examples:
    """The embedded test images offered on the page (loaded on first use)."""

    def __init__(self) -> None:
        self._data: tuple[torch.Tensor, list[int], list[int]] | None = None

    def get(self) -> tuple[torch.Tensor, list[int], list[int]]:
        if self._data is None:
            from ..data import load_embedded

            inputs, labels = load_embedded("test").tensors()
            chosen: list[int] = []
            for c in sorted(set(labels.tolist())):
                chosen += (labels == c).nonzero()[:EXAMPLES_PER_CLASS, 0].tolist()
            chosen.sort()
            self._data = (inputs, chosen, labels.tolist())
        return self._data


class Limits:
    """The app's load limits and counters (``app.state.limits``)."""

    def __init__(self, max_pending: int, max_pixels: int) -> None:
        if max_pending < 1:
            raise InputError(f"max_pending must be >= 1, got {max_pending}")
        self.max_pending = max_pending
        self.max_pixels = max_pixels
        self.budget = PixelBudget(max_pixels)
        self.pending = 0  # only touched on the event loop's thread: no lock needed
        self.refused = 0


def create_app(
    models: Sequence[ServedModel],
    methods: Sequence[str] | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pending: int = MAX_PENDING,
    max_pixels: int = MAX_PIXELS,
) -> FastAPI:
    """Build the app serving ``models`` (see :func:`alignnet.serve.backend.build_models`).

    Parameters
    ----------
    models:
        At least one :class:`ServedModel`; the first is the default.
    methods:
        Post-hoc methods offered on the page (default: every registered one except ``ours``).
    max_upload_bytes:
        Largest accepted upload.
    max_pending:
        Explain/attribute requests computed or waiting at once; more are answered 429 (busy, retry).
    max_pixels:
        Largest image decoded, and the pixels that the decodes in progress may hold together.
    """
    if not models:
        raise InputError("the explorer needs at least one model")
    by_id = {m.id: m for m in models}
    if methods is None:
        from ..attribution import list_attributors

        methods = [m for m in list_attributors() if m != "ours"]
    methods = list(methods)
    examples = _Examples()
    limits = Limits(max_pending, max_pixels)
    app = FastAPI(title="alignnet explorer", version=__version__, docs_url="/api/docs", redoc_url=None)
    app.state.limits = limits
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(UploadError)
    async def _upload_error(_request: Request, exc: UploadError) -> JSONResponse:
        headers = {"Retry-After": "1"} if exc.status == 429 else None
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/api/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/info")
    async def info() -> dict:
        return {
            "version": __version__,
            "models": [m.info() for m in models],
            "methods": methods,
            "default_methods": [m for m in DEFAULT_METHODS if m in methods][:MAX_METHODS],
            "max_methods": MAX_METHODS,
            "max_upload_bytes": max_upload_bytes,
            "max_pixels": max_pixels,
            "max_pending": max_pending,
        }

    @app.get("/api/examples")
    async def list_examples() -> list[dict]:
        from ..data import FASHION_MNIST_CLASSES

        _, chosen, labels = await run_in_threadpool(examples.get)
        return [{"index": i, "label": labels[i], "name": FASHION_MNIST_CLASSES[labels[i]]} for i in chosen]

    @app.get("/api/examples/{index}.png", response_class=Response)
    async def example_png(index: int) -> Response:
        await run_in_threadpool(examples.get)  # the first call reads the embedded file
        x = _example(index)
        return Response(png_bytes(x.permute(1, 2, 0).numpy()), media_type="image/png")

    def _example(index: int) -> torch.Tensor:
        inputs, _, _ = examples.get()
        if not 0 <= index < len(inputs):
            raise UploadError(f"example must be in [0, {len(inputs) - 1}], got {index}", 404)
        return inputs[index]

    def _model(model_id: str | None) -> ServedModel:
        if model_id is None or model_id == "":
            return models[0]
        if model_id not in by_id:
            raise UploadError(f"unknown model {model_id!r}; this server has {', '.join(by_id)}", 404)
        return by_id[model_id]

    async def _read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_upload_bytes:
            raise UploadError(
                f"the file is {int(length) / 1e6:.1f} MB; the limit is {max_upload_bytes / 1e6:.0f} MB", 413
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_upload_bytes:
                raise UploadError(f"the file is larger than the limit of {max_upload_bytes / 1e6:.0f} MB", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    @asynccontextmanager
    async def _admitted(request: Request) -> AsyncIterator[None]:
        """Count the request as pending, or answer 429 if ``max_pending`` already are."""
        if limits.pending >= limits.max_pending:
            limits.refused += 1
            # read the body to its end without keeping it: answering before it is read would close the
            # connection under a client that is still sending (a reset instead of the 429)
            size = 0
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_upload_bytes:
                    break
            raise UploadError(
                f"the server is busy ({limits.pending} requests in progress, the limit is {limits.max_pending}); "
                "retry in a moment",
                429,
            )
        limits.pending += 1
        try:
            yield
        finally:
            limits.pending -= 1

    async def _input(request: Request, served: ServedModel, example: int | None) -> tuple[torch.Tensor, dict]:
        body = await _read_body(request)
        if example is not None:
            if body:
                raise UploadError("send either an image or an example index, not both")
            await run_in_threadpool(examples.get)
            x = _example(example)
            if tuple(x.shape[1:]) == served.size:
                return x, {"example": example}
            x, notes = await run_in_threadpool(prepare_image, x, served)
            return x, {"example": example, **notes}
        # decoding and preparing in the thread pool (never on the event loop), under the pixel budget
        return await run_in_threadpool(load_upload, body, served, limits.budget, max_upload_bytes, max_pixels)

    @app.post("/api/explain")
    async def explain_route(
        request: Request, model: str | None = None, target: int | None = None, example: int | None = None
    ) -> dict:
        served = _model(model)
        async with _admitted(request):
            x, notes = await _input(request, served, example)
            result = await run_in_threadpool(explain_image, served, x, target)
        return {**result, "preprocessing": notes}

    @app.post("/api/attribute")
    async def attribute_route(
        request: Request,
        model: str | None = None,
        target: int | None = None,
        example: int | None = None,
        methods: str = ",".join(DEFAULT_METHODS),
    ) -> dict:
        served = _model(model)
        names = [m.strip() for m in methods.split(",") if m.strip()]
        if not 1 <= len(names) <= MAX_METHODS:
            raise UploadError(f"choose 1 to {MAX_METHODS} methods, got {len(names)}")
        unknown = [m for m in names if m not in offered]
        if unknown:
            raise UploadError(f"unknown method(s) {', '.join(unknown)}; offered: {', '.join(offered)}")
        async with _admitted(request):
            x, _notes = await _input(request, served, example)
            result = await run_in_threadpool(attribute_methods, served, x, target, names)
        return {"model": served.id, **result}

    offered = set(methods)
    return app
