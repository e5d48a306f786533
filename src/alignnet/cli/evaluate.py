"""``alignnet evaluate``: the localisation and pixel-removal metrics for several methods (and models).

Examples::

    alignnet evaluate --model src/alignnet/weights/fmnist_coda.safetensors --data fmnist \\
        --metric localisation --methods ours,grad,gradcam,occlusion9 --out results/coda
    alignnet evaluate --model a.safetensors --model b.safetensors --ablation temperature \\
        --metric localisation --methods ours --out results/t-ablation

Writes, into ``--out``: one ``<metric>_<method>[_<model>].json`` (summary and full config) and
``.npz`` (raw arrays) per run, ``summary.json`` with all summaries, and the figures
(``localisation_boxes.png``, ``pixel_removal_least.png`` / ``_most.png``, ``ablation.png``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

__all__ = ["add_arguments", "run", "load_dataset"]

from ..models import resolve_model
from ._common import MODEL_HELP

DEFAULT_METHODS = "ours,grad,ixg,intgrad,deeplift,gradcam,occlusion5,occlusion9,rise,lime"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME_OR_PATH",
        help=MODEL_HELP + "; repeat for ablations",
    )
    parser.add_argument(
        "--data",
        default="embedded",
        help="'embedded' (shipped Fashion-MNIST test subset), 'fmnist[:DIR]' (Fashion-MNIST test set), "
        "'cifar10:DIR' (CIFAR-10 test batch) or an .npz with 'images' (N,C,H,W) in [0,1] and 'labels'",
    )
    parser.add_argument("--metric", choices=("localisation", "pixel-removal"), required=True)
    parser.add_argument(
        "--methods", default=DEFAULT_METHODS, help=f"comma-separated, or 'all' (default: {DEFAULT_METHODS})"
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--grid", type=int, default=3, help="localisation: cells per side (default 3)")
    parser.add_argument("--n-grids", type=int, default=500, help="localisation: number of grids (default 500)")
    parser.add_argument("--seed", type=int, default=42, help="localisation: grid selection seed (default 42)")
    parser.add_argument(
        "--smooth", type=int, default=0, help="localisation: odd average-pool size before scoring (0: none)"
    )
    parser.add_argument("--n-images", type=int, default=1024, help="pixel removal: images (default 1024)")
    parser.add_argument("--steps", type=int, default=128, help="pixel removal: steps (default 128)")
    parser.add_argument("--fraction", type=float, default=0.25, help="pixel removal: largest removed fraction (0.25)")
    parser.add_argument("--orders", default="least,most", help="pixel removal: least and/or most important first")
    parser.add_argument("--ablation", choices=("temperature", "b"), help="plot the metric against each model's T or b")
    parser.add_argument("--batch-size", type=int, default=36, help="maps attributed per step")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-cache", action="store_true", help="localisation: do not keep/resume partial scores")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def load_dataset(spec: str):
    """The dataset named by ``--data`` (see its help)."""
    from .. import data

    kind, _, arg = spec.partition(":")
    if kind == "embedded":
        return data.load_embedded("test")
    if kind == "fmnist":
        return data.fashion_mnist(arg or None, split="test")
    if kind == "cifar10":
        if not arg:
            raise ValueError("--data cifar10:DIR needs the directory of the CIFAR-10 python batches")
        return data.cifar10(arg, train=False)
    path = Path(spec)
    if path.suffix == ".npz":
        if not path.exists():
            raise FileNotFoundError(f"no data file {path}")
        with np.load(path) as f:
            if "images" not in f or "labels" not in f:
                raise ValueError(f"{path} needs arrays 'images' (N, C, H, W) and 'labels' (N,)")
            return torch.from_numpy(f["images"]).float(), torch.from_numpy(f["labels"]).long()
    raise ValueError(f"unknown --data {spec!r}: use embedded, fmnist[:DIR], cifar10:DIR or a .npz file")


def _ablation_value(model: torch.nn.Module, kind: str) -> float:
    from ..layers import BcosConv2d, LogitLayer

    cls, attr = (LogitLayer, "temperature") if kind == "temperature" else (BcosConv2d, "b")
    for m in model.modules():
        if isinstance(m, cls):
            return float(getattr(m, attr))
    raise ValueError(f"--ablation {kind}: the model has no {cls.__name__} to read {attr} from")


def run(args: argparse.Namespace) -> int:
    from ..attribution import list_attributors
    from ..metrics import plots
    from ..metrics.localisation import evaluate_localisation
    from ..metrics.pixel_removal import evaluate_pixel_removal

    methods = list_attributors() if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in list_attributors()]
    if unknown:
        raise ValueError(f"unknown methods {', '.join(unknown)} (known: {', '.join(list_attributors())})")
    orders = tuple(o.strip() for o in args.orders.split(","))
    if any(o not in ("least", "most") for o in orders):
        raise ValueError(f"--orders must be least and/or most, got {args.orders!r}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "summary.json").exists():  # never replace earlier results without saying so
        print(
            f"note: {out} holds earlier results; summary.json, the figures and the result files of the same "
            "metric, method and model are replaced (localisation resumes from its cache)",
            file=sys.stderr,
        )
    dataset = load_dataset(args.data)
    models = [(spec, resolve_model(spec, args.device, progress=not args.quiet)) for spec in args.model]
    summaries: dict = {}
    results: dict[str, dict[str, object]] = {}
    for spec, model in models:
        tag = Path(spec).stem if len(models) > 1 else ""
        logits = None
        if args.metric == "localisation":  # predict the dataset once per model, not once per method
            from ..metrics._common import as_tensors, predict

            logits = predict(model, as_tensors(dataset)[0], device=args.device)
        for method in methods:
            stem = f"{args.metric.replace('-', '_')}_{method}" + (f"_{tag}" if tag else "")
            try:
                if args.metric == "localisation":
                    res = evaluate_localisation(
                        model,
                        dataset,
                        method,
                        grid=args.grid,
                        n_grids=args.n_grids,
                        seed=args.seed,
                        smooth=args.smooth,
                        batch_size=args.batch_size,
                        cache_dir=None if args.no_cache else out / "cache",
                        progress=not args.quiet,
                        logits=logits,
                    )
                else:
                    res = evaluate_pixel_removal(
                        model,
                        dataset,
                        method,
                        n_images=args.n_images,
                        orders=orders,
                        fraction=args.fraction,
                        steps=args.steps,
                        batch_size=args.batch_size,
                        progress=not args.quiet,
                    )
            except ValueError as exc:
                if "not defined for this model" in str(exc):
                    print(f"skipping {method}: {exc}", file=sys.stderr)
                    continue
                raise
            res.config["model"] = spec
            res.save(out, stem)
            summaries.setdefault(spec, {})[method] = res.summary
            results.setdefault(spec, {})[method] = res
            print(f"{spec} {method}: {json.dumps(res.summary)} ({res.seconds:.1f} s)")
    (out / "summary.json").write_text(
        json.dumps({"metric": args.metric, "data": args.data, "results": summaries}, indent=2) + "\n"
    )
    _figures(args, out, models, results, plots, orders)
    return 0


def _figures(args, out: Path, models, results, plots, orders) -> None:
    for spec, per_method in results.items():
        suffix = f"_{Path(spec).stem}" if len(models) > 1 else ""
        if args.metric == "localisation":
            fig = plots.plot_localisation_boxes(
                {m: r.scores for m, r in per_method.items()}, grid=args.grid, title=Path(spec).stem
            )
            fig.savefig(out / f"localisation_boxes{suffix}.png", dpi=150)
        else:
            for o in orders:
                fig = plots.plot_pixel_removal(
                    {m: (r.fractions, r.mean_curve(o)) for m, r in per_method.items()}, order=o
                )
                fig.savefig(out / f"pixel_removal_{o}{suffix}.png", dpi=150)
    if args.ablation and len(models) > 1:
        values = [_ablation_value(model, args.ablation) for _, model in models]
        methods = sorted(set.intersection(*(set(r) for r in results.values())))
        if args.metric == "localisation":
            metric = {m: [results[spec][m].summary["mean"] for spec, _ in models] for m in methods}
            ylabel = "mean localisation"
        else:
            metric = {m: [results[spec][m].summary[orders[0]]["final"] for spec, _ in models] for m in methods}
            ylabel = f"probability after {100 * args.fraction:g}% removed ({orders[0]} first)"
        xlabel = "temperature T" if args.ablation == "temperature" else "b"
        fig = plots.plot_ablation(values, metric, xlabel=xlabel, ylabel=ylabel, log_x=args.ablation == "temperature")
        fig.savefig(out / "ablation.png", dpi=150)
        (out / "ablation.json").write_text(
            json.dumps({"values": values, args.ablation: values, "metric": metric}, indent=2) + "\n"
        )
