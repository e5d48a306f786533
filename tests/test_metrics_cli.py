"""``alignnet evaluate``, the plots and the Quantus adapter."""

import json

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import alignnet
from _attr_nets import TemplateNet, blob_images, blob_position
from alignnet.cli import evaluate as evaluate_cli
from alignnet.cli import main
from alignnet.metrics import quantus_explain_func
from alignnet.metrics.plots import compare_figure, plot_ablation, plot_localisation_boxes, plot_pixel_removal
from alignnet.models import InputSpec


@pytest.fixture
def blob_data(tmp_path):
    images, labels = blob_images(per_class=6)
    path = tmp_path / "blobs.npz"
    np.savez(path, images=images.numpy(), labels=labels.numpy())
    return path


def test_evaluate_localisation_writes_results_and_figures(tmp_path, blob_data, monkeypatch):
    monkeypatch.setattr(evaluate_cli, "resolve_model", lambda spec, device, progress=True: TemplateNet())
    out = tmp_path / "out"
    args = ["evaluate", "--model", "template", "--data", str(blob_data), "--metric", "localisation",
            "--methods", "ours,grad,guided_backprop", "--grid", "2", "--n-grids", "4", "--out", str(out), "--quiet"]  # fmt: skip
    code = main(args)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["results"]["template"]["ours"]["mean"] == pytest.approx(1.0)
    assert "guided_backprop" not in summary["results"]["template"]  # refused for a net without ReLUs, skipped
    assert (out / "localisation_boxes.png").stat().st_size > 0
    saved = json.loads((out / "localisation_ours.json").read_text())
    assert saved["config"]["grid"] == 2 and saved["config"]["n_grids"] == 4 and saved["config"]["seed"] == 42
    assert list((out / "shards").glob("localisation-ours-*/shard-*.npz"))  # the resumable pieces


def test_evaluate_pixel_removal_with_saved_models_and_ablation(tmp_path, blob_data):
    paths = []
    for b in (1.5, 2.0):
        model = alignnet.create_model("bcos_cifar10_9l", width=0.125, b=b)
        paths.append(tmp_path / f"b{b}.safetensors")
        alignnet.save_model(model, paths[-1])
    out = tmp_path / "pr"
    args = ["evaluate", "--data", str(blob_data), "--metric", "pixel-removal", "--methods", "ours",
            "--n-images", "3", "--steps", "4", "--ablation", "b", "--out", str(out), "--quiet"]  # fmt: skip
    for p in paths:
        args += ["--model", str(p)]
    assert main(args) == 0
    ablation = json.loads((out / "ablation.json").read_text())
    assert ablation["values"] == [1.5, 2.0] and len(ablation["metric"]["ours"]) == 2
    for name in ("ablation.png", "pixel_removal_least_b1.5.png", "pixel_removal_ours_b2.0.npz"):
        assert (out / name).exists()


def test_evaluate_user_errors(tmp_path, blob_data, capsys):
    base = ["evaluate", "--data", str(blob_data), "--metric", "localisation", "--out", str(tmp_path)]
    assert main([*base, "--model", "no_such_model", "--methods", "ours"]) == 2
    assert "is neither" in capsys.readouterr().err
    assert main([*base, "--model", "bcos_cifar10_9l", "--methods", "ours,nope"]) == 2
    assert "unknown methods nope" in capsys.readouterr().err
    assert main([*base, "--model", str(tmp_path / "missing.safetensors")]) == 2


