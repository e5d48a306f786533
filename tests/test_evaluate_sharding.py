"""Sharded evaluation: ranks from the environment, shards, identical results for any number of ranks, resume."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from _attr_nets import TemplateNet, blob_images, tiny_bcos
from alignnet.attribution import get_attributor
from alignnet.cli import main
from alignnet.layers import BcosConv2d, LogitLayer
from alignnet.metrics import evaluate_localisation, evaluate_pixel_removal, removal_curves
from alignnet.metrics.evaluate import evaluate_one
from alignnet.metrics.presets import PRESETS, Protocol, get_preset
from alignnet.metrics.sharding import RankInfo, _first_slurm_host, detect_ranks, shard_ranges, shards_of_rank

# every registered method that runs on a linear (TemplateNet) model; guided_backprop is refused there
METHODS = ("ours", "grad", "ixg", "intgrad", "deeplift", "gradcam", "occlusion5", "occlusion9", "rise", "lime")


def test_ranks_from_torchrun_slurm_or_none():
    assert detect_ranks({}) == RankInfo()
    info = detect_ranks({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.local_rank, info.launcher) == (3, 8, 1, "torchrun")
    slurm = {"SLURM_PROCID": "5", "SLURM_NTASKS": "6", "SLURM_LOCALID": "2", "SLURM_STEP_NUM_TASKS": "6"}  # srun
    assert detect_ranks(slurm) == RankInfo(5, 6, 2, "slurm")
    assert detect_ranks({**slurm, "RANK": "0", "WORLD_SIZE": "2"}).launcher == "torchrun"  # torchrun inside SLURM
    assert detect_ranks({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == RankInfo()
    assert _first_slurm_host("gpu[003-005,9],cpu1") == "gpu003" and _first_slurm_host("node7") == "node7"
    with pytest.raises(ValueError):
        RankInfo(2, 2)


def test_shards_are_whole_batches_and_round_robin():
    assert shard_ranges(10, 4, 5) == [(0, 8), (8, 10)]  # 5 rounded up to 2 batches of 4
    assert shard_ranges(8, 4, 4) == [(0, 4), (4, 8)]
    assert shard_ranges(0, 4, 4) == []
    assert shards_of_rank(5, RankInfo(1, 2)) == [1, 3]
    assert sorted(shards_of_rank(7, RankInfo(0, 3)) + shards_of_rank(7, RankInfo(1, 3)) + shards_of_rank(7, RankInfo(2, 3))) == list(range(7))  # fmt: skip


def _by_ranks(model, data, method, protocol, work, world):
    """Run the ranks one after the other in this process (no process group: the shard files are the
    only link between them), highest rank first so that rank 0 finds every shard and merges."""
    results = [evaluate_one(model, data, method, protocol, work, RankInfo(r, world), progress=False) for r in reversed(range(world))]  # fmt: skip
    assert all(r is None for r in results[:-1])
    return results[-1]


@pytest.mark.parametrize(
    "method",
    [
        m if m in ("ours", "grad", "ixg", "deeplift") else pytest.param(m, marks=pytest.mark.slow)
        for m in METHODS
        if m not in ("gradcam", "occlusion9")
    ],
)  # gradcam (TemplateNet has no spatial layer) and occlusion9 (9-pixel patches on 8-pixel images) run below
def test_any_number_of_ranks_gives_the_single_process_scores(tmp_path, method):
    model = TemplateNet().eval()
    data = blob_images(per_class=4)
    loc = Protocol("localisation", grid=2, n_grids=3, batch_size=4, shard_size=1)  # one grid per shard
    pr = Protocol("pixel-removal", n_images=5, steps=5, batch_size=2, shard_size=2)
    for protocol in (loc, pr):
        one = _by_ranks(model, data, method, protocol, tmp_path / "w1", 1)
        three = _by_ranks(model, data, method, protocol, tmp_path / "w3", 3)
        if protocol is loc:
            assert one.scores.shape == (3 * 4,)
            np.testing.assert_array_equal(one.scores, three.scores)
            np.testing.assert_array_equal(one.grids, three.grids)
            # and equal to a plain loop over the grids, scored by hand
            np.testing.assert_allclose(one.scores, _reference_localisation(model, data, method, one.grids), rtol=1e-6)
            # the public one-process function is the same protocol
            ref = evaluate_localisation(model, data, method, grid=2, n_grids=3, batch_size=4, progress=False)
            np.testing.assert_array_equal(one.scores, ref.scores)
        else:
            for o in ("least", "most"):
                assert one.curves[o].shape == (5, 5)
                np.testing.assert_array_equal(one.curves[o], three.curves[o])
                # and equal to one removal_curves call over all five images
                np.testing.assert_allclose(one.curves[o], _reference_removal(model, data, method, o), rtol=1e-6)
            ref = evaluate_pixel_removal(model, data, method, n_images=5, steps=5, batch_size=2, progress=False)
            np.testing.assert_array_equal(one.curves["least"], ref.curves["least"])
        assert one.config == three.config


def _reference_localisation(model, data, method, grids):
    """Scores of 2x2 grids by a loop: tile by concatenation, attribute one grid at a time, sum the
    positive attribution inside the target cell by slicing (no tile_grids, no localisation_scores)."""
    images, labels = data
    attributor = get_attributor(method, model)
    scores = []
    for grid in grids:
        x = images[torch.as_tensor(grid)]
        tiled = torch.cat([torch.cat([x[0], x[1]], 2), torch.cat([x[2], x[3]], 2)], 1)[None]
        maps = attributor.attribute_maps(tiled, labels[torch.as_tensor(grid)][None])[0]  # (4, H, W)
        if maps.dim() == 4:
            maps = maps.sum(1)
        for cell in range(4):
            positive = maps[cell].double().clamp_min(0)
            r, c = divmod(cell, 2)
            inside = positive[8 * r : 8 * r + 8, 8 * c : 8 * c + 8].sum()
            scores.append(float(inside / positive.sum()) if positive.sum() > 0 else 0.0)
    return np.asarray(scores)


def _reference_removal(model, data, method, order):
    """Curves of the first five images from one removal_curves call (attributions in batches of two,
    as the protocol attributes them: LIME's samples depend on the batch)."""
    images, labels = data[0][:5], data[1][:5]
    attributor = get_attributor(method, model)
    maps = torch.cat([attributor.attribute(images[i : i + 2], labels[i : i + 2]) for i in range(0, 5, 2)])
    return removal_curves(model, images, labels, maps, order, 0.25, 5)[1]


def test_a_killed_run_resumes_with_only_the_missing_shards(tmp_path):
    model = tiny_bcos().eval()
    data = blob_images(per_class=3)
    protocol = Protocol("pixel-removal", n_images=8, steps=4, batch_size=2, shard_size=2)
    work = tmp_path / "work"
    first = _by_ranks(model, data, "occlusion5", protocol, work, 2)
    (folder,) = [p for p in work.iterdir() if p.name.startswith("pixel_removal-")]
    shards = sorted(folder.glob("shard-*.npz"))
    assert len(shards) == 4 and not list(folder.glob("*.tmp*"))
    stamps = {p.name: p.stat().st_mtime_ns for p in shards}
    shards[2].unlink()  # as if the run had been killed before that shard was written
    again = _by_ranks(model, data, "occlusion5", protocol, work, 2)
    now = {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("shard-*.npz"))}
    assert now.keys() == stamps.keys()
    assert [n for n in now if now[n] != stamps[n]] == [shards[2].name]  # only that shard was recomputed
    np.testing.assert_array_equal(first.curves["most"], again.curves["most"])
    # more images later: the shards of the first 8 are reused, the new ones computed
    more = _by_ranks(model, data, "occlusion5", protocol.with_values(n_images=12), work, 2)
    np.testing.assert_array_equal(more.curves["least"][:8], first.curves["least"])
    assert all(p.stat().st_mtime_ns == now[p.name] for p in shards if p.exists())


