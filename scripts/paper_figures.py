"""Combine the result files of ``scripts/run_paper_tables.sh`` (and the ablation runs) into the papers'
figures and Markdown tables.

    python scripts/paper_figures.py RUNS_DIR [--out FIGURES_DIR]

Reads every ``localisation_*.json`` / ``pixel_removal_*.json`` (with its ``.npz``) under RUNS_DIR, groups
them by model, and writes per model ``localisation_<model>.png`` (one box per method; methods evaluated on
fewer grids are labelled with their number of maps) and ``pixel_removal_<order>_<model>.png`` (every
method's mean curve), then prints the tables that benchmarks/RESULTS.md records.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from alignnet.metrics import plots


def collect(root: Path) -> dict:
    """``{"localisation": {model: [every run]}, "pixel-removal": {model: {method: the run with most images x steps}}}``."""
    found: dict = {"localisation": defaultdict(list), "pixel-removal": defaultdict(dict)}
    for path in sorted(root.rglob("*.json")):
        info = json.loads(path.read_text())
        metric = info.get("metric")
        if not isinstance(metric, str) or metric not in found or "config" not in info:
            continue
        cfg = info["config"]
        model = Path(str(cfg.get("model", "model"))).stem
        entry = {"info": info, "arrays": dict(np.load(path.with_suffix(".npz"))), "path": path}
        if metric == "localisation":
            found[metric][model].append(entry)
            continue
        entry["size"] = cfg["n_images"] * cfg["steps"]
        old = found[metric][model].get(cfg["method"])
        if old is None or entry["size"] > old["size"]:
            found[metric][model][cfg["method"]] = entry
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path)
    parser.add_argument("--out", type=Path, help="figure directory (default: RUNS/figures)")
    args = parser.parse_args()
    out = args.out or args.runs / "figures"
    out.mkdir(parents=True, exist_ok=True)
    found = collect(args.runs)
    for model in sorted(found["localisation"]):
        print(f"\n### localisation, {model}\n")
        print("| method | grids | maps | mean | median | q25-q75 | seconds |\n|---|---|---|---|---|---|---|")
        # every run, so that methods evaluated on a few grids are shown next to `ours` on the same grids
        runs = sorted(
            found["localisation"][model], key=lambda r: (-r["info"]["config"]["n_grids"], -r["info"]["summary"]["mean"])
        )
        # the figure: per method, its run with the most maps (labelled with the count when under 500 grids)
        largest: dict = {}
        for r in runs:
            name = r["info"]["config"]["method"]
            if name not in largest or len(r["arrays"]["scores"]) > len(largest[name]["arrays"]["scores"]):
                largest[name] = r
        scores = {}
        for name, r in sorted(largest.items(), key=lambda kv: -float(np.mean(kv[1]["arrays"]["scores"]))):
            n = len(r["arrays"]["scores"])
            scores[name if r["info"]["config"]["n_grids"] >= 500 else f"{name} ({n} maps)"] = r["arrays"]["scores"]
        for r in runs:
            name = r["info"]["config"]["method"]
            s, cfg = r["info"]["summary"], r["info"]["config"]
            n = len(r["arrays"]["scores"])
            q25, q75 = np.quantile(r["arrays"]["scores"], [0.25, 0.75])
            print(
                f"| {name} | {cfg['n_grids']} | {n} | {s['mean']:.3f} | {s['median']:.3f} | {q25:.3f}-{q75:.3f} "
                f"| {r['info']['seconds']:.0f} |"
            )
        fig = plots.plot_localisation_boxes(scores, grid=3, title=model)
        fig.savefig(out / f"localisation_{model}.png", dpi=150)
    for model, methods in sorted(found["pixel-removal"].items()):
        print(f"\n### pixel removal, {model}\n")
        print(
            "| method | images | steps | least-first: p at 0% | p at 25% | AUC | most-first: p at 25% | AUC "
            "| seconds |\n|---|---|---|---|---|---|---|---|---|"
        )
        rows = sorted(methods.items(), key=lambda kv: -kv[1]["info"]["summary"].get("least", {}).get("final", 0))
        cell = lambda d, k: f"{d[k]:.3f}" if k in d else "-"  # noqa: E731
        for name, r in rows:
            s, cfg = r["info"]["summary"], r["info"]["config"]
            least, most = s.get("least", {}), s.get("most", {})
            print(
                f"| {name} | {cfg['n_images']} | {cfg['steps']} | {cell(least, 'start')} | {cell(least, 'final')} "
                f"| {cell(least, 'auc')} | {cell(most, 'final')} | {cell(most, 'auc')} | {r['info']['seconds']:.0f} |"
            )
        # methods run on fewer images use the first N test images: give `ours` on the same images
        ours = methods.get("ours")
        for n in sorted({r["info"]["config"]["n_images"] for r in methods.values()} - {ours and ours["size"]}):
            if ours is None or n >= ours["info"]["config"]["n_images"]:
                continue
            a, fr = ours["arrays"], ours["arrays"]["fractions"]
            sub = {
                o: {
                    "start": float(a[f"curves_{o}"][:n, 0].mean()),
                    "final": float(a[f"curves_{o}"][:n, -1].mean()),
                    "auc": float(np.trapezoid(a[f"curves_{o}"][:n].mean(0), fr) / fr[-1]),
                }
                for o in ("least", "most")
                if f"curves_{o}" in a
            }
            least, most = sub.get("least", {}), sub.get("most", {})
            print(
                f"| ours, first {n} images | {n} | {ours['info']['config']['steps']} | {cell(least, 'start')} "
                f"| {cell(least, 'final')} | {cell(least, 'auc')} | {cell(most, 'final')} | {cell(most, 'auc')} | - |"
            )
        for order in ("least", "most"):
            curves = {
                (
                    name
                    if r["info"]["config"]["n_images"] >= 1024
                    else f"{name} ({r['info']['config']['n_images']} img)"
                ): (
                    r["arrays"]["fractions"],
                    r["arrays"][f"mean_{order}"],
                )
                for name, r in rows
                if f"mean_{order}" in r["arrays"]
            }
            if curves:
                fig = plots.plot_pixel_removal(curves, order=order, title=model)
                fig.savefig(out / f"pixel_removal_{order}_{model}.png", dpi=150)
    for path in sorted(args.runs.rglob("ablation.json")):
        ablation(path, out)
    print(f"\nfigures in {out}")


# CoDA-Net CIFAR-10 temperature ablation, docs/metrics.md#coda-net-on-cifar-10 (published result arrays)
PUBLISHED_T = {
    "localisation": ([10, 50, 100, 500, 1000, 5000], [0.314, 0.445, 0.637, 0.840, 0.912, 0.908]),
    "pixel-removal": ([10, 50, 100, 500, 1000, 5000], [0.628, 0.778, 0.805, 0.930, 0.962, 0.964]),
}


def ablation(path: Path, out: Path) -> None:
    """Redraw an ``alignnet evaluate --ablation`` result with the published CIFAR-10 curve (temperature)."""
    info = json.loads(path.read_text())
    kind = "temperature" if "temperature" in info else "b"
    metric = (
        "pixel-removal"
        if any(p.name.startswith("pixel_removal") for p in path.parent.glob("*.json"))
        else ("localisation")
    )
    values = info["values"]
    print(f"\n### {kind} ablation, {metric} ({path.parent.name})\n")
    print("| " + kind + " | " + " | ".join(f"{v:g}" for v in values) + " |")
    print("|---" * (len(values) + 1) + "|")
    for name, ys in info["metric"].items():
        print(f"| {name} | " + " | ".join(f"{y:.3f}" for y in ys) + " |")
    reference = None
    if kind == "temperature":
        xs, ys = PUBLISHED_T[metric]
        reference = {"CoDA paper, CIFAR-10": (xs, ys)}
    ylabel = "mean localisation" if metric == "localisation" else "probability after 25% removed (least first)"
    fig = plots.plot_ablation(
        values,
        info["metric"],
        xlabel="temperature T" if kind == "temperature" else "b",
        ylabel=ylabel,
        log_x=kind == "temperature",
        reference=reference,
    )
    fig.savefig(out / f"ablation_{kind}_{metric}.png", dpi=150)


if __name__ == "__main__":
    main()
