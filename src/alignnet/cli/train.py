"""``alignnet train``: train a registered model with a paper preset or a YAML config.

Examples::

    alignnet train --preset fmnist-bcos --output runs/fmnist-bcos
    alignnet train --preset bcos-cifar10-9l --set data.root=~/data --set model.args.b=1.5 --output runs/b15
    alignnet train --resume runs/b15                    # continue an interrupted run
    alignnet train --data imagefolder:photos --init-from fmnist_bcos -o runs/mine   # fine-tune on your classes
    alignnet train --data imagefolder:photos --init-from runs/x/model.safetensors --freeze-backbone -o runs/probe
    alignnet train --data csv:labels.csv --init-from fmnist_bcos -o runs/tags      # multi-label (path,labels CSV)
    alignnet train --preset imagenet-bcos-resnet50 --set data.root=/imagenet --devices 4 --strategy ddp -o runs/r50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError

__all__ = ["add_arguments", "resolve_config", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("Examples::", 1)[1]
    src = parser.add_argument_group("configuration")
    src.add_argument("--preset", help="a named preset (see --list-presets)")
    src.add_argument("--config", type=Path, help="a YAML config file (applied over the preset)")
    src.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one value, e.g. optimizer.lr=1e-3 or model.args.b=1.5 (repeatable)",
    )
    src.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    ft = parser.add_argument_group("fine-tuning (without --preset/--config: the finetune preset)")
    ft.add_argument(
        "--data",
        metavar="imagefolder:DIR|csv:FILE",
        help="train on DIR/<class>/<image> (or DIR/train + DIR/val), or on the images a CSV lists with their "
        "';'-separated labels (multi-label; docs/own-data.md)",
    )
    ft.add_argument(
        "--init-from", metavar="NAME_OR_FILE", help="start from a pretrained-weights name or a .safetensors model"
    )
    ft.add_argument("--freeze-backbone", action="store_true", help="train only the new head (a linear probe)")
    src.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    run_g = parser.add_argument_group("run")
    run_g.add_argument("-o", "--output", type=Path, help="run directory (checkpoints, metrics, config, model)")
    run_g.add_argument("--resume", type=Path, metavar="RUN_OR_CKPT", help="continue a run (its directory or a .ckpt)")
    run_g.add_argument("--overwrite", action="store_true", help="reuse an --output that already holds a run")
    run_g.add_argument("--epochs", type=int, help="shortcut for --set trainer.epochs=N")
    run_g.add_argument("--devices", help="shortcut for trainer.devices (a number or 'auto')")
    run_g.add_argument("--strategy", help="shortcut for trainer.strategy (ddp, ...)")
    run_g.add_argument("--accelerator", help="shortcut for trainer.accelerator (cpu, gpu, auto)")
    run_g.add_argument("--num-nodes", type=int, help="shortcut for trainer.num_nodes")
    run_g.add_argument("--strict", action="store_true", help="fail on the first unreadable image (default: skip it)")
    run_g.add_argument("--no-progress", action="store_true", help="no progress bars")


def resolve_config(args: argparse.Namespace):
    """The validated :class:`TrainConfig` from preset, config file, shortcuts and ``--set``."""
    from ..train.config import apply_overrides, config_from_dict, load_config, load_preset

    data: dict = {}
    if args.resume is not None and args.preset is None and args.config is None:
        run_dir = args.resume if args.resume.is_dir() else args.resume.parent.parent
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise FileNotFoundError(f"cannot resume: {saved} not found (pass --config or --preset)")
        data = load_config(saved)
    if args.preset:
        data = load_preset(args.preset)
    elif args.config is None and args.resume is None and (args.data or args.init_from):
        data = load_preset("finetune")
    if args.config:
        data = _merge(data, load_config(args.config))
    data_dir = None
    if args.data is not None:
        kind, _, data_dir = args.data.partition(":")
        if kind not in ("imagefolder", "csv") or not data_dir:
            raise InputError(
                f"--data {args.data!r}: use imagefolder:DIR (DIR/<class>/<image>) or csv:FILE (multi-label: a path "
                "and a 'labels' column, names separated by ';')"
            )
        if kind == "csv" and not data_dir.lower().endswith(".csv"):
            raise InputError(f"--data csv:FILE needs a .csv file, got {data_dir!r}")
    if data_dir is not None or args.init_from is not None:
        from ..train.finetune import finetune_settings

        data = finetune_settings(data, args.init_from, data_dir)
    shortcuts = []
    for flag, key in (
        ("epochs", "trainer.epochs"),
        ("devices", "trainer.devices"),
        ("strategy", "trainer.strategy"),
        ("accelerator", "trainer.accelerator"),
        ("num_nodes", "trainer.num_nodes"),
    ):
        value = getattr(args, flag)
        if value is not None:
            shortcuts.append(f"{key}={value}")
    if args.strict:
        shortcuts.append("data.strict=true")
    if args.freeze_backbone:
        shortcuts.append("model.freeze_backbone=true")
    if args.no_progress:
        shortcuts.append("trainer.progress_bar=false")
    return config_from_dict(apply_overrides(data, shortcuts + list(args.overrides)))


def _exported_epoch(output: Path) -> str:
    import json

    try:
        return str(json.loads((Path(output) / "summary.json").read_text())["exported_epoch"])
    except (OSError, KeyError, ValueError):
        return "?"


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def run(args: argparse.Namespace) -> int:
    from ..train.config import config_to_dict, list_presets

    if args.list_presets:
        for name in list_presets():
            print(name)
        return 0
    if args.preset is None and args.config is None and args.resume is None and not (args.data or args.init_from):
        raise InputError(
            "give --preset NAME, --config FILE, --resume RUN (see --list-presets) or --data imagefolder:DIR"
        )
    config = resolve_config(args)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
        return 0
    output = args.output
    if output is None:
        if args.resume is None:
            raise InputError("--output DIR is required")
        output = args.resume if args.resume.is_dir() else args.resume.parent.parent
    from ..train.runner import train

    result = train(config, output, resume=args.resume, overwrite=args.overwrite)
    if result.interrupted:
        return 130
    key = "val_map" if result.monitor == "val_map" else "val_acc"
    acc = result.metrics.get(key)
    if acc is not None:
        print(
            f"done: {result.epochs_completed} epochs in {result.wall_time_s:.0f} s, final {key} {acc:.4f} "
            f"(model.safetensors: the best {key}, epoch {_exported_epoch(output)}); "
            f"model: {Path(output) / 'model.safetensors'}",
            file=sys.stderr,
        )
    return 0