def test_rank_zero_refuses_to_merge_with_a_missing_shard(tmp_path):
    data = blob_images(per_class=3)
    protocol = Protocol("localisation", grid=2, n_grids=4, batch_size=4, shard_size=1)
    with pytest.raises(RuntimeError, match="missing"):  # rank 1 never ran
        evaluate_one(TemplateNet(), data, "ours", protocol, tmp_path, RankInfo(0, 2), progress=False)


def test_presets_state_their_protocols():
    p = get_preset("bcos-v2-localisation")
    assert (p.metric, p.grid, p.n_grids, p.smooth, p.confidence) == ("localisation", 2, 250, 15, 0.5)
    assert get_preset("bcos-v2-localisation-noconfthresh").confidence == 0.0
    assert get_preset("gridpg-localisation").confidence == 0.99
    assert get_preset("bcosification-localisation").smooth == 15
    assert all(p.description for p in PRESETS.values())
    with pytest.raises(ValueError, match="known"):
        get_preset("nope")
    with pytest.raises(ValueError, match="odd"):
        Protocol(smooth=4)


# ----------------------------------------------------------------------------------------------- real processes


def _fmnist_args(out, metric, extra=()):
    base = ["evaluate", "--model", "fmnist_bcos", "--data", "embedded", "--quiet", "--out", str(out)]
    if metric == "localisation":
        return [*base, "--metric", "localisation", "--grid", "2", "--n-grids", "2", "--batch-size", "4",
                "--shard-size", "1", *extra]  # fmt: skip
    return [*base, "--metric", "pixel-removal", "--n-images", "4", "--steps", "3", "--batch-size", "2",
            "--shard-size", "2", *extra]  # fmt: skip


