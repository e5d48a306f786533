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
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from .._version import __version__
from .backend import (
    DEFAULT_METHODS,
    MAX_METHODS,
    MAX_UPLOAD_BYTES,
    ServedModel,
    UploadError,
    attribute_methods,
    decode_image,
    explain_image,
    png_bytes,
    prepare_image,
)

__all__ = ["STATIC_DIR", "create_app"]

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


def create_app(
    models: Sequence[ServedModel],
    methods: Sequence[str] | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
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
    """
    if not models:
        raise ValueError("the explorer needs at least one model")
    by_id = {m.id: m for m in models}
    if methods is None:
        from ..attribution import list_attributors

        methods = [m for m in list_attributors() if m != "ours"]
    methods = list(methods)
    examples = _Examples()
    app = FastAPI(title="alignnet explorer", version=__version__, docs_url="/api/docs", redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.exception_handler(UploadError)
    async def _upload_error(_request: Request, exc: UploadError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

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

    async def _input(request: Request, served: ServedModel, example: int | None) -> tuple[torch.Tensor, dict]:
        body = await _read_body(request)
        if example is not None:
            if body:
                raise UploadError("send either an image or an example index, not both")
            await run_in_threadpool(examples.get)
            x = _example(example)
            if tuple(x.shape[1:]) == served.size:
                return x, {"example": example}
            x, notes = prepare_image(x, served)
            return x, {"example": example, **notes}
        image = await run_in_threadpool(decode_image, body, max_upload_bytes)
        return prepare_image(image, served)

    @app.post("/api/explain")
    async def explain_route(
        request: Request, model: str | None = None, target: int | None = None, example: int | None = None
    ) -> dict:
        served = _model(model)
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
        x, notes = await _input(request, served, example)
        result = await run_in_threadpool(attribute_methods, served, x, target, names)
        return {"model": served.id, **result}

    offered = set(methods)
    return app
