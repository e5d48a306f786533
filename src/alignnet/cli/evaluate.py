"""``alignnet evaluate``: the localisation and pixel-removal metrics for several methods (and models).

Examples::

    alignnet evaluate --model fmnist_coda --data fmnist --metric localisation \\
        --methods ours,grad,gradcam,occlusion9 --out results/coda
    alignnet evaluate --model fmnist_bcos --data fmnist --metric localisation --processes 2 --out runs/x
    torchrun --standalone --nproc-per-node 8 -m alignnet evaluate --model bcos_resnet50 \\
        --data imagenet:/data/imagenet/val --preset bcos-v2-localisation --methods all --out runs/r50
    alignnet evaluate --model a.safetensors --model b.safetensors --ablation temperature \\
        --metric localisation --methods ours --out results/t-ablation
    alignnet evaluate --model runs/mine/model.safetensors --data imagefolder:photos/test   # accuracy
    alignnet evaluate --model runs/tags/model.safetensors --data csv:test.csv              # mAP, F1

Writes, into ``--out``: one ``<metric>_<method>[_<model>].json`` (summary and full config) and
``.npz`` (raw arrays) per run, ``summary.json`` with all summaries, the figures
(``localisation_boxes.png``, ``pixel_removal_least.png`` / ``_most.png``, ``ablation.png``) and
``shards/`` (the per-rank pieces; a killed run resumes from them: the same command again computes only
what is missing). Results of another run (other models, methods, protocol or data, or a model file whose
weights changed) are never replaced without ``--force``. Several models are evaluated each with its own
input spec (``--data imagenet:DIR`` is read at each model's resize and crop). The run itself lives in
:mod:`alignnet.metrics.evaluate`; this module only reads the arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..data.sources import DATA_HELP, dataset_from_spec
from ..errors import InputError
from ..metrics.presets import PRESETS, Protocol, get_preset, list_presets
from ..models import resolve_model
from ._common import MODEL_HELP, check_new_files

__all__ = ["add_arguments", "run", "load_dataset"]

DEFAULT_METHODS = "ours,grad,ixg,intgrad,deeplift,gradcam,occlusion5,occlusion9,rise,lime"
load_dataset = dataset_from_spec  # kept for callers of the old name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", action="append", required=True, metavar="NAME_OR_PATH", help=MODEL_HELP + "; repeat for ablations"
    )
    parser.add_argument("--data", default="embedded", help=DATA_HELP)
    parser.add_argument(
        "--metric",
        choices=("accuracy", "localisation", "pixel-removal"),
        help="accuracy: how well the model predicts the data's labels (top-1; mAP and F1 for a multi-label CSV); "
        "the default for --data imagefolder:DIR and csv:FILE, otherwise required unless --preset sets it",
    )
    parser.add_argument(
        "--threshold", type=float, help="accuracy on multi-label data: the F1 threshold (default: the model's)"
    )
    parser.add_argument(
        "--preset",
        choices=list_presets(),
        help="a paper's protocol; options given explicitly override it: "
        # argparse %-formats help strings: the descriptions' "25%" must be escaped
        + "; ".join(f"{k}: {p.description}" for k, p in sorted(PRESETS.items())).replace("%", "%%"),
    )
    parser.add_argument(
        "--methods", default=DEFAULT_METHODS, help=f"comma-separated, or 'all' (default: {DEFAULT_METHODS})"
    )
    parser.add_argument(
        "--out",
        help="output directory (required for localisation and pixel removal; accuracy writes accuracy.json there "
        "when given); one that holds the results of another run (other models, methods, protocol or data) "
        "is refused unless --force, while the same command again resumes from the finished shards",
    )
    parser.add_argument("--force", action="store_true", help="replace the results of another run in --out")
    d = Protocol()
    parser.add_argument("--grid", type=int, help=f"localisation: cells per side (default {d.grid})")
    parser.add_argument("--n-grids", type=int, help=f"localisation: number of grids (default {d.n_grids})")
    parser.add_argument("--seed", type=int, help=f"localisation: grid selection seed (default {d.seed})")
    parser.add_argument("--smooth", type=int, help="localisation: odd average-pool size before scoring (0: none)")
    parser.add_argument(
        "--confidence", type=float, help="localisation: cells need sigmoid(true logit) > this (default 0.5)"
    )
    parser.add_argument(
        "--rescale",
        action="store_true",
        default=None,
        help="localisation: shrink each image by 1/grid so a grid has the model's input size (for ViTs)",
    )
    parser.add_argument("--n-images", type=int, help=f"pixel removal: images (default {d.n_images})")
    parser.add_argument("--steps", type=int, help=f"pixel removal: steps (default {d.steps})")
    parser.add_argument("--fraction", type=float, help="pixel removal: largest removed fraction (0.25)")
    parser.add_argument("--orders", help="pixel removal: least and/or most important first (default least,most)")
    parser.add_argument("--ablation", choices=("temperature", "b"), help="plot the metric against each model's T or b")
    parser.add_argument("--batch-size", type=int, help=f"maps attributed per step (default {d.batch_size})")
    parser.add_argument("--shard-size", type=int, help="grids or images per shard file (default 16 grids / 64 images)")
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="worker processes on this machine (default 1; under torchrun or srun the ranks come from the launcher)",
    )
    parser.add_argument(
        "--forward-batch",
        type=int,
        help="perturbed copies per forward pass (occlusion, RISE, LIME, Integrated Gradients, pixel removal): "
        "memory and speed only, the scores do not change (default: a pixel budget for the device, "
        "128 copies of 32x32 on a CPU)",
    )
    parser.add_argument("--loader-workers", type=int, default=0, help="data loading processes per rank (ImageNet)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _protocol(args: argparse.Namespace) -> Protocol:
    base = get_preset(args.preset) if args.preset else Protocol(metric=args.metric or "localisation")
    if not args.preset and not args.metric:
        raise InputError("give --metric localisation|pixel-removal or a --preset")
    orders = tuple(o.strip() for o in args.orders.split(",")) if args.orders else None
    return base.with_values(
        metric=args.metric,
        grid=args.grid,
        n_grids=args.n_grids,
        seed=args.seed,
        smooth=args.smooth,
        confidence=args.confidence,
        rescale=args.rescale,
        n_images=args.n_images,
        steps=args.steps,
        fraction=args.fraction,
        orders=orders,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
    )


def _own_data(spec: str) -> bool:
    return spec.partition(":")[0] in ("imagefolder", "csv")


def run_accuracy(args: argparse.Namespace) -> int:
    """``--metric accuracy``: every model's labels on the data (each with its own input spec and class names)."""
    import json

    from ..metrics.evaluate import model_tags
    from ..metrics.multilabel import evaluate_labels

    if args.threshold is not None and not 0 < args.threshold < 1:
        raise InputError(f"--threshold must be in (0, 1), got {args.threshold}")
    out = Path(args.out) if args.out else None
    tags = model_tags(args.model) if len(args.model) > 1 else [""]
    files = [out / (f"accuracy_{t}.json" if t else "accuracy.json") for t in tags] if out else []
    check_new_files(files, args.force)
    results = []
    for spec in args.model:
        model = resolve_model(spec, args.device, progress=not args.quiet)
        if getattr(model, "class_names", None) is None and _own_data(args.data):
            print(f"note: {spec} has no class names: the data's sorted class names are taken as its classes 0, 1, ...")
        data = dataset_from_spec(args.data, getattr(model, "input_spec", None), getattr(model, "class_names", None))
        if isinstance(data, tuple):
            data = torch.utils.data.TensorDataset(*data)
        r = {"model": spec, "data": args.data, **evaluate_labels(model, data, args.threshold, progress=not args.quiet)}
        if r["multilabel"]:
            print(f"{spec} on {args.data}: mAP {r['map']:.4f}, macro F1 {r['f1']:.4f} at p >= {r['threshold']:g}, "
                  f"exact label sets {r['exact_match']:.4f} ({r['n']} images)")  # fmt: skip
        else:
            print(f"{spec} on {args.data}: accuracy {r['accuracy']:.4f} ({r['n']} images)")
        results.append(r)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for path, r in zip(files, results, strict=True):
            path.write_text(json.dumps(r, indent=1))
            print(f"-> {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.metric == "accuracy" or (args.metric is None and args.preset is None and _own_data(args.data)):
        return run_accuracy(args)
    if args.out is None:
        raise InputError("--out DIR is required for the localisation and pixel-removal metrics")
    if args.data.startswith("csv:"):
        raise InputError(
            "--data csv:FILE (multi-label) has accuracy only here; the multi-label localisation is "
            "alignnet.metrics.multilabel_localisation (docs/metrics.md#multi-label-localisation)"
        )
    from ..attribution import check_forward_batch, list_attributors
    from ..metrics.evaluate import EvaluationJob, evaluate, evaluation_conflicts, run_job, run_processes
    from ..metrics.sharding import detect_ranks

    methods = list_attributors() if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in list_attributors()]
    if unknown:
        raise InputError(f"unknown methods {', '.join(unknown)} (known: {', '.join(list_attributors())})")
    protocol = _protocol(args)
    if args.processes < 1:
        raise InputError(f"--processes must be >= 1, got {args.processes}")
    forward_batch = check_forward_batch(args.forward_batch, "--forward-batch")
    out = Path(args.out)
    info = detect_ranks()
    # before any model is loaded: a run of the same request resumes, anything else needs --force
    check_new_files(evaluation_conflicts(out, args.model, methods, protocol, args.data, args.ablation), args.force)
    out.mkdir(parents=True, exist_ok=True)
    job = EvaluationJob(
        models=tuple(args.model),
        data=args.data,
        methods=tuple(methods),
        protocol=protocol,
        out=str(out),
        device=args.device,
        ablation=args.ablation,
        progress=not args.quiet,
        loader_workers=args.loader_workers,
        forward_batch=forward_batch,
        force=args.force,
    )
    if info.world_size > 1:  # torchrun / srun: this process is one rank
        if args.processes > 1:
            raise InputError("--processes cannot be combined with torchrun/srun ranks; use the launcher's count")
        run_job(job, info)
    elif args.processes > 1:
        run_processes(job, args.processes)
    else:
        models = [(spec, resolve_model(spec, args.device, progress=not args.quiet)) for spec in args.model]
        evaluate(
            models, args.data, methods, protocol, out, ablation=args.ablation, progress=not args.quiet,
            loader_workers=args.loader_workers, forward_batch=job.forward_batch, force=args.force,
        )  # fmt: skip
    return 0
