"""Markdown rows of the sharded Fashion-MNIST evaluations (issue 15) from their result files.

    python scripts/collect_sharded_rows.py [RUNS]     # RUNS: the OUT of scripts/run_sharded_tables.sh

Localisation: every ``RUNS/loc_<method>_<model>/localisation_<method>.json`` (the largest finished round);
pixel removal: every ``RUNS/pr_<method>_<model>/pixel_removal_<method>.json`` (and ``RUNS/pr_bcos``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def main() -> None:
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/sharded")
    loc: dict[tuple[str, str], dict] = {}
    for path in sorted(runs.glob("loc_*/localisation_*.json")):
        d = _load(path)
        if d is None or path.parent.name.rsplit("_n", 1)[-1].isdigit():
            continue  # the _nN copies repeat a round that the main folder holds too (or a larger one)
        method, model = d["config"]["method"], d["config"]["model"]
        loc[(method, model)] = d
    print("| method | model | grids (maps) | mean | median | q25-q75 | seconds (shards) |")
    print("|---|---|---|---|---|---|---|")
    for (method, model), d in sorted(loc.items()):
        s = d["summary"]
        print(
            f"| {method} | {model} | {d['config']['grids_made']} ({s['n']}) | {s['mean']:.3f} | {s['median']:.3f} | "
            f"{s['q25']:.3f}-{s['q75']:.3f} | {d['seconds']:.0f} |"
        )
    print()
    print(
        "| method | model | images | steps | p at 0% | least first, 25% | least AUC | most first, 25% | most AUC | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for path in sorted(runs.glob("pr_*/pixel_removal_*.json")):
        d = _load(path)
        if d is None or path.parent.name.rsplit("_n", 1)[-1].isdigit():
            continue
        c, s = d["config"], d["summary"]
        rows.append((c["method"], c["model"], c["n_images"], c["steps"], s, d["seconds"]))
    for method, model, n, steps, s, sec in sorted(rows, key=lambda r: (r[1], r[0])):
        print(
            f"| {method} | {model} | {n} | {steps} | {s['least']['start']:.3f} | {s['least']['final']:.3f} | "
            f"{s['least']['auc']:.3f} | {s['most']['final']:.3f} | {s['most']['auc']:.3f} | {sec:.0f} |"
        )


if __name__ == "__main__":
    main()
