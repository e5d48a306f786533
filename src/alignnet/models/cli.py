"""``alignnet models``: a table of the registered models (name, parameters, input size, paper)."""

from __future__ import annotations

import argparse

import torch

from ._registry import create_model, list_models

__all__ = ["add_arguments", "run", "model_table"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pattern", default="*", help="shell-style filter on the names, e.g. 'bcos_resnet*'")
    parser.add_argument("--num-classes", type=int, default=None, help="count parameters for this many classes")


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


def run(args: argparse.Namespace) -> int:
    rows = model_table(args.pattern, args.num_classes)
    if not rows:
        raise ValueError(f"no model matches {args.pattern!r}; run 'alignnet models' for the list")
    header = ("name", "params", "input", "paper")
    table = [header] + [(n, f"{p / 1e6:.2f}M", s, paper) for n, p, s, paper in rows]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    for r in table:
        print(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")
    return 0
