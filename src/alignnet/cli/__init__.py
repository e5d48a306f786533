"""The ``alignnet`` command line.

All argparse code lives in this package, one module per command (``alignnet.cli.<command>``), each a
thin adapter over the library with two functions, ``add_arguments(parser) -> None`` and
``run(args) -> int | None``. The library never imports this package. Command modules are imported
lazily, only for the subcommand that runs, so ``alignnet --help`` is fast and a missing optional
dependency only affects the command that needs it. ``python -m alignnet`` is the same as ``alignnet``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .._optional import extra_for
from ..errors import USER_ERRORS

__all__ = ["main", "COMMANDS"]

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("alignnet.cli.demo", "the main job: explain, compare and evaluate the shipped Fashion-MNIST models"),
    "explain": ("alignnet.cli.explain", "explain images with a model: colour explanations and contribution maps"),
    "compare": ("alignnet.cli.compare", "side-by-side figure of our explanation and post-hoc methods"),
    "video": ("alignnet.cli.video", "explain a video frame by frame and write frames and explanations side by side"),
    "toy": ("alignnet.cli.toy", "the B-cos toy figure: loss against weight angle for B in {1, 2, 50}"),
    "models": ("alignnet.cli.models", "list the registered models with parameter counts and input sizes"),
    "train": ("alignnet.cli.train", "train a registered model with a paper recipe or your own config"),
    "evaluate": ("alignnet.cli.evaluate", "localisation and pixel-removal metrics for ours and post-hoc methods"),
    "serve": ("alignnet.cli.serve", "local web explorer: upload an image, see what the model saw"),
}


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    """The parser; only subcommand ``load`` gets its full arguments (all with ``load='*'``)."""
    parser = argparse.ArgumentParser(
        prog="alignnet",
        description="Vision models that explain themselves: B-cos networks and CoDA-Nets.",
    )
    from .._version import __version__

    parser.add_argument("--version", action="version", version=f"alignnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if load in (name, "*"):
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                p.set_defaults(_import_error=exc)
                continue
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(load=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    error = getattr(args, "_import_error", None)
    if error is not None:
        return _missing(args.command, error)
    try:
        code = args._run(args)
    except ImportError as exc:
        if extra_for(exc) is None:
            raise  # not an optional package: a bug, keep the traceback
        return _missing(args.command, exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        # the user's input or machine (bad values, names, shapes, files, no network): one clear line, exit 2;
        # anything else (a plain ValueError from torch, a KeyError, ...) is a bug and keeps its traceback
        print(f"alignnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(code or 0)


def _missing(command: str, exc: BaseException) -> int:
    """One line naming the extra that ``command`` needs; exit code 2 (a traceback for anything else)."""
    extra = extra_for(exc)
    if extra is None:
        raise exc
    module = getattr(exc, "module", None) or getattr(exc, "name", "").split(".")[0]
    print(
        f'alignnet {command} needs the {extra} extra ({module} is not installed): pip install "alignnet[{extra}]"',
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
