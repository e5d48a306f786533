"""The evaluation runs behind ``alignnet evaluate``: several models and methods, sharded over ranks.

:func:`evaluate` runs one :class:`~alignnet.metrics.presets.Protocol` (localisation, docs/metrics.md#localisation-grid-pointing-game,
or pixel removal, docs/metrics.md#pixel-removal) for models and methods on this rank's shards
(:mod:`alignnet.metrics.sharding`), then rank 0 merges the shards into the same result files a
single process writes (``<metric>_<method>[_<model>].json`` / ``.npz``), ``summary.json`` and the
figures. :func:`run_job` does it for a picklable :class:`EvaluationJob` in one process of a
torchrun / SLURM job; :func:`run_processes` starts ``N`` such processes on this machine.

Layout of the work directory ``<out>/shards/``: ``predict-<key>/shard-NNNNN.npz`` (the dataset's
logits, for the grid selection), ``<stem>-<key>/shard-NNNNN.npz`` (scores or curves of a range of
grids or images), where ``<key>`` (:func:`_cache_folder`, the one place a key is made) hashes the
model's fingerprint (weights and the attributes that change its function: ``b``, temperature, ...),
the method and its settings, the protocol, batch and shard sizes, and every shard records the content
hash of the images and labels it was computed from: a changed input never reuses an old shard.
``<model>`` in the file names (several models only) is :func:`model_tags`: the stem of each model,
with its parent folders where stems collide.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from ..attribution import attributor_parameters, check_forward_batch
from ..errors import InputError
from ..layers import eval_mode
from ._common import (
    _json_default,
    as_tensors,
    config_key,
    hash_tensor,
    model_device,
    model_hash,
    resolve_method,
    unique_stems,
)
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
    "evaluation_conflicts",
    "model_tags",
    "predict_dataset",
    "run_job",
    "run_processes",
]

#: default shard sizes (items per shard file) when the protocol's shard_size is 0
DEFAULT_SHARD = {"localisation": 16, "pixel-removal": 64, "predict": 2048}
PREDICT_BATCH = 256
DIGEST_BATCH = 256  # items read per step when hashing the data


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
    force: bool = False


# ----------------------------------------------------------------------------------------------- data


class _Items:
    """Random access to ``(image, label)`` of a tensor pair or a (lazy) dataset, by index arrays."""

    def __init__(self, dataset: Dataset | tuple[Tensor, Tensor], loader_workers: int = 0) -> None:
        lazy = not (
            isinstance(dataset, tuple) or (hasattr(dataset, "tensors") and not getattr(dataset, "transform", 1))
        )
        self.dataset = dataset
        self.tensors = None if lazy else as_tensors(dataset)
        self.loader_workers = loader_workers
        self._digests: dict[bytes, str] = {}

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

    def batches(self, indices: np.ndarray | Sequence[int], batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """``(images, labels)`` of ``indices`` in batches (a lazy dataset is read by ``loader_workers`` processes).

        Reading all of them in batches of ``DIGEST_BATCH`` also records their :meth:`digest`, so that data
        read for a computation (the predictions) is not read a second time to be hashed.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if self.tensors is not None:
            chunks = (self.get(idx[s : s + batch_size]) for s in range(0, len(idx), batch_size))
        else:
            loader = DataLoader(Subset(self.dataset, idx.tolist()), batch_size, num_workers=self.loader_workers)
            chunks = ((x.float(), torch.as_tensor(y).long()) for x, y in loader)
        h = hashlib.sha256()
        for images, labels in chunks:
            hash_tensor(h, images)
            hash_tensor(h, labels)
            yield images, labels
        if batch_size == DIGEST_BATCH:
            self._digests[hashlib.sha256(idx.tobytes()).digest()] = h.hexdigest()[:16]

    def digest(self, indices: np.ndarray | Sequence[int]) -> str:
        """Content hash of the items ``indices``, in order: every image tensor and label as the metrics read them."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        memo = hashlib.sha256(idx.tobytes()).digest()
        if memo not in self._digests:
            for _ in self.batches(idx, DIGEST_BATCH):
                pass
        return self._digests[memo]


# ----------------------------------------------------------------------------------------------- shards


def _cache_folder(work_dir: Path, prefix: str, fingerprint: str, settings: dict) -> Path:
    """The folder of one cached computation, ``<prefix>-<key>``: the one place where a cache key is made.

    The key hashes ``fingerprint``, the model's :func:`~alignnet.metrics._common.model_hash` (weights, buffers and
    the Python attributes that change its function, such as ``b`` or the temperature), and ``settings`` (the
    method and its config, the protocol's values, how the work is cut). The data is not in the key but in
    every shard: a shard records the content hash of the items it was computed from (:meth:`_Items.digest`)
    and is recomputed when they differ, so a run on more grids or images shares the shards of the same items.
    """
    return work_dir / f"{prefix}-{config_key({'model': fingerprint, **settings})}"


def _shard_file(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:05d}.npz"


def _load(folder: Path, index: int) -> dict[str, np.ndarray]:
    with np.load(_shard_file(folder, index)) as f:
        return {k: f[k] for k in f.files}


def _shard_done(folder: Path, index: int, expected: tuple[int, int], digest: Callable[[], str] | None = None) -> bool:
    """Whether shard ``index`` exists for exactly the items ``expected`` (a run with more or fewer grids
    or images shares the whole shards of the same items; a shorter last shard is redone) and, when
    ``digest`` is given, was computed from items of the content hash ``digest()``."""
    path = _shard_file(folder, index)
    if not path.exists():
        return False
    with np.load(path) as f:
        if "range" not in f.files or tuple(int(v) for v in f["range"]) != tuple(expected):
            return False
        return digest is None or ("items" in f.files and str(f["items"]) == digest())


def _run_shards(
    folder: Path,
    ranges: list[tuple[int, int]],
    info: RankInfo,
    compute: Callable[[int, int], dict[str, np.ndarray]],
    digest: Callable[[int], str],
    desc: str,
    progress: bool,
    everyone: bool = False,
) -> list[dict[str, np.ndarray]] | None:
    """Compute this rank's missing shards, wait for all ranks; rank 0 gets every shard's arrays, others None.

    ``digest(i)``: the content hash of shard ``i``'s items; a shard file of other items is computed again.
    ``everyone``: every rank gets the arrays, computing what it cannot read (the predictions, which every
    rank needs), instead of rank 0 refusing to merge with a missing shard.
    """
    import torch.distributed as dist

    def done(i: int) -> bool:
        return _shard_done(folder, i, ranges[i], lambda: digest(i))

    def run(indices: list[int], show: bool) -> None:
        for i in tqdm(indices, disable=not show, desc=desc, unit="shard"):
            start = time.perf_counter()
            arrays = compute(*ranges[i])
            seconds = np.float64(time.perf_counter() - start)
            shard = {"seconds": seconds, "range": np.asarray(ranges[i]), "items": np.asarray(digest(i))}
            atomic_save_npz(_shard_file(folder, i), **shard, **arrays)

    mine = shards_of_rank(len(ranges), info)
    run([i for i in mine if not done(i)], progress)
    barrier()
    if not (info.is_main or everyone):
        return None
    # in a process group every rank has checked (or written) its own shards; without one (ranks run one
    # after the other) the other ranks' shards are checked here
    grouped = dist.is_available() and dist.is_initialized()
    checked = set(mine)
    missing = [
        i for i, r in enumerate(ranges) if not (_shard_done(folder, i, r) if grouped and i not in checked else done(i))
    ]
    if missing and everyone:
        run(missing, False)
    elif missing:  # only without a process group (e.g. a rank died): say so, keep what exists
        raise RuntimeError(f"{folder}: shards {missing} are missing; run the same command again to compute them")
    return [_load(folder, i) for i in range(len(ranges))]


@torch.no_grad()
def predict_dataset(
    model: nn.Module,
    items: _Items | Dataset | tuple[Tensor, Tensor],
    work_dir: Path,
    info: RankInfo,
    device: torch.device,
    loader_workers: int = 0,
    progress: bool = True,
) -> Tensor:
    """Logits ``(N, K)`` of the whole dataset, predicted in shards by every rank, read by every rank."""
    items = items if isinstance(items, _Items) else _Items(items, loader_workers)
    ranges = shard_ranges(len(items), PREDICT_BATCH, DEFAULT_SHARD["predict"])

    def compute(start: int, stop: int) -> dict[str, np.ndarray]:
        with eval_mode(model):
            logits = [model(x.to(device)).float().cpu() for x, _ in items.batches(range(start, stop), PREDICT_BATCH)]
        return {"logits": torch.cat(logits).numpy()}

    folder = _cache_folder(Path(work_dir), "predict", model_hash(model), {"batch": PREDICT_BATCH})
    digest = lambda i: items.digest(range(*ranges[i]))  # noqa: E731
    parts = _run_shards(folder, ranges, info, compute, digest, "predict", progress, everyone=True)
    return torch.from_numpy(np.concatenate([p["logits"] for p in parts]))


# ----------------------------------------------------------------------------------------------- one result


@dataclass
class _Plan:
    """One model and method, ready to run: the result's ``config`` is known before any shard is computed."""

    config: dict
    folder: Path
    ranges: list[tuple[int, int]]
    digests: list[str]
    compute: Callable[[int, int], dict[str, np.ndarray]]
    finish: Callable[[list[dict[str, np.ndarray]]], LocalisationResult | PixelRemovalResult]
    desc: str

    def run(self, info: RankInfo, progress: bool) -> LocalisationResult | PixelRemovalResult | None:
        parts = _run_shards(self.folder, self.ranges, info, self.compute, self.digests.__getitem__, self.desc, progress)
        return None if parts is None else self.finish(parts)


def _localisation(model, items: _Items, logits, name, attributor, protocol: Protocol, work_dir) -> _Plan:
    labels = items.labels()
    grids = make_grids(logits, labels, protocol.grid, protocol.n_grids, protocol.seed, protocol.confidence)
    if len(grids) == 0:
        raise InputError("no grid could be formed: too few correctly and confidently classified images per class")
    n = protocol.grid**2
    classes = labels.numpy()[grids]
    device = model_device(model)
    first = tile_grids(items.get(grids[0])[0][None], protocol.grid, protocol.rescale).to(device)
    per_step = max(1, protocol.batch_size // n)  # whole grids per attribution call
    shard = protocol.shard_size or DEFAULT_SHARD["localisation"]
    ranges = shard_ranges(len(grids), per_step, shard)
    digests = [items.digest(grids[start:stop]) for start, stop in ranges]
    record = protocol.record()
    settings = {
        "metric": "localisation",
        "method": name,
        "method_config": attributor.prepare(first),
        **{k: record[k] for k in ("grid", "seed", "smooth", "confidence", "rescale")},
    }
    config = {
        **settings,
        "model_hash": model_hash(model),
        "n_grids": protocol.n_grids,
        "grids_made": len(grids),
        "data": {
            "n": len(items),
            "shape": list(first.shape[1:]),
            "grids_hash": config_key(grids.tolist()),
            "items": config_key(digests),
        },
    }
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

    def finish(parts: list[dict[str, np.ndarray]]) -> LocalisationResult:
        scores = np.concatenate([p["scores"] for p in parts])
        seconds = float(sum(p["seconds"] for p in parts))
        return LocalisationResult(scores, grids, classes, config, summarise(scores), seconds)

    # the key leaves out the number of grids: grid k is the same for any n_grids (make_grids draws them
    # in sequence), so a run with more grids reuses the shards of a shorter one
    cut = {"batch_size": protocol.batch_size, "shard": -(-shard // per_step)}
    folder = _cache_folder(work_dir, f"localisation-{name}", config["model_hash"], {**settings, **cut})
    return _Plan(config, folder, ranges, digests, compute, finish, f"localisation {name}")


def _pixel_removal(model, items: _Items, name, attributor, protocol: Protocol, work_dir, forward_batch) -> _Plan:
    n_images = min(protocol.n_images, len(items))
    device = model_device(model)
    first = items.get([0])[0].to(device)
    shard = protocol.shard_size or DEFAULT_SHARD["pixel-removal"]
    ranges = shard_ranges(n_images, protocol.batch_size, shard)
    digests = [items.digest(range(start, stop)) for start, stop in ranges]
    settings = {
        "metric": "pixel-removal",
        "method": name,
        "method_config": attributor.prepare(first),
        "orders": list(protocol.orders),
        "fraction": float(protocol.fraction),
        "steps": int(protocol.steps),
        "removal": "zero in the model's input encoding",
        "tie_break": "random",
        "seed": int(protocol.removal_seed),
        "score": "sigmoid(target logit)",
    }
    config = {
        **settings,
        "model_hash": model_hash(model),
        "n_images": int(n_images),
        "data": {"shape": list(first.shape[1:]), "items": config_key(digests)},
    }

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

    def finish(parts: list[dict[str, np.ndarray]]) -> PixelRemovalResult:
        h, w = first.shape[-2:]
        fractions = removal_counts(h * w, protocol.fraction, protocol.steps) / (h * w)
        curves = {o: np.concatenate([p[f"curves_{o}"] for p in parts]) for o in protocol.orders}
        seconds = float(sum(p["seconds"] for p in parts))
        return PixelRemovalResult(fractions, curves, config, summarise_curves(fractions, curves), seconds)

    # more images reuse the shards of fewer
    cut = {"batch_size": protocol.batch_size, "shard": -(-shard // protocol.batch_size)}
    folder = _cache_folder(work_dir, f"pixel_removal-{name}", config["model_hash"], {**settings, **cut})
    return _Plan(config, folder, ranges, digests, compute, finish, f"pixel removal {name}")


def _plan(model, items, method, protocol, work_dir, info, method_config, logits, progress, forward_batch) -> _Plan:
    name, attributor = resolve_method(method, model, method_config)
    if protocol.metric == "localisation":
        if logits is None:
            logits = predict_dataset(model, items, work_dir, info, model_device(model), progress=progress)
        return _localisation(model, items, logits, name, attributor, protocol, work_dir)
    return _pixel_removal(model, items, name, attributor, protocol, work_dir, forward_batch)


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
    plan = _plan(model, items, method, protocol, Path(work_dir), info, method_config, logits, progress, forward_batch)
    return plan.run(info, progress)


# ----------------------------------------------------------------------------------------------- output files


def model_tags(specs: Sequence[str]) -> list[str]:
    """The name of each model in result file names: ``""`` for a single model, else a distinct label per
    model (its stem, with parent folders where stems collide: ``runs/bcos/model.safetensors`` and
    ``runs/coda/model.safetensors`` -> ``bcos_model``, ``coda_model``). A model given twice is an error."""
    twice = sorted({s for s in specs if list(specs).count(s) > 1})
    if twice:
        raise InputError(f"model {', '.join(map(repr, twice))} given twice: each model is evaluated once")
    return unique_stems(specs) if len(specs) > 1 else [""]


def _result_stem(protocol: Protocol, method: str, tag: str) -> str:
    return f"{protocol.metric.replace('-', '_')}_{method}" + (f"_{tag}" if tag else "")


def _figure_names(protocol: Protocol, tag: str) -> list[str]:
    suffix = f"_{tag}" if tag else ""
    if protocol.metric == "localisation":
        return [f"localisation_boxes{suffix}.png"]
    return [f"pixel_removal_{o}{suffix}.png" for o in protocol.orders]


def _request(specs, methods, protocol: Protocol, data_name: str, ablation: str | None) -> dict:
    """What ``summary.json`` records about the run besides its results: a run of the same request resumes."""
    return {
        "metric": protocol.metric,
        "data": data_name,
        "protocol": protocol.record(),
        "models": list(specs),
        "methods": list(methods),
        "ablation": ablation,
    }


def _outputs(out: Path, specs, methods, protocol: Protocol, data_name: str, ablation: str | None):
    """``{file: (record, section, expected)}`` for every file :func:`evaluate` writes into ``out``: the JSON file
    ``record`` that says what made ``file`` and what its ``section`` holds for a run of this request."""
    summary = out / "summary.json"
    request = _request(specs, methods, protocol, data_name, ablation)
    files = {summary: (summary, None, request)}
    for spec, tag in zip(specs, model_tags(specs), strict=True):
        for method in methods:
            record = out / f"{_result_stem(protocol, method, tag)}.json"
            expected = {"model": spec, "method": method, "protocol": protocol.record(), "dataset": data_name}
            files[record] = files[record.with_suffix(".npz")] = (record, "config", expected)
        for name in _figure_names(protocol, tag):
            files[out / name] = files[summary]
    if ablation and len(specs) > 1:
        files[out / "ablation.png"] = files[out / "ablation.json"] = files[summary]
    return files


def evaluation_conflicts(
    out: str | os.PathLike,
    specs: Sequence[str],
    methods: Sequence[str],
    protocol: Protocol,
    data_name: str,
    ablation: str | None = None,
) -> list[Path]:
    """The files that :func:`evaluate` would write into ``out`` and that exist from another run.

    A file written by a run of the same request (the same models, methods, protocol and data, as its
    ``summary.json`` or result file records) is not a conflict: running the same command again resumes
    from the finished shards and writes the same results (:func:`evaluate` still refuses to replace a
    result whose full config, e.g. the model's weights or the data's content, turns out to differ).
    """
    conflicts = []
    for file, (record, section, expected) in _outputs(Path(out), specs, methods, protocol, data_name, ablation).items():
        if not file.exists():
            continue
        try:
            saved = json.loads(record.read_text())
            saved = saved if section is None else saved.get(section)
            same = all(saved.get(k) == v for k, v in _as_json(expected).items())
        except (OSError, ValueError, AttributeError):
            same = False
        if not same:
            conflicts.append(file)
    return conflicts


def _as_json(value):
    return json.loads(json.dumps(value, default=_json_default))


def _refuse_to_replace(path: Path, new: dict, old: dict | None, what: str) -> None:
    """``FileExistsError`` when ``path`` exists and holds ``old`` (its JSON, read by the caller) != ``new``."""
    if old is None or old == new:
        return
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    raise FileExistsError(
        f"would overwrite {path}: it holds {what} (differing: {', '.join(differ)}); "
        "pass --force (force=True) to replace it or choose another --out"
    )


def _saved_json(path: Path, section: str | None = None) -> dict | None:
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return saved.get(section, {}) if section else saved


# ----------------------------------------------------------------------------------------------- runs


def _datasets(models, dataset, loader_workers: int) -> list[_Items]:
    """The data of each model: ``dataset`` for all, or, for a data spec (``"imagenet:DIR"``, ...), the data
    prepared with each model's own input spec (models with equal specs share one)."""
    from ..data.sources import dataset_from_spec

    if not isinstance(dataset, str):
        return [_Items(dataset, loader_workers)] * len(models)
    loaded: list[tuple[object, _Items]] = []
    out = []
    for _, model in models:
        spec = (getattr(model, "input_spec", None), getattr(model, "class_names", None))
        same = [items for s, items in loaded if s == spec]
        if not same:
            same = [_Items(dataset_from_spec(dataset, *spec), loader_workers)]
            loaded.append((spec, same[0]))
        out.append(same[0])
    return out


def evaluate(
    models: Sequence[tuple[str, nn.Module]],
    dataset: Dataset | tuple[Tensor, Tensor] | str,
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
    force: bool = False,
) -> dict:
    """Every model and method; rank 0 writes the result files, ``summary.json`` and the figures.

    Returns ``{model: {method: summary}}`` on rank 0 (``{}`` on the others). ``dataset``: one dataset for
    every model, or a data spec (``alignnet evaluate --data``; also the default ``data_name``) read for each
    model with its own input spec. A method that is not defined for a model (e.g. guided backprop without
    ReLUs) is skipped with a note. ``forward_batch``: perturbed copies per forward pass, for pixel removal
    and for every method that takes it (occlusion, RISE, LIME, Integrated Gradients) unless its
    ``method_configs`` entry sets it; None: a pixel budget for the device
    (:func:`~alignnet.attribution.copies_per_pass`). Memory and speed only: the scores and the shard keys
    do not depend on it.

    Nothing is replaced silently: a result file that records another config (model weights, data, method
    settings or protocol), or a ``summary.json`` of other results, raises ``FileExistsError`` before it is
    touched, unless ``force``; a run of the same inputs resumes and rewrites identical files.
    """
    info = info or RankInfo()
    forward_batch = check_forward_batch(forward_batch)
    out = Path(out)
    work_dir = out / "shards"
    specs = [spec for spec, _ in models]
    tags = model_tags(specs)
    data_name = data_name or (dataset if isinstance(dataset, str) else "")
    datasets = _datasets(models, dataset, loader_workers)
    summaries: dict = {}
    results: dict[str, dict] = {}
    say = progress and info.is_main
    for (spec, model), tag, items in zip(models, tags, datasets, strict=True):
        logits = None
        if protocol.metric == "localisation":  # predicted once per model, not once per method
            logits = predict_dataset(model, items, work_dir, info, model_device(model), loader_workers, say)
        for method in methods:
            stem = _result_stem(protocol, method, tag)
            config = dict((method_configs or {}).get(method) or {})
            if forward_batch is not None and "forward_batch" in attributor_parameters(method):
                config.setdefault("forward_batch", forward_batch)
            try:
                plan = _plan(model, items, method, protocol, work_dir, info, config, logits, say, forward_batch)
                plan.config.update(model=spec, protocol=protocol.record(), dataset=data_name)
                if not force:  # every rank decides alike, before any shard is computed
                    path = out / f"{stem}.json"
                    _refuse_to_replace(path, _as_json(plan.config), _saved_json(path, "config"), "a result of other inputs")  # fmt: skip
                res = plan.run(info, say)
            except ValueError as exc:
                if "not defined for this model" in str(exc):
                    if info.is_main:
                        print(f"skipping {method}: {exc}", file=sys.stderr)
                    continue
                raise
            if res is None:
                continue
            res.save(out, stem)
            summaries.setdefault(spec, {})[method] = res.summary
            results.setdefault(spec, {})[method] = res
            print(f"{spec} {method}: {json.dumps(res.summary)} ({res.seconds:.1f} s)")
    if info.is_main:
        summary = {**_request(specs, methods, protocol, data_name, ablation), "results": summaries}
        path = out / "summary.json"
        if not force:
            _refuse_to_replace(path, _as_json(summary), _saved_json(path), "other results")
        path.write_text(json.dumps(summary, indent=2) + "\n")
        write_figures(out, protocol, models, results, ablation)
    return summaries


def ablation_value(model: nn.Module, kind: str) -> float:
    """The model's temperature (``kind="temperature"``) or B-cos ``b`` (``kind="b"``)."""
    from ..layers import BcosConv2d, LogitLayer

    cls, attr = (LogitLayer, "temperature") if kind == "temperature" else (BcosConv2d, "b")
    for m in model.modules():
        if isinstance(m, cls):
            return float(getattr(m, attr))
    raise InputError(f"--ablation {kind}: the model has no {cls.__name__} to read {attr} from")


def write_figures(out: Path, protocol: Protocol, models, results: dict, ablation: str | None) -> None:
    """Box plots / removal curves per model and, with ``ablation`` and several models, the ablation plot."""
    from . import plots

    tags = dict(zip([spec for spec, _ in models], model_tags([spec for spec, _ in models]), strict=True))
    for spec, per_method in results.items():
        names = _figure_names(protocol, tags[spec])
        if protocol.metric == "localisation":
            fig = plots.plot_localisation_boxes(
                {m: r.scores for m, r in per_method.items()}, grid=protocol.grid, title=tags[spec] or Path(spec).stem
            )
            fig.savefig(out / names[0], dpi=150)
        else:
            for o, name in zip(protocol.orders, names, strict=True):
                fig = plots.plot_pixel_removal(
                    {m: (r.fractions, r.mean_curve(o)) for m, r in per_method.items()}, order=o
                )
                fig.savefig(out / name, dpi=150)
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
        return evaluate(
            models,
            job.data,  # read for each model with its own input spec
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
            force=job.force,
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
        raise InputError(f"processes must be >= 1, got {processes}")
    threads = threads or max(1, torch.get_num_threads() // processes)
    with tempfile.TemporaryDirectory(prefix="alignnet-evaluate-") as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        mp.start_processes(
            _worker, args=(job, processes, init_file, threads), nprocs=processes, join=True, start_method="spawn"
        )
