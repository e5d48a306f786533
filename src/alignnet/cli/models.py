"""``alignnet models``: a table of the registered architectures (name, parameters, input size, paper), or
with ``--pretrained`` of the pretrained weights (name, architecture, dataset, accuracy, where from)."""

from __future__ import annotations

import argparse

import torch

from ..errors import InputError
from ..models import create_model, list_models

__all__ = ["add_arguments", "run", "model_table"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pattern", default="*", help="shell-style filter on the names, e.g. 'bcos_resnet*'")
    parser.add_argument("--num-classes", type=int, default=None, help="count parameters for this many classes")
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="list the pretrained weights instead (shipped ones load offline; the others are downloaded "
        "once into $ALIGNNET_HOME, default ~/.cache/alignnet, when first used)",
    )


def model_table(pattern: str = "*", num_classes: int | None = None) -> list[tuple[str, int, str, str]]:
    """Rows ``(name, parameters, "HxW", paper)``; models are built on the meta device (no memory)."""
    rows = []
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    for name in list_models(pattern):
        with torch.device("meta"):
            model = create_model(name, **kwargs)
        h, w = model.input_spec.size
        rows.append((name, sum(p.numel() for p in model.parameters()), f"{h}x{w}", model.paper))
    return rows


def _pretrained(pattern: str) -> int:
    from ..pretrained import availability, cache_dir, get_weights, list_pretrained

    names = list_pretrained(pattern)
    if not names:
        raise InputError(f"no pretrained weights match {pattern!r}; run 'alignnet models --pretrained' for the list")
    table = [("name", "architecture", "dataset", "top-1", "source")]
    for n in names:
        e = get_weights(n)
        acc = f"{e.accuracy:.2f}%" if e.accuracy is not None else "-"
        table.append((n, e.arch + ("*" if e.default else ""), e.dataset, acc, availability(n)))
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    for r in table:
        print("  ".join(f"{c:<{w}}" for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"(* the architecture's default for create_model(arch, pretrained=True); cache: {cache_dir()})")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.pretrained:
        return _pretrained(args.pattern)
    rows = model_table(args.pattern, args.num_classes)
    if not rows:
        raise InputError(f"no model matches {args.pattern!r}; run 'alignnet models' for the list")
    header = ("name", "params", "input", "paper")
    table = [header] + [(n, f"{p / 1e6:.2f}M", s, paper) for n, p, s, paper in rows]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    for r in table:
        print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
    return 0
