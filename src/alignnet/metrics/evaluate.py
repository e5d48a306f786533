"""The evaluation runs behind ``alignnet evaluate``: several models and methods, sharded over ranks.

:func:`evaluate` runs one :class:`~alignnet.metrics.presets.Protocol` (localisation, docs/metrics.md#localisation-grid-pointing-game,
or pixel removal, docs/metrics.md#pixel-removal) for models and methods on this rank's shards
(:mod:`alignnet.metrics.sharding`), then rank 0 merges the shards into the same result files a
single process writes (``<metric>_<method>[_<model>].json`` / ``.npz``), ``summary.json`` and the
figures. :func:`run_job` does it for a picklable :class:`EvaluationJob` in one process of a
torchrun / SLURM job; :func:`run_processes` starts ``N`` such processes on this machine.

Layout of the work directory ``<out>/shards/``: ``predict-<key>/shard-NNNNN.npz`` (the dataset's
logits, for the grid selection), ``<stem>-<key>/shard-NNNNN.npz`` (scores or curves of a range of
grids or images), where ``<key>`` hashes everything the shard depends on (model weights, method
and its settings, protocol, data, batch and shard sizes): a changed setting never reuses old shards.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..attribution import attributor_parameters, check_forward_batch
from ..layers import eval_mode
from ._common import as_tensors, config_key, model_device, model_hash, resolve_method
from .localisation import LocalisationResult, localisation_scores, make_grids, summarise, tile_grids
from .pixel_removal import PixelRemovalResult, removal_counts, removal_curves, summarise_curves
from .presets import Protocol
from .sharding import (
    RankInfo,
    atomic_save_npz,
    barrier,
    detect_ranks,
    init_process_group,
    shard_device,
    shard_ranges,
    shards_of_rank,
    shutdown,
)

__all__ = [
    "EvaluationJob",
    "ablation_value",
    "evaluate",
    "evaluate_one",
    "predict_dataset",
    "run_job",
    "run_processes",
]

#: default shard sizes (items per shard file) when the protocol's shard_size is 0
DEFAULT_SHARD = {"localisation": 16, "pixel-removal": 64, "predict": 2048}
PREDICT_BATCH = 256


@dataclass(frozen=True)
class EvaluationJob:
    """What one evaluation needs, as plain values that every process can rebuild the run from."""

    models: tuple[str, ...]
    data: str
    methods: tuple[str, ...]
    protocol: Protocol
    out: str
    device: str = "cpu"
    ablation: str | None = None
    progress: bool = True
    loader_workers: int = 0
    method_configs: dict = field(default_factory=dict)
    forward_batch: int | None = None


# ----------------------------------------------------------------------------------------------- data


class _Items:
    """Random access to ``(image, label)`` of a tensor pair or a (lazy) dataset, by index arrays."""

    def __init__(self, dataset: Dataset | tuple[Tensor, Tensor]) -> None:
        lazy = not (
            isinstance(dataset, tuple) or (hasattr(dataset, "tensors") and not getattr(dataset, "transform", 1))
        )
        self.dataset = dataset
        self.tensors = None if lazy else as_tensors(dataset)

    def __len__(self) -> int:
        return len(self.tensors[1]) if self.tensors is not None else len(self.dataset)

    def labels(self) -> Tensor:
        if self.tensors is not None:
            return self.tensors[1]
        targets = getattr(self.dataset, "targets", None)
        if targets is not None:
            return torch.as_tensor(targets).long()
        return torch.as_tensor([self.dataset[i][1] for i in range(len(self.dataset))]).long()

    def get(self, indices: np.ndarray | Sequence[int]) -> tuple[Tensor, Tensor]:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self.tensors is not None:
            t = torch.from_numpy(idx)
            return self.tensors[0][t].float(), self.tensors[1][t]
        items = [self.dataset[int(i)] for i in idx]
        return torch.stack([x for x, _ in items]).float(), torch.as_tensor([y for _, y in items]).long()

    def key(self) -> str:
        """A fingerprint of the data: size, first item's shape and a sample of labels."""
        labels = self.labels()
        first = self.get([0])[0]
        return config_key(
            {"n": len(self), "shape": list(first.shape[1:]), "labels": labels[:: max(1, len(labels) // 997)].tolist()}
        )


@torch.no_grad()
def predict_dataset(
    model: nn.Module,
    items: _Items,
    work_dir: Path,
    info: RankInfo,
    device: torch.device,
    loader_workers: int = 0,
    progress: bool = True,
) -> Tensor:
    """Logits ``(N, K)`` of the whole dataset, predicted in shards by every rank, read by every rank."""
    n = len(items)
    ranges = shard_ranges(n, PREDICT_BATCH, DEFAULT_SHARD["predict"])
    key = config_key({"model": model_hash(model), "data": items.key(), "batch": PREDICT_BATCH})
    folder = work_dir / f"predict-{key}"

    def compute(indices: list[int], show: bool) -> None:
        with eval_mode(model):
            for i in tqdm(indices, disable=not show, desc="predict", unit="shard"):
                start, stop = ranges[i]
                if items.tensors is not None:
                    steps = range(start, stop, PREDICT_BATCH)
                    batches = (items.get(range(s, min(s + PREDICT_BATCH, stop)))[0] for s in steps)
                else:
                    subset = Subset(items.dataset, range(start, stop))
                    batches = (x for x, _ in DataLoader(subset, PREDICT_BATCH, num_workers=loader_workers))
                logits = torch.cat([model(x.to(device)).float().cpu() for x in batches])
                atomic_save_npz(_shard_file(folder, i), logits=logits.numpy())

    compute([i for i in shards_of_rank(len(ranges), info) if not _shard_file(folder, i).exists()], progress)
    barrier()
    # without a process group (ranks run one after the other) a rank computes what it cannot read yet
    compute([i for i in range(len(ranges)) if not _shard_file(folder, i).exists()], False)
    return torch.from_numpy(np.concatenate([_load(folder, i)["logits"] for i in range(len(ranges))]))


# ----------------------------------------------------------------------------------------------- shards


def _shard_file(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:05d}.npz"


def _load(folder: Path, index: int) -> dict[str, np.ndarray]:
    with np.load(_shard_file(folder, index)) as f:
        return {k: f[k] for k in f.files}


def _run_shards(
    folder: Path,
    ranges: list[tuple[int, int]],
    info: RankInfo,
    compute: Callable[[int, int], dict[str, np.ndarray]],
    desc: str,
    progress: bool,
) -> list[dict[str, np.ndarray]] | None:
    """Compute this rank's missing shards, wait for all ranks; rank 0 gets every shard's arrays, others None."""
    mine = [i for i in shards_of_rank(len(ranges), info) if not _shard_done(folder, i, ranges[i])]
    for i in tqdm(mine, disable=not progress, desc=desc, unit="shard"):
        start = time.perf_counter()
        arrays = compute(*ranges[i])
        seconds = np.float64(time.perf_counter() - start)
        atomic_save_npz(_shard_file(folder, i), seconds=seconds, range=np.asarray(ranges[i]), **arrays)
    barrier()
    if not info.is_main:
        return None
    missing = [i for i, r in enumerate(ranges) if not _shard_done(folder, i, r)]
    if missing:  # only without a process group (e.g. a rank died): say so, keep what exists
        raise RuntimeError(f"{folder}: shards {missing} are missing; run the same command again to compute them")
    return [_load(folder, i) for i in range(len(ranges))]


def _shard_done(folder: Path, index: int, expected: tuple[int, int]) -> bool:
    """Whether shard ``index`` exists for exactly the items ``expected`` (a run with more or fewer grids
    or images shares the whole shards of the same items; a shorter last shard is redone)."""
    path = _shard_file(folder, index)
    if not path.exists():
        return False
    with np.load(path) as f:
        return "range" in f.files and tuple(int(v) for v in f["range"]) == tuple(expected)


def _localisation(model, items, logits, name, attributor, protocol: Protocol, work_dir, info, progress):
    labels = items.labels()
    grids = make_grids(logits, labels, protocol.grid, protocol.n_grids, protocol.seed, protocol.confidence)
    if len(grids) == 0:
        raise ValueError("no grid could be formed: too few correctly and confidently classified images per class")
    n = protocol.grid**2
    classes = labels.numpy()[grids]
    device = model_device(model)
    first = tile_grids(items.get(grids[0])[0][None], protocol.grid, protocol.rescale).to(device)
    config = {
        "metric": "localisation",
        "model_hash": model_hash(model),
        "method": name,
        "method_config": attributor.prepare(first),
        **{k: v for k, v in protocol.record().items() if k in ("grid", "n_grids", "seed", "smooth", "confidence")},
        **({"rescale": True} if protocol.rescale else {}),  # absent when off: older shard keys stay valid
        "grids_made": len(grids),
        "data": {"n": len(items), "shape": list(first.shape[1:]), "grids_hash": config_key(grids.tolist())},
    }
    per_step = max(1, protocol.batch_size // n)  # whole grids per attribution call
    shard = protocol.shard_size or DEFAULT_SHARD["localisation"]
    ranges = shard_ranges(len(grids), per_step, shard)
    cells = torch.arange(n).repeat(per_step)

    def compute(start: int, stop: int) -> dict[str, np.ndarray]:
        scores = []
        for s in range(start, stop, per_step):
            chunk = grids[s : min(s + per_step, stop)]
            k = len(chunk)
            images = items.get(chunk)[0]
            tiled = tile_grids(images.view(k, n, *images.shape[1:]), protocol.grid, protocol.rescale)
            maps = attributor.attribute_maps(tiled.to(device), torch.from_numpy(classes[s : s + k]).to(device))
            maps = maps.reshape(k * n, *maps.shape[-2:])
            scores.append(localisation_scores(maps, cells[: k * n].to(maps.device), protocol.grid, protocol.smooth))
        return {"scores": torch.cat(scores).cpu().numpy()}

    # the key leaves out the number of grids: grid k is the same for any n_grids (make_grids draws them
    # in sequence), so a run with more grids reuses the shards of a shorter one
    shared = {k: v for k, v in config.items() if k not in ("n_grids", "grids_made", "data")}
    data = {"n": len(items), "shape": config["data"]["shape"], "first_grids": grids[:8].tolist()}
    key = config_key({**shared, "data": data, "batch_size": protocol.batch_size, "shard": -(-shard // per_step)})
    parts = _run_shards(
        work_dir / f"localisation-{name}-{key}", ranges, info, compute, f"localisation {name}", progress
    )
    if parts is None:
        return None
    scores = np.concatenate([p["scores"] for p in parts])
    seconds = float(sum(p["seconds"] for p in parts))
    return LocalisationResult(scores, grids, classes, config, summarise(scores), seconds)


def _pixel_removal(model, items, name, attributor, protocol: Protocol, work_dir, info, progress, forward_batch=None):
    n_images = min(protocol.n_images, len(items))
    device = model_device(model)
    first = items.get([0])[0].to(device)
    config = {
        "metric": "pixel-removal",
        "model_hash": model_hash(model),
        "method": name,
        "method_config": attributor.prepare(first),
        "n_images": int(n_images),
        "orders": list(protocol.orders),
        "fraction": float(protocol.fraction),
        "steps": int(protocol.steps),
        "removal": "zero in the model's input encoding",
        "tie_break": "random",
        "seed": int(protocol.removal_seed),
        "score": "sigmoid(target logit)",
    }
    shard = protocol.shard_size or DEFAULT_SHARD["pixel-removal"]
    ranges = shard_ranges(n_images, protocol.batch_size, shard)

    def compute(start: int, stop: int) -> dict[str, np.ndarray]:
        curves = {o: [] for o in protocol.orders}
        for s in range(start, stop, protocol.batch_size):
            x, t = items.get(range(s, min(s + protocol.batch_size, stop)))
            x, t = x.to(device), t.to(device)
            maps = attributor.attribute(x, t)
            for o in protocol.orders:
                p = removal_curves(
                    model, x, t, maps, o, protocol.fraction, protocol.steps, forward_batch, protocol.removal_seed, s
                )
                curves[o].append(p[1])
        return {f"curves_{o}": np.concatenate(c) for o, c in curves.items()}

    shared = {k: v for k, v in config.items() if k != "n_images"}  # more images reuse the shards of fewer
    key = config_key(
        {**shared, "data": items.key(), "batch_size": protocol.batch_size, "shard": -(-shard // protocol.batch_size)}
    )
    parts = _run_shards(
        work_dir / f"pixel_removal-{name}-{key}", ranges, info, compute, f"pixel removal {name}", progress
    )
    if parts is None:
        return None
    h, w = first.shape[-2:]
    fractions = removal_counts(h * w, protocol.fraction, protocol.steps) / (h * w)
    curves = {o: np.concatenate([p[f"curves_{o}"] for p in parts]) for o in protocol.orders}
    seconds = float(sum(p["seconds"] for p in parts))
    return PixelRemovalResult(fractions, curves, config, summarise_curves(fractions, curves), seconds)


def evaluate_one(
    model: nn.Module,
    dataset: Dataset | tuple[Tensor, Tensor],
    method: str,
    protocol: Protocol,
    work_dir: str | os.PathLike,
    info: RankInfo | None = None,
    method_config: dict | None = None,
    logits: Tensor | None = None,
    progress: bool = True,
    forward_batch: int | None = None,
) -> LocalisationResult | PixelRemovalResult | None:
    """One model and method on this rank's shards; the merged result on rank 0, None on the others.

    With one rank (the default) this is the whole evaluation in this process. ``logits``: the
    dataset's predictions, if already computed (localisation only). ``forward_batch``: masked copies
    per forward pass in pixel removal (memory and speed only; None: a pixel budget for the device).
    """
    info = info or RankInfo()
    forward_batch = check_forward_batch(forward_batch)
    items = dataset if isinstance(dataset, _Items) else _Items(dataset)
    work_dir = Path(work_dir)
    name, attributor = resolve_method(method, model, method_config)
    if protocol.metric == "localisation":
        if logits is None:
            logits = predict_dataset(model, items, work_dir, info, model_device(model), progress=progress)
        return _localisation(model, items, logits, name, attributor, protocol, work_dir, info, progress)
    return _pixel_removal(model, items, name, attributor, protocol, work_dir, info, progress, forward_batch)


# ----------------------------------------------------------------------------------------------- runs


def evaluate(
    models: Sequence[tuple[str, nn.Module]],
    dataset: Dataset | tuple[Tensor, Tensor],
    methods: Sequence[str],
    protocol: Protocol,
    out: str | os.PathLike,
    info: RankInfo | None = None,
    data_name: str = "",
    ablation: str | None = None,
    progress: bool = True,
    loader_workers: int = 0,
    method_configs: dict | None = None,
    forward_batch: int | None = None,
) -> dict:
    """Every model and method; rank 0 writes the result files, ``summary.json`` and the figures.

    Returns ``{model: {method: summary}}`` on rank 0 (``{}`` on the others). A method that is not
    defined for a model (e.g. guided backprop without ReLUs) is skipped with a note. ``forward_batch``:
    perturbed copies per forward pass, for pixel removal and for every method that takes it (occlusion,
    RISE, LIME, Integrated Gradients) unless its ``method_configs`` entry sets it; None: a pixel budget for
    the device (:func:`~alignnet.attribution.copies_per_pass`). Memory and speed only: the scores and the
    shard keys do not depend on it.
    """
    info = info or RankInfo()
    forward_batch = check_forward_batch(forward_batch)
    out = Path(out)
    work_dir = out / "shards"
    items = _Items(dataset)
    summaries: dict = {}
    results: dict[str, dict] = {}
    say = progress and info.is_main
    for spec, model in models:
        tag = Path(spec).stem if len(models) > 1 else ""
        logits = None
        if protocol.metric == "localisation":  # predicted once per model, not once per method
            logits = predict_dataset(model, items, work_dir, info, model_device(model), loader_workers, say)
        for method in methods:
            stem = f"{protocol.metric.replace('-', '_')}_{method}" + (f"_{tag}" if tag else "")
            config = dict((method_configs or {}).get(method) or {})
            if forward_batch is not None and "forward_batch" in attributor_parameters(method):
                config.setdefault("forward_batch", forward_batch)
            try:
                res = evaluate_one(model, items, method, protocol, work_dir, info, config, logits, say, forward_batch)
            except ValueError as exc:
                if "not defined for this model" in str(exc):
                    if info.is_main:
                        print(f"skipping {method}: {exc}", file=sys.stderr)
                    continue
                raise
            if res is None:
                continue
            res.config["model"] = spec
            res.config["protocol"] = protocol.record()
            res.save(out, stem)
            summaries.setdefault(spec, {})[method] = res.summary
            results.setdefault(spec, {})[method] = res
            print(f"{spec} {method}: {json.dumps(res.summary)} ({res.seconds:.1f} s)")
    if info.is_main:
        (out / "summary.json").write_text(
            json.dumps(
                {"metric": protocol.metric, "data": data_name, "protocol": protocol.record(), "results": summaries},
                indent=2,
            )
            + "\n"
        )
        write_figures(out, protocol, models, results, ablation)
    return summaries


def ablation_value(model: nn.Module, kind: str) -> float:
    """The model's temperature (``kind="temperature"``) or B-cos ``b`` (``kind="b"``)."""
    from ..layers import BcosConv2d, LogitLayer

    cls, attr = (LogitLayer, "temperature") if kind == "temperature" else (BcosConv2d, "b")
    for m in model.modules():
        if isinstance(m, cls):
            return float(getattr(m, attr))
    raise ValueError(f"--ablation {kind}: the model has no {cls.__name__} to read {attr} from")


def write_figures(out: Path, protocol: Protocol, models, results: dict, ablation: str | None) -> None:
    """Box plots / removal curves per model and, with ``ablation`` and several models, the ablation plot."""
    from . import plots

    for spec, per_method in results.items():
        suffix = f"_{Path(spec).stem}" if len(models) > 1 else ""
        if protocol.metric == "localisation":
            fig = plots.plot_localisation_boxes(
                {m: r.scores for m, r in per_method.items()}, grid=protocol.grid, title=Path(spec).stem
            )
            fig.savefig(out / f"localisation_boxes{suffix}.png", dpi=150)
        else:
            for o in protocol.orders:
                fig = plots.plot_pixel_removal(
                    {m: (r.fractions, r.mean_curve(o)) for m, r in per_method.items()}, order=o
                )
                fig.savefig(out / f"pixel_removal_{o}{suffix}.png", dpi=150)
    if ablation and len(models) > 1 and results:
        values = [ablation_value(model, ablation) for _, model in models]
        methods = sorted(set.intersection(*(set(r) for r in results.values())))
        if protocol.metric == "localisation":
            metric = {m: [results[spec][m].summary["mean"] for spec, _ in models] for m in methods}
            ylabel = "mean localisation"
        else:
            o = protocol.orders[0]
            metric = {m: [results[spec][m].summary[o]["final"] for spec, _ in models] for m in methods}
            ylabel = f"probability after {100 * protocol.fraction:g}% removed ({o} first)"
        xlabel = "temperature T" if ablation == "temperature" else "b"
        fig = plots.plot_ablation(values, metric, xlabel=xlabel, ylabel=ylabel, log_x=ablation == "temperature")
        fig.savefig(out / "ablation.png", dpi=150)
        (out / "ablation.json").write_text(
            json.dumps({"values": values, ablation: values, "metric": metric}, indent=2) + "\n"
        )


def run_job(job: EvaluationJob, info: RankInfo | None = None, init_method: str | None = None) -> dict:
    """One process of a sharded run: join the group, load the models and data, :func:`evaluate`, leave.

    ``info`` defaults to :func:`~alignnet.metrics.sharding.detect_ranks` (torchrun / SLURM).
    """
    from ..data.sources import dataset_from_spec
    from ..models import resolve_model

    info = info or detect_ranks()
    device = shard_device(job.device, info)
    init_process_group(info, device, init_method)
    try:
        models = []
        for spec in job.models:  # rank 0 first: a download happens once, then the others read the cache
            if not info.is_main:
                barrier()
            models.append((spec, resolve_model(spec, device, progress=job.progress and info.is_main)))
            if info.is_main:
                barrier()
        dataset = dataset_from_spec(job.data, getattr(models[0][1], "input_spec", None))
        return evaluate(
            models,
            dataset,
            job.methods,
            job.protocol,
            job.out,
            info,
            data_name=job.data,
            ablation=job.ablation,
            progress=job.progress,
            loader_workers=job.loader_workers,
            method_configs=job.method_configs,
            forward_batch=job.forward_batch,
        )
    finally:
        shutdown()


def _worker(rank: int, job: EvaluationJob, world: int, init_file: str, threads: int) -> None:
    torch.set_num_threads(threads)
    run_job(job, RankInfo(rank, world, rank, "processes"), init_method=f"file://{init_file}")


def run_processes(job: EvaluationJob, processes: int, threads: int | None = None) -> None:
    """Run ``job`` on ``processes`` worker processes of this machine (spawned, one gloo/nccl group).

    ``threads``: torch threads per worker (default: this process's threads divided among the workers).
    On CUDA, a plain ``"cuda"`` device gives worker ``r`` the GPU ``r`` (modulo the GPUs there are).
    """
    import torch.multiprocessing as mp

    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    threads = threads or max(1, torch.get_num_threads() // processes)
    with tempfile.TemporaryDirectory(prefix="alignnet-evaluate-") as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        mp.start_processes(
            _worker, args=(job, processes, init_file, threads), nprocs=processes, join=True, start_method="spawn"
        )