def _assert_same_results(a, b, methods):
    for m in methods:
        for stem in (f"localisation_{m}", f"pixel_removal_{m}"):
            if not (a / f"{stem}.npz").exists():
                continue
            with np.load(a / f"{stem}.npz") as x, np.load(b / f"{stem}.npz") as y:
                assert x.files == y.files
                for k in x.files:
                    np.testing.assert_array_equal(x[k], y[k], err_msg=f"{stem} {k}")
            ca, cb = (json.loads((d / f"{stem}.json").read_text())["config"] for d in (a, b))
            assert ca == cb


@pytest.mark.slow
def test_two_worker_processes_equal_one_process(tmp_path):
    # every method is compared across ranks in-process above; real worker processes are checked with one method
    # of each kind (exact, gradient, CAM, occlusion, random masks) to keep the suite short
    chosen = ("ours", "grad", "gradcam", "occlusion9", "rise")
    for metric in ("localisation", "pixel-removal"):
        one, two = tmp_path / f"{metric}1", tmp_path / f"{metric}2"
        assert main(_fmnist_args(one, metric, ["--methods", ",".join(chosen)])) == 0
        assert main(_fmnist_args(two, metric, ["--methods", ",".join(chosen), "--processes", "2"])) == 0
        _assert_same_results(one, two, chosen)
        summary = json.loads((two / "summary.json").read_text())
        assert set(summary["results"]["fmnist_bcos"]) == set(chosen)


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = _fmnist_args(one, "localisation", ["--methods", "ours,grad"])
    assert main(args) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "alignnet",
           *_fmnist_args(two, "localisation", ["--methods", "ours,grad"])]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_results(one, two, ("ours", "grad"))
    shards = list((two / "shards").glob("localisation-grad-*/shard-*.npz"))
    assert len(shards) == 2  # one grid per shard, one shard per rank


def test_processes_flag_rejects_nonsense(tmp_path, capsys):
    assert main(_fmnist_args(tmp_path, "localisation", ["--processes", "0"])) == 2
    assert "--processes" in capsys.readouterr().err
    assert main(["evaluate", "--model", "fmnist_bcos", "--out", str(tmp_path)]) == 2  # neither --metric nor --preset
    assert "--metric" in capsys.readouterr().err


