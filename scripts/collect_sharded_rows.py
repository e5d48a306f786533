"""Markdown rows of the sharded Fashion-MNIST evaluations (issue 15) from their result files.

    python scripts/collect_sharded_rows.py [RUNS] [--copy DEST]   # RUNS: the OUT of scripts/run_sharded_tables.sh

Localisation: every ``RUNS/loc_*/localisation_<method>.json``; pixel removal: every
``RUNS/pr_*/pixel_removal_<method>.json``. Per method and model the run with the most maps (or images) is
kept (the ``_nN`` folders are copies of finished rounds). ``--copy DEST`` also copies the kept result files
(``.json`` and ``.npz``) to ``DEST/<run folder>/``, e.g. ``benchmarks/results/fmnist/sharded``, from which
``scripts/paper_figures.py`` draws the figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _largest(paths, size) -> dict[tuple[str, str], tuple[Path, dict]]:
    """``{(method, model): (path, result)}`` keeping, per key, the result with the largest ``size``."""
    kept: dict[tuple[str, str], tuple[Path, dict]] = {}
    for path in sorted(paths):
        d = _load(path)
        if d is None:
            continue
        key = (d["config"]["method"], d["config"]["model"])
        if key not in kept or size(d) > size(kept[key][1]):
            kept[key] = (path, d)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="?", default=Path("runs/sharded"))
    parser.add_argument("--copy", type=Path, help="copy the kept .json/.npz files here (one folder per run)")
    args = parser.parse_args()
    loc = _largest(args.runs.glob("loc_*/localisation_*.json"), lambda d: d["summary"]["n"])
    pr = _largest(args.runs.glob("pr_*/pixel_removal_*.json"), lambda d: d["config"]["n_images"] * d["config"]["steps"])
    print("| model | method | grids (maps) | mean | median | q25-q75 | seconds (shards) |")
    print("|---|---|---|---|---|---|---|")
    for (method, model), (_, d) in sorted(loc.items(), key=lambda kv: (kv[0][1], -kv[1][1]["summary"]["mean"])):
        s = d["summary"]
        print(
            f"| {model} | {method} | {d['config']['grids_made']} ({s['n']}) | {s['mean']:.3f} | {s['median']:.3f} | "
            f"{s['q25']:.3f}-{s['q75']:.3f} | {d['seconds']:.0f} |"
        )
    print()
    print(
        "| model | method | images | steps | p at 0% | least first, 25% | least AUC | most first, 25% | most AUC | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (method, model), (_, d) in sorted(
        pr.items(), key=lambda kv: (kv[0][1], -kv[1][1]["summary"]["least"]["final"])
    ):
        c, s = d["config"], d["summary"]
        print(
            f"| {model} | {method} | {c['n_images']} | {c['steps']} | {s['least']['start']:.3f} | "
            f"{s['least']['final']:.3f} | {s['least']['auc']:.3f} | {s['most']['final']:.3f} | {s['most']['auc']:.3f} "
            f"| {d['seconds']:.0f} |"
        )
    if args.copy:
        for path, _ in [*loc.values(), *pr.values()]:
            dest = args.copy / path.parent.name.rsplit("_n", 1)[0]
            dest.mkdir(parents=True, exist_ok=True)
            for src in (path, path.with_suffix(".npz")):
                shutil.copy2(src, dest / src.name)


if __name__ == "__main__":
    main()
