"""``alignnet evaluate``, the plots and the Quantus adapter."""

import json

import numpy as np
import pytest
from matplotlib.figure import Figure

import alignnet
from _attr_nets import TemplateNet, blob_images, blob_position
from alignnet.cli import evaluate as evaluate_cli
from alignnet.cli import main
from alignnet.metrics import quantus_explain_func
from alignnet.metrics.plots import compare_figure, plot_ablation, plot_localisation_boxes, plot_pixel_removal


@pytest.fixture
def blob_data(tmp_path):
    images, labels = blob_images(per_class=6)
    path = tmp_path / "blobs.npz"
    np.savez(path, images=images.numpy(), labels=labels.numpy())
    return path


def test_evaluate_localisation_writes_results_and_figures(tmp_path, blob_data, monkeypatch, capsys):
    monkeypatch.setattr(evaluate_cli, "resolve_model", lambda spec, device, progress=True: TemplateNet())
    out = tmp_path / "out"
    args = ["evaluate", "--model", "template", "--data", str(blob_data), "--metric", "localisation",
            "--methods", "ours,grad,guided_backprop", "--grid", "2", "--n-grids", "4", "--out", str(out), "--quiet"]  # fmt: skip
    code = main(args)
    assert code == 0
    assert "earlier results" not in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["results"]["template"]["ours"]["mean"] == pytest.approx(1.0)
    assert "guided_backprop" not in summary["results"]["template"]  # refused for a net without ReLUs, skipped
    assert (out / "localisation_boxes.png").stat().st_size > 0
    saved = json.loads((out / "localisation_ours.json").read_text())
    assert saved["config"]["grid"] == 2 and saved["config"]["n_grids"] == 4 and saved["config"]["seed"] == 42
    assert list((out / "shards").glob("localisation-ours-*/shard-*.npz"))  # the resumable pieces
    assert main(args) == 0  # a second run into the same directory says that it replaces the results
    assert "holds earlier results" in capsys.readouterr().err


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
