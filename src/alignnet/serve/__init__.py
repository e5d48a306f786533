"""``alignnet serve``: a local web page to upload an image and see what the model saw.

The page shows the top-5 classes (sigmoid probabilities: the models are trained with BCE), the
colour explanation and the signed contribution map of the selected class (click another class to
explain it), 1-4 post-hoc methods side by side with their times, and a button that downloads the
whole figure as PNG.

Why FastAPI and a plain HTML page rather than Gradio: FastAPI/Starlette/uvicorn are three small
packages with no bundled front end (Gradio pulls in hundreds of MB and loads assets and fonts
from the internet unless configured otherwise), so the page works offline from three files under
``static/``; the API can be tested with ``httpx``/``TestClient`` without a browser; and we control
the limits ourselves (upload size checked while the body streams in, images decoded with a fixed
list of decoders and a pixel limit, nothing written to disk, per-model copies so concurrent
requests never share a model's hooks and flags).

Requests are computed in Starlette's thread pool, off the event loop; each model has ``--workers``
copies, so that many requests per model run at once and further ones wait for a free copy.
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME_OR_PATH",
        help="model to offer (repeatable): a file written by alignnet.save_model, a shipped model "
        "(fmnist_bcos, fmnist_coda) or a registry name (random weights, labelled untrained); "
        "default: the shipped Fashion-MNIST B-cos and CoDA models",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1, this machine only; 0.0.0.0 exposes the page to your network)",
    )
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated post-hoc methods offered on the page (default: all registered ones)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="copies of each model, i.e. requests per model computed at once (default: CPU count, at most 4)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads per request (default 1: small models gain more from parallel requests)",
    )


def run(args: argparse.Namespace) -> int:
    import torch
    import uvicorn

    from .app import create_app
    from .backend import build_models, default_replicas

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    workers = default_replicas() if args.workers is None else args.workers
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if args.torch_threads < 1:
        raise ValueError(f"--torch-threads must be >= 1, got {args.torch_threads}")
    torch.set_num_threads(args.torch_threads)
    methods = None
    if args.methods:
        from ..attribution import list_attributors

        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in methods if m not in list_attributors()]
        if unknown:
            raise ValueError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(list_attributors())}")
    models = build_models(args.model, replicas=workers)
    for m in models:
        print(f"model {m.id}: {m.label}")
    app = create_app(models, methods=methods)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding to {args.host} exposes the explorer to other machines")
    print(f"alignnet explorer on http://{'127.0.0.1' if args.host == '0.0.0.0' else args.host}:{args.port}/")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
