"""``alignnet demo``: the main job on the embedded Fashion-MNIST data, no network, one HTML report.

Stages (each timed, each with a progress bar):

1. load the shipped B-cos and CoDA models (``alignnet/weights/fmnist_{bcos,coda}.safetensors``);
2. accuracy of both on the 1,000 embedded held-out test images;
3. explanations of a handful of test images: colour explanations and contribution maps of the
   top-3 classes;
4. our explanation next to GradCAM, Integrated Gradients and Occlusion for the same images;
5. localisation on 2x2 grids (docs/metrics.md#localisation-grid-pointing-game) for ours and those baselines;
6. a synthetic clip of real test images (translation, zoom, a second item entering) explained
   frame by frame, written as a GIF, with its stability (mean correlation of consecutive maps);
7. real photos and a real street clip explained by an ImageNet B-cos model, when one is already in
   the weights cache or named with ``--imagenet NAME`` (the demo never downloads on its own; without
   one the report says how to enable this stage);
8. ``index.html`` linking every figure, and a short text summary.

The B-cosified Fashion-MNIST model (``fmnist_bcosified``) joins the B-cos and CoDA models when this
installation has its weights.

Output folder: ``--out DIR``; a non-empty existing DIR is refused unless ``--force``. Without
``--out`` the demo writes to ``./alignnet-demo``, or to the first free ``./alignnet-demo-N`` when
that exists, so running it twice never overwrites anything.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from .errors import InputError

__all__ = ["DemoConfig", "DemoResult", "choose_output_dir", "run_demo"]

BASELINES = ("gradcam", "intgrad", "occlusion9")
METHODS = ("ours", *BASELINES)
# Cheaper settings for the localisation stage only (64x64 grids): Occlusion costs one forward pass
# per patch position, so stride 8 instead of the papers' 2 (64 instead of 784 passes per 64x64 grid;
# the 9x9 patches still overlap), and Integrated Gradients 20 steps instead of 50. The comparison
# figure uses the papers' settings.
LOCALISATION_CONFIGS: dict[str, dict] = {"intgrad": {"n_steps": 20}, "occlusion9": {"stride": 8}}


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; ``quick()`` is the small version the test suite runs."""

    n_images: int = 6  # explained and compared test images (one per class)
    n_grids: int = 4  # 2x2 localisation grids per model and method (4 scores each)
    localisation_methods: tuple[str, ...] = METHODS
    clip_frames: int = 36  # frames of the synthetic clip
    clip_size: int = 48  # side of the clip's square canvas (pixels)
    models: tuple[str, ...] = ("bcos", "coda", "bcosified")
    seed: int = 0
    imagenet_photos: int = 6  # real photos explained by the ImageNet model (stage 7)
    imagenet_frames: int = 16  # frames of the real street clip (stage 7)

    @classmethod
    def quick(cls) -> DemoConfig:
        return cls(
            n_images=3,
            n_grids=2,
            localisation_methods=("ours", "gradcam"),
            clip_frames=12,
            clip_size=40,
            imagenet_photos=3,
            imagenet_frames=4,
        )


@dataclass
class DemoResult:
    """What the demo measured: accuracy and stability per model, localisation means per model and
    method, seconds per stage, the report's path."""

    out_dir: Path
    report: Path | None = None
    accuracy: dict[str, float] = field(default_factory=dict)
    localisation: dict[str, dict[str, float]] = field(default_factory=dict)
    stability: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # process CPU time (all threads) per stage
    sources: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    imagenet: dict = field(default_factory=dict)  # stage 7: model, photos, predictions, clip stability

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


def choose_output_dir(out: Path | None, force: bool, default: str = "alignnet-demo") -> Path:
    """The demo's output folder (see the module doc for the policy)."""
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"--out {out} is a file, not a folder")
        if out.is_dir() and any(out.iterdir()) and not force:
            raise FileExistsError(
                f"{out} exists and is not empty; pass --force to overwrite its files or choose another --out"
            )
        return out
    candidate, k = Path(default), 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        k += 1
        candidate = Path(f"{default}-{k}")
    return candidate


