"""``alignnet serve``: the local web explorer (see :mod:`alignnet.serve`)."""

from __future__ import annotations

import argparse

from ..errors import InputError

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

    from .._optional import require

    uvicorn = require("uvicorn", "alignnet serve")
    require("fastapi", "alignnet serve")
    from ..serve.app import create_app
    from ..serve.backend import build_models, default_replicas

    if not 0 < args.port < 65536:
        raise InputError(f"--port must be in 1..65535, got {args.port}")
    workers = default_replicas() if args.workers is None else args.workers
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    if args.torch_threads < 1:
        raise InputError(f"--torch-threads must be >= 1, got {args.torch_threads}")
    torch.set_num_threads(args.torch_threads)
    methods = None
    if args.methods:
        from ..attribution import list_attributors

        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in methods if m not in list_attributors()]
        if unknown:
            raise InputError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(list_attributors())}")
    models = build_models(args.model, replicas=workers)
    for m in models:
        print(f"model {m.id}: {m.label}")
    app = create_app(models, methods=methods)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding to {args.host} exposes the explorer to other machines")
    print(f"alignnet explorer on http://{'127.0.0.1' if args.host == '0.0.0.0' else args.host}:{args.port}/")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