def test_plots_return_figures():
    fig = plot_localisation_boxes({"ours": np.random.rand(20), "grad": np.random.rand(20)}, grid=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    fig = plot_pixel_removal({"ours": (np.linspace(0, 0.25, 5), np.linspace(1, 0.8, 5))}, order="most")
    assert "most" in fig.axes[0].get_xlabel()
    fig = plot_ablation([10, 1000, 100], {"ours": [0.3, 0.9, 0.6]}, reference={"paper": ([10, 100], [0.31, 0.64])})
    line = fig.axes[0].get_lines()[0]
    np.testing.assert_array_equal(line.get_xdata(), [10, 100, 1000])
    np.testing.assert_array_equal(line.get_ydata(), [0.3, 0.6, 0.9])
    with pytest.raises(ValueError):
        plot_ablation([1, 2], {"ours": [0.1]})


def test_compare_figure_has_a_column_per_method():
    images, labels = blob_images(per_class=1)
    fig = compare_figure(TemplateNet(), images[:3], labels[:3], methods=("ours", "grad", "guided_backprop"))
    assert len(fig.axes) == 3 * 4
    assert [ax.get_title() for ax in fig.axes[:4]] == ["image", "ours", "grad", "guided_backprop"]


def test_quantus_pointing_game_and_pixel_flipping():
    quantus = pytest.importorskip("quantus", reason="quantus (test extra) is not installed")
    model = TemplateNet().eval()
    images, labels = blob_images(per_class=1)
    masks = np.zeros((len(labels), 1, 8, 8))
    for i, c in enumerate(labels.tolist()):
        r, q = blob_position(c)
        masks[i, 0, r : r + 2, q : q + 2] = 1
    explain_func = quantus_explain_func("ours")
    a = explain_func(model=model, inputs=images.numpy(), targets=labels.numpy())
    assert a.shape == (10, 1, 8, 8)
    hits = quantus.PointingGame(disable_warnings=True)(
        model=model, x_batch=images.numpy(), y_batch=labels.numpy(), s_batch=masks,
        explain_func=explain_func, device="cpu",
    )  # fmt: skip
    assert hits == [True] * 10
    curves = quantus.PixelFlipping(features_in_step=16, perturb_baseline="black", disable_warnings=True)(
        model=model, x_batch=images.numpy(), y_batch=labels.numpy(), explain_func=explain_func, device="cpu",
    )  # fmt: skip
    assert len(curves) == 10 and all(np.isfinite(c).all() for c in map(np.asarray, curves))


# ----------------------------------------------------------------------------------------------- trustworthy runs


def _outputs(out):
    """The result files, summary and figures of ``out`` (not the shards): name -> bytes."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_evaluate_resumes_the_same_run_and_refuses_to_replace_another(tmp_path, blob_data, monkeypatch, capsys):
    """``alignnet evaluate`` into a folder of earlier results: the same command resumes (identical files, no
    shard recomputed, a killed run completed); other settings, methods or weights stop with an error naming the
    files, which stay as they were, unless --force."""
    model = TemplateNet()
    monkeypatch.setattr(evaluate_cli, "resolve_model", lambda spec, device, progress=True: model)
    out = tmp_path / "out"
    args = ["evaluate", "--model", "template", "--data", str(blob_data), "--metric", "localisation",
            "--methods", "ours,ixg", "--grid", "2", "--n-grids", "3", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(args) == 0
    first = _outputs(out)
    assert {"summary.json", "localisation_ours.json", "localisation_ixg.npz", "localisation_boxes.png"} <= set(first)
    shards = {p: p.stat().st_mtime_ns for p in (out / "shards").rglob("shard-*.npz")}
    assert main(args) == 0  # the same command again
    assert _outputs(out) == first
    assert {p: p.stat().st_mtime_ns for p in (out / "shards").rglob("shard-*.npz")} == shards
    for name in ("summary.json", "localisation_boxes.png", "localisation_ixg.json", "localisation_ixg.npz"):
        (out / name).unlink()  # killed after the first method
    assert main(args) == 0
    assert _outputs(out) == first
    capsys.readouterr()

    more = [*args[:-5], "--n-grids", "2", *args[-3:]]  # another protocol
    assert more.count("--n-grids") == 1
    assert main(more) == 2
    err = capsys.readouterr().err
    assert "would overwrite" in err and "localisation_ours.json" in err and "--force" in err
    assert main([*args, "--methods", "ours"]) == 2  # another set of methods: summary.json would change
    assert "summary.json" in capsys.readouterr().err
    with torch.no_grad():
        model.conv.weight[0, 0, 0, 0] += 0.5  # the same request, other weights: found before any shard is computed
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "would overwrite" in err and "localisation_ours.json" in err and "model_hash" in err
    assert _outputs(out) == first  # nothing was touched
    assert main([*more, "--force"]) == 0
    saved = json.loads((out / "localisation_ours.json").read_text())
    assert saved["config"]["n_grids"] == 2 and saved["summary"]["n"] == 2 * 4


def test_models_with_the_same_file_stem_get_their_own_result_files(tmp_path, blob_data, capsys):
    """``runs/bcos/model.safetensors`` and ``runs/coda/model.safetensors``: one result each, named by folder."""
    from alignnet.metrics.evaluate import evaluate_one
    from alignnet.metrics.presets import Protocol

    paths = []
    for folder, b in (("bcos", 1.5), ("coda", 2.5)):
        paths.append(tmp_path / "runs" / folder / "model.safetensors")
        paths[-1].parent.mkdir(parents=True)
        alignnet.save_model(alignnet.create_model("bcos_cifar10_9l", width=0.125, b=b), paths[-1])
    out = tmp_path / "out"
    args = ["evaluate", "--data", str(blob_data), "--metric", "pixel-removal", "--methods", "ours", "--n-images", "3",
            "--steps", "4", "--out", str(out), "--quiet", "--model", str(paths[0]), "--model", str(paths[1])]  # fmt: skip
    assert main(args) == 0
    with np.load(blob_data) as f:
        data = torch.from_numpy(f["images"]), torch.from_numpy(f["labels"])
    curves = {}
    for path, tag in zip(paths, ("bcos_model", "coda_model"), strict=True):
        assert json.loads((out / f"pixel_removal_ours_{tag}.json").read_text())["config"]["model"] == str(path)
        assert (out / f"pixel_removal_least_{tag}.png").exists() and (out / f"pixel_removal_most_{tag}.png").exists()
        with np.load(out / f"pixel_removal_ours_{tag}.npz") as f:
            curves[tag] = f["curves_least"]
        alone = evaluate_one(alignnet.load_model(path), data, "ours", Protocol("pixel-removal", n_images=3, steps=4),
                             tmp_path / tag, progress=False)  # fmt: skip
        np.testing.assert_array_equal(curves[tag], alone.curves["least"])
    assert not np.array_equal(curves["bcos_model"], curves["coda_model"])
    assert set(json.loads((out / "summary.json").read_text())["results"]) == {str(p) for p in paths}
    capsys.readouterr()
    assert main([*args[:-2], "--model", str(paths[0]), "--out", str(tmp_path / "twice")]) == 2
    assert "given twice" in capsys.readouterr().err


def test_file_labels_are_unique_and_keep_plain_stems():
    from alignnet.metrics._common import unique_stems

    assert unique_stems(["a/x.png", "b/x.png", "x_2.png"]) == ["a_x", "b_x", "x_2"]
    assert unique_stems(["runs/bcos/model.safetensors", "runs/coda/model.safetensors"]) == ["bcos_model", "coda_model"]
    assert unique_stems(["fmnist_bcos", "b1.5.safetensors", "/abs/b2.0.safetensors"]) == ["fmnist_bcos", "b1.5", "b2.0"]
    assert unique_stems(["x.png", "x.png", "x_2.png"]) == ["x", "x_3", "x_2"]  # the same file twice
    assert unique_stems(["a/x.png", "b/x.png", "a_x.png"]) == ["a_x_2", "b_x", "a_x"]  # a plain stem is kept


SPECS = {"plain": InputSpec(size=(8, 8)), "resized": InputSpec(size=(8, 8), resize=12)}  # cf. resize 256 / 232


def _template(spec, device="cpu", progress=True):
    model = TemplateNet().eval()
    model.input_spec = SPECS[spec]
    return model


@pytest.fixture
def imagenet_16px(tmp_path):
    """A miniature ImageNet folder of 16x16 JPEGs (the blob images at twice their size): a model of input size 8
    sees them resized, or resized to 12 and centre-cropped, by its own spec."""
    import torch.nn.functional as F

    from alignnet.data.imagenet import imagenet_synsets
    from test_imagenet_eval import _write_folder

    images, labels = blob_images(per_class=1)
    _write_folder(tmp_path / "val", F.interpolate(images, scale_factor=2, mode="nearest"), labels, imagenet_synsets())
    return tmp_path / "val"


@pytest.mark.parametrize("path", ["single process", "run_job"])
def test_each_model_is_prepared_with_its_own_input_spec(imagenet_16px, tmp_path, monkeypatch, path):
    """Two models with different resize settings evaluated together on an ImageNet folder: each one's curves
    are those of the model evaluated alone on the images prepared with its own spec."""
    import alignnet.models
    from alignnet.data.imagenet import ImageNetVal
    from alignnet.metrics.evaluate import EvaluationJob, evaluate_one, run_job
    from alignnet.metrics.presets import Protocol
    from alignnet.metrics.sharding import RankInfo

    monkeypatch.setattr(evaluate_cli, "resolve_model", _template)
    monkeypatch.setattr(alignnet.models, "resolve_model", _template)  # what run_job (torchrun, --processes) calls
    protocol = Protocol("pixel-removal", n_images=4, steps=3, batch_size=2, shard_size=2)
    out, data = tmp_path / "out", f"imagenet:{imagenet_16px}"
    if path == "run_job":
        run_job(EvaluationJob(("plain", "resized"), data, ("ours",), protocol, str(out), progress=False), RankInfo())
    else:
        args = ["evaluate", "--model", "plain", "--model", "resized", "--data", data, "--metric", "pixel-removal",
                "--n-images", "4", "--steps", "3", "--batch-size", "2", "--shard-size", "2", "--methods", "ours",
                "--out", str(out), "--quiet"]  # fmt: skip
        assert main(args) == 0
    alone = {}
    for spec in SPECS:
        alone[spec] = evaluate_one(
            _template(spec), ImageNetVal(imagenet_16px, SPECS[spec]), "ours", protocol, tmp_path / spec, progress=False
        ).curves["most"]
        with np.load(out / f"pixel_removal_ours_{spec}.npz") as f:
            np.testing.assert_array_equal(f["curves_most"], alone[spec])
    assert not np.array_equal(alone["plain"], alone["resized"])  # the two preparations differ