class _Stage(contextlib.AbstractContextManager):
    """Prints ``[i/n] name`` and records the stage's wall and CPU time in ``result.seconds`` / ``cpu_seconds``.

    The CPU time (all threads of this process) tells how long the stage would take on cores that no other
    process shares; the wall time is what it took on this machine at this moment.
    """

    def __init__(self, result: DemoResult, index: int, total: int, name: str, verbose: bool) -> None:
        self.result, self.index, self.total, self.name, self.verbose = result, index, total, name, verbose

    def __enter__(self):
        if self.verbose:
            print(f"[{self.index}/{self.total}] {self.name} ...", flush=True)
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.result.seconds[self.name] = time.perf_counter() - self.start
        self.result.cpu_seconds[self.name] = time.process_time() - self.cpu_start
        if self.verbose and exc[0] is None:
            wall, cpu = self.result.seconds[self.name], self.result.cpu_seconds[self.name]
            print(f"      done in {wall:.1f} s (CPU {cpu:.1f} s)", flush=True)
        return False


def _pick_images(labels: Tensor, correct: Tensor, n: int) -> list[int]:
    """First correctly classified test image of classes 0, 1, ... (any image if none is correct)."""
    picks = []
    for c in range(int(labels.max()) + 1):
        idx = torch.nonzero((labels == c) & correct).flatten()
        if len(idx) == 0:
            idx = torch.nonzero(labels == c).flatten()
        if len(idx):
            picks.append(int(idx[0]))
        if len(picks) == n:
            break
    return picks


def _explanation_grid(model: nn.Module, images: Tensor, path: Path, title: str) -> float:
    """Rows: images; columns: image, then colour explanation + contribution map of each top-3 class.

    Returns the largest completeness error of the explanations.
    """
    from matplotlib.figure import Figure

    from .explanation import colour_explanation, explain, plot_contribution_map

    with torch.no_grad():
        top = model(images).topk(3, dim=1).indices
    e = explain(model, images, top)
    names = getattr(model, "class_names", None)
    n = len(images)
    fig = Figure(figsize=(1.45 * 7, 1.55 * n + 0.5), layout="constrained")
    axes = fig.subplots(n, 7, squeeze=False)
    probs = torch.sigmoid(e.logits)
    for i in range(n):
        axes[i, 0].imshow(images[i].permute(1, 2, 0).cpu().numpy())
        for k in range(3):
            c = int(top[i, k])
            label = names[c] if names else f"class {c}"
            rgba = colour_explanation(e, i, k)
            ax = axes[i, 1 + 2 * k]
            ax.imshow(rgba[..., :3] * rgba[..., 3:])
            ax.set_title(f"{k + 1}. {label} p={float(probs[i, c]):.2f}", fontsize=6.5)
            plot_contribution_map(e.contributions[i, k].cpu(), ax=axes[i, 2 + 2 * k])
    for ax in axes.flat:
        ax.set_axis_off()
    axes[0, 0].set_title("image", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=130)
    return e.completeness_error()