def test_cli_single_process_writes_the_protocol(tmp_path, monkeypatch):
    from alignnet.cli import evaluate as evaluate_cli

    monkeypatch.setattr(evaluate_cli, "resolve_model", lambda spec, device, progress=True: TemplateNet())
    images, labels = blob_images(per_class=4)
    path = tmp_path / "blobs.npz"
    np.savez(path, images=images.numpy(), labels=labels.numpy())
    out = tmp_path / "out"
    args = ["evaluate", "--model", "t", "--data", str(path), "--preset", "bcos-v2-localisation", "--n-grids", "3",
            "--smooth", "0", "--methods", "ours", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    saved = json.loads((out / "localisation_ours.json").read_text())
    assert saved["config"]["grid"] == 2 and saved["config"]["n_grids"] == 3 and saved["config"]["smooth"] == 0
    assert saved["config"]["confidence"] == 0.5 and saved["summary"]["mean"] == pytest.approx(1.0)
    assert torch.isfinite(torch.tensor(saved["summary"]["mean"]))


@pytest.mark.parametrize("metric", ["localisation", "pixel-removal"])
def test_forward_batch_bounds_the_perturbed_passes_and_changes_no_score(tmp_path, metric):
    """``evaluate(forward_batch=2)`` (``alignnet evaluate --forward-batch 2``) reaches pixel removal and every
    method that takes it: no pass of perturbed copies holds more than 2, while the scores and the shard keys
    (the folder names) are those of the default run."""
    from alignnet.metrics.evaluate import evaluate

    model = TemplateNet().eval()
    data = blob_images(per_class=4)  # 8x8 images: 16x16 grids
    if metric == "localisation":
        protocol, methods = (
            Protocol("localisation", grid=2, n_grids=2, batch_size=4, shard_size=1),
            ["occlusion5", "rise"],
        )
    else:
        protocol = Protocol("pixel-removal", n_images=4, steps=5, batch_size=2, shard_size=2)
        methods = ["occlusion5", "rise", "intgrad"]
    evaluate([("t", model)], data, methods, protocol, tmp_path / "auto", progress=False)
    sizes = []
    big = 16 if metric == "localisation" else 8  # the perturbed inputs (the predictions are of single 8x8 images)
    handle = model.register_forward_pre_hook(
        lambda _m, a: sizes.append(a[0].shape[0]) if a[0].shape[-1] == big else None
    )
    evaluate([("t", model)], data, methods, protocol, tmp_path / "two", progress=False, forward_batch=2)
    handle.remove()
    assert max(sizes) == 2 and len(sizes) > 100
    for method in methods:
        stem = f"{metric.replace('-', '_')}_{method}"
        with np.load(tmp_path / "auto" / f"{stem}.npz") as a, np.load(tmp_path / "two" / f"{stem}.npz") as b:
            assert sorted(a.files) == sorted(b.files)
            for k in a.files:
                np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "auto" / "shards").iterdir()) == sorted(
        p.name for p in (tmp_path / "two" / "shards").iterdir()
    )
    with pytest.raises(ValueError, match="forward_batch must be an int >= 1"):
        evaluate([("t", model)], data, methods, protocol, tmp_path / "bad", progress=False, forward_batch=0)