def run_demo(
    out_dir: Path,
    config: DemoConfig = DemoConfig(),
    models: dict[str, str] | None = None,
    progress: bool = True,
    verbose: bool = True,
    imagenet: str | None = None,
) -> DemoResult:
    """Run every stage, write the figures and ``index.html`` into ``out_dir``; returns the numbers.

    ``models`` maps ``"bcos"``/``"coda"``/``"bcosified"`` to a ``--model`` spec (default: the shipped
    models). ``imagenet``: the ImageNet weights of stage 7 (downloaded if needed: the user asked for
    them); None: the first official entry already in the cache, or the stage is skipped.
    """
    from .attribution import get_attributor
    from .data import FASHION_MNIST_CLASSES, load_embedded
    from .metrics import evaluate_localisation
    from .metrics.plots import compare_figure, plot_localisation_boxes
    from .models import resolve_model
    from .pretrained import list_pretrained
    from .video import explain_frames, render_panels, synthetic_clip, write_animation

    specs = {"bcos": "fmnist_bcos", "coda": "fmnist_coda"}
    if "fmnist_bcosified" in list_pretrained():
        specs["bcosified"] = "fmnist_bcosified"
    specs |= dict(models or {})
    specs = {k: v for k, v in specs.items() if v is not None and str(v).lower() != "none"}  # "none": skip it
    unknown = set(specs) - {"bcos", "coda", "bcosified"}
    if unknown:
        raise InputError(f"models must be keyed by 'bcos' / 'coda' / 'bcosified', got {sorted(unknown)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out_dir)
    kinds = [k for k in config.models if k in specs]
    total = 8
    torch.manual_seed(config.seed)

    with _Stage(result, 1, total, "load models", verbose):
        loaded: dict[str, nn.Module] = {}
        for kind in kinds:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = resolve_model(specs[kind], progress=progress)
            for w in caught:
                result.notes.append(f"{kind}: {w.message}")
                print(f"WARNING: {w.message}")
            model.class_names = FASHION_MNIST_CLASSES  # the demo's data
            loaded[kind] = model
            result.sources[kind] = getattr(model, "source", specs[kind])

    test = load_embedded("test")
    images, labels = test.tensors()
    logits: dict[str, Tensor] = {}
    with _Stage(result, 2, total, "accuracy on the embedded test set", verbose):
        from tqdm.auto import tqdm

        for kind, model in loaded.items():
            with torch.no_grad():
                chunks = range(0, len(images), 250)
                logits[kind] = torch.cat(
                    [
                        model(images[i : i + 250])
                        for i in tqdm(chunks, desc=f"predict {kind}", disable=not progress, leave=False)
                    ]
                )
            result.accuracy[kind] = float((logits[kind].argmax(1) == labels).float().mean())

    first = next(iter(loaded))
    picks = _pick_images(labels, logits[first].argmax(1) == labels, config.n_images)
    chosen = images[picks]
    completeness: dict[str, float] = {}
    with _Stage(result, 3, total, "explanations (top-3 classes)", verbose):
        for kind, model in loaded.items():
            completeness[kind] = _explanation_grid(
                model, chosen, out_dir / f"explanations_{kind}.png", f"{kind}: colour explanations and contributions"
            )

    with _Stage(result, 4, total, "comparison with post-hoc methods", verbose):
        for kind, model in loaded.items():
            fig = compare_figure(
                model, chosen, labels[picks], methods=METHODS, class_names=FASHION_MNIST_CLASSES, max_images=len(picks)
            )
            fig.savefig(out_dir / f"compare_{kind}.png", dpi=130)

    with _Stage(result, 5, total, "localisation (2x2 grids)", verbose):
        for kind, model in loaded.items():
            scores: dict[str, np.ndarray] = {}
            result.localisation[kind] = {}
            for method in config.localisation_methods:
                try:
                    loc = evaluate_localisation(
                        model,
                        (images, labels),
                        get_attributor(method, model, **LOCALISATION_CONFIGS.get(method, {})),
                        grid=2,
                        n_grids=config.n_grids,
                        progress=progress,
                        logits=logits[kind],
                    )
                except ValueError as exc:
                    result.notes.append(f"{kind} localisation skipped: {exc}")
                    break
                scores[method] = loc.scores
                result.localisation[kind][method] = float(loc.summary["mean"])
            if scores:
                title = f"{kind}: {len(next(iter(scores.values())))} cells of 2x2 grids"
                plot_localisation_boxes(scores, grid=2, title=title).savefig(
                    out_dir / f"localisation_{kind}.png", dpi=130
                )

    with _Stage(result, 6, total, "video: synthetic clip explained frame by frame", verbose):
        # a real test image of the first picked class moves, zooms, and an item of another class enters
        second = images[picks[min(1, len(picks) - 1)]] if len(picks) > 1 else images[1]
        clip = synthetic_clip(chosen[0], second, config.clip_frames, config.clip_size)
        for kind, model in loaded.items():
            video = explain_frames(model, clip, target=int(labels[picks[0]]), progress=progress)
            write_animation(out_dir / f"clip_{kind}.gif", render_panels(video), fps=8)
            result.stability[kind] = video.stability

    with _Stage(result, 7, total, "real photos and a street clip (ImageNet model)", verbose):
        result.imagenet = _imagenet_stage(out_dir, config, imagenet, progress)
        if verbose:
            print(f"      {result.imagenet['note']}")

    with _Stage(result, 8, total, "report", verbose):
        result.report = _write_report(result, out_dir, labels[picks[0]], completeness, config)
    return result


def _imagenet_stage(out_dir: Path, config: DemoConfig, name: str | None, progress: bool) -> dict:
    """Stage 7: real photos and a real clip explained by an ImageNet model, if one is at hand."""
    from .data import fit_to_model
    from .data.samples import sample_photos, sample_video
    from .explanation import explain
    from .pretrained import get_weights, is_cached, list_pretrained, load_pretrained

    if name is None:
        cached = [n for n in list_pretrained() if get_weights(n).dataset == "ImageNet" and is_cached(n)]
        if not cached:
            return {
                "note": "skipped: no ImageNet weights in the cache. To explain real photos and a street clip, run "
                "'alignnet demo --imagenet bcos_resnet18' (downloads the official B-cos ResNet-18 once, 45 MB; "
                "'alignnet models --pretrained' lists the others)"
            }
        name = cached[0]
    photos = sample_photos(config.imagenet_photos)
    if not photos:
        return {"note": "skipped: no real photos found (pip install scikit-image, or foolbox==3.3.4 --no-deps)"}
    model = load_pretrained(name, progress=progress)
    names = model.class_names
    inputs = torch.stack([fit_to_model(model, p) for p, _ in photos])
    e = explain(model, inputs)
    preds = [int(t) for t in e.targets]
    fig_path = out_dir / "imagenet_photos.png"
    _photo_grid(inputs, e, [names[t] for t in preds], [None if y is None else names[y] for _, y in photos], fig_path)
    info = {
        "model": name,
        "photos": [p.name for p, _ in photos],
        "predicted": [names[t] for t in preds],
        "labels": [None if y is None else names[y] for _, y in photos],
        "completeness": e.completeness_error(),
        "figure": fig_path,
    }
    labelled = [(t, y) for t, (_, y) in zip(preds, photos, strict=True) if y is not None]
    if labelled:
        info["top1"] = sum(t == y for t, y in labelled) / len(labelled)
    clip = sample_video()
    if clip is not None:
        from .video import explain_frames, read_video, render_panels, write_animation

        frames, _fps = read_video(clip, max_frames=config.imagenet_frames, stride=4)
        video = explain_frames(model, fit_to_model(model, frames), progress=progress)
        write_animation(out_dir / "imagenet_clip.gif", render_panels(video), fps=4)
        info |= {"clip": clip.name, "clip_class": names[int(video.target)], "stability": video.stability}
    info["note"] = f"{name}: {len(photos)} photos" + (f", clip {clip.name}" if clip is not None else "")
    return info


def _photo_grid(inputs: Tensor, e, predicted: list[str], labels: list[str | None], path: Path) -> None:
    from matplotlib.figure import Figure

    from .explanation import colour_explanation, plot_contribution_map

    n = len(inputs)
    fig = Figure(figsize=(2.2 * n, 6.6))
    axes = fig.subplots(3, n, squeeze=False)
    for i in range(n):
        axes[0, i].imshow(inputs[i].permute(1, 2, 0).numpy())
        truth = f"\n(label: {labels[i]})" if labels[i] else ""
        axes[0, i].set_title(f"{predicted[i][:22]}{truth[:32]}", fontsize=7)
        axes[1, i].imshow(colour_explanation(e, i))
        plot_contribution_map(e.contributions[i], ax=axes[2, i])
        for row in range(3):
            axes[row, i].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _write_report(
    result: DemoResult, out_dir: Path, clip_class, completeness: dict[str, float], config: DemoConfig
) -> Path:
    from .data import FASHION_MNIST_CLASSES
    from .report import Report

    report = Report(
        out_dir / "index.html",
        "alignnet demo: models that explain themselves",
        "B-cos network and CoDA-Net trained on Fashion-MNIST; every number below was measured by this run.",
    )
    for note in result.notes:
        report.warning(note)
    report.heading("Models and accuracy")
    report.text("Accuracy on the 1,000 held-out Fashion-MNIST test images embedded in the package (100 per class).")
    report.table(
        ["model", "weights", "test accuracy", "completeness error"],
        [
            [k, result.sources[k], f"{100 * result.accuracy[k]:.1f} %", f"{completeness.get(k, float('nan')):.1e}"]
            for k in result.accuracy
        ],
    )
    report.heading("Explanations of the top-3 classes")
    report.text(
        "Per image and class: the colour explanation (what colour and shape the model looks for, opacity = "
        "positive contribution) and the signed contribution map (red: evidence for the class, blue: against). "
        "The contributions plus the logit bias sum exactly to the logit (completeness error above)."
    )
    for kind in result.accuracy:
        report.figure(out_dir / f"explanations_{kind}.png", f"{kind}: colour explanations and contribution maps")
    report.heading("Ours against post-hoc explanations")
    report.text(f"The same images explained for their true class by ours and {', '.join(BASELINES)}.")
    for kind in result.accuracy:
        report.figure(out_dir / f"compare_{kind}.png", f"{kind}: {', '.join(METHODS)}")
    report.heading("Localisation (2x2 grid pointing game)")
    report.text(
        f"{config.n_grids} grids per model of 4 confidently classified images of different classes; the score is "
        "the share of positive attribution inside the explained class's cell (1 = perfect, 0.25 = uniform). "
        f"Baseline settings here (cheaper than the papers'): {LOCALISATION_CONFIGS}."
    )
    methods = config.localisation_methods
    rows = [[kind, *[result.localisation[kind].get(m, "n/a") for m in methods]] for kind in result.localisation]
    report.table(["model", *methods], rows)
    for kind in result.localisation:
        if (out_dir / f"localisation_{kind}.png").exists():
            report.figure(out_dir / f"localisation_{kind}.png", f"{kind}: localisation scores")
    report.heading("Explanations over time")
    name = FASHION_MNIST_CLASSES[int(clip_class)]
    report.text(
        f"A {config.clip_frames}-frame clip made of real test images (translation, zoom, a second item "
        f"entering), explained frame by frame for class {name!r}: frame | colour explanation | contributions. "
        "Stability = mean correlation of consecutive frames' contribution maps."
    )
    report.table(["model", "stability"], [[k, v] for k, v in result.stability.items()])
    for kind in result.stability:
        report.figure(out_dir / f"clip_{kind}.gif", f"{kind}: clip explained frame by frame")
    report.heading("Real photos and a street clip (ImageNet)")
    info = result.imagenet
    if "figure" in info:
        top1 = f" Top-1 on the labelled photos: {100 * info['top1']:.0f} %." if "top1" in info else ""
        report.text(
            f"Model {info['model']} (pretrained weights). Per photo: the image as the model saw it (predicted class, "
            f"and the photo's label when known), the colour explanation and the contribution map of the predicted "
            f"class. Completeness error {info['completeness']:.1e}.{top1}"
        )
        report.figure(info["figure"], "real photos: prediction, colour explanation, contributions")
        if "clip" in info:
            report.text(
                f"{info['clip']}: frames explained for {info['clip_class']!r} (the class predicted most often); "
                f"stability {info['stability']:.3f}."
            )
            report.figure(out_dir / "imagenet_clip.gif", "real street clip explained frame by frame")
    else:
        report.text(info.get("note", "skipped"))
    report.heading("Time")
    report.table(
        ["stage", "wall seconds", "CPU seconds"],
        [[k, v, result.cpu_seconds.get(k, float("nan"))] for k, v in result.seconds.items()],
    )
    report.text("Re-create: alignnet train --preset fmnist-bcos / fmnist-coda; rerun: alignnet demo.")
    return report.write()