def test_cli_forward_batch_is_checked_before_anything_is_written(tmp_path, capsys):
    assert main(_fmnist_args(tmp_path / "out", "localisation", ["--forward-batch", "0"])) == 2
    assert (
        "--forward-batch must be an int >= 1 (leave it out for the automatic pixel budget), got 0"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------- cache keys


def _with(model, kind, value):
    for m in model.modules():
        if isinstance(m, kind[0]):
            setattr(m, kind[1], value)
    return model


def _nudged(model):
    with torch.no_grad():
        next(model.parameters())[0].view(-1)[0] += 0.1
    return model


def _grey(data):
    return torch.full_like(data[0], 0.5), data[1]


def _one_pixel(data):
    images = data[0].clone()
    images[3, 0, 0, 0] += 0.5  # image 3 (class 3, blob elsewhere): one pixel of one image changes
    return images, data[1]


# each input of a cached pixel-removal result, changed alone: (model, data, method config, protocol) -> changed
INPUT_CHANGES = {
    "grey images, same labels": lambda m, d, c, p: (m, _grey(d), c, p),
    "one pixel of one image": lambda m, d, c, p: (m, _one_pixel(d), c, p),
    "labels": lambda m, d, c, p: (m, (d[0], d[1].roll(1)), c, p),
    "a weight": lambda m, d, c, p: (_nudged(m), d, c, p),
    "b": lambda m, d, c, p: (_with(m, (BcosConv2d, "b"), 2.5), d, c, p),
    "temperature": lambda m, d, c, p: (_with(m, (LogitLayer, "temperature"), 4.0), d, c, p),
    "method config": lambda m, d, c, p: (m, d, {**c, "abs": True}, p),
    "protocol": lambda m, d, c, p: (m, d, c, p.with_values(fraction=0.5)),
}


@pytest.mark.parametrize("change", INPUT_CHANGES)
def test_a_cached_result_is_recomputed_when_any_of_its_inputs_changes(tmp_path, change):
    """A cache key covers every input of the result: the run after a change, in the work folder of the first
    run, equals a run in an empty folder (and differs from the first run, so the change matters)."""
    torch.manual_seed(0)
    model, data = tiny_bcos().eval(), blob_images(per_class=2)
    protocol = Protocol("pixel-removal", n_images=6, steps=4, batch_size=2, shard_size=2)
    first = evaluate_one(model, data, "grad", protocol, tmp_path / "work", progress=False)
    model2, data2, config2, protocol2 = INPUT_CHANGES[change](copy.deepcopy(model), data, {}, protocol)
    run = lambda work: evaluate_one(model2, data2, "grad", protocol2, work, method_config=config2, progress=False)  # noqa: E731
    again, fresh = run(tmp_path / "work"), run(tmp_path / "fresh")
    for o in ("least", "most"):
        np.testing.assert_array_equal(again.curves[o], fresh.curves[o])
    assert any(not np.array_equal(first.curves[o], fresh.curves[o]) for o in ("least", "most"))
    assert again.config == fresh.config != first.config


@pytest.mark.parametrize("change", ["a weight", "b", "temperature", "one pixel of one image"])
def test_cached_predictions_are_those_of_the_model_and_data_at_hand(tmp_path, change):
    """The dataset's predictions (the grid selection's input) are cached by the model's fingerprint and the
    images' content: two models that differ only in ``b`` or the temperature get their own logits."""
    from alignnet.metrics.evaluate import _Items, predict_dataset

    torch.manual_seed(0)
    model, data = tiny_bcos().eval(), blob_images(per_class=2)
    first = predict_dataset(model, _Items(data), tmp_path, RankInfo(), torch.device("cpu"), progress=False)
    model2, data2, _, _ = INPUT_CHANGES[change](copy.deepcopy(model), data, {}, None)
    got = predict_dataset(model2, _Items(data2), tmp_path, RankInfo(), torch.device("cpu"), progress=False)
    with torch.no_grad():
        torch.testing.assert_close(got, model2(data2[0]), rtol=0, atol=0)
    assert not torch.equal(got, first)


def test_model_fingerprint_covers_attributes_and_survives_an_explanation():
    import alignnet
    from alignnet.metrics._common import model_hash

    torch.manual_seed(0)
    model = tiny_bcos().eval()
    h = model_hash(model)
    assert model_hash(copy.deepcopy(model)) == h
    alignnet.explain(model, torch.rand(2, 3, 8, 8))  # sets and restores the layers' detach flags
    assert model_hash(model) == h  # a resumed run (a fresh process) finds the same shards
    assert model_hash(_with(copy.deepcopy(model), (BcosConv2d, "b"), 2.5)) != h
    assert model_hash(_with(copy.deepcopy(model), (LogitLayer, "temperature"), 4.0)) != h
    other = copy.deepcopy(model)
    other.model_args = {"b": 2.0}  # constructor arguments recorded on the model
    assert model_hash(other) != h


def test_localisation_does_not_reuse_the_scores_of_other_images(tmp_path):
    """Same labels, same size, same grids: only the pixels differ (a faint light background lets input x
    gradient attribute outside the target cell); the shards of the first images are not reused."""
    model = TemplateNet().eval()
    images, labels = blob_images(per_class=4)
    protocol = Protocol("localisation", grid=2, n_grids=3, batch_size=4, shard_size=1)
    first = evaluate_one(model, (images, labels), "ixg", protocol, tmp_path / "work", progress=False)
    faint = (images * 0.9 + 0.05, labels)
    again = evaluate_one(model, faint, "ixg", protocol, tmp_path / "work", progress=False)
    fresh = evaluate_one(model, faint, "ixg", protocol, tmp_path / "fresh", progress=False)
    np.testing.assert_array_equal(again.scores, fresh.scores)
    assert first.scores.min() == pytest.approx(1.0) and fresh.scores.max() < 0.9
