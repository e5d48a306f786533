"""Multi-label data (issue 24): the label CSV, multi-hot BCE training, mAP and F1 against scikit-learn, the
multi-label localisation with known answers, and ``alignnet train/explain/evaluate/serve`` on a CSV of mosaics;
``alignnet evaluate --data imagefolder:DIR`` on a folder named after a model's classes."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")

from PIL import Image  # noqa: E402

import alignnet  # noqa: E402
from alignnet.cli import main as cli_main  # noqa: E402
from alignnet.data import CorruptImageError, load_embedded  # noqa: E402
from alignnet.data.multilabel import (  # noqa: E402
    MultiLabelCsv,
    csv_datasets,
    make_mosaics,
    read_label_csv,
    write_label_csv,
)
from alignnet.errors import InputError  # noqa: E402
from alignnet.metrics import (  # noqa: E402
    average_precision,
    f1_at_threshold,
    label_cells,
    localisation_scores,
    mean_average_precision,
    multilabel_localisation,
)

NAMES = {0: "shirt", 1: "trouser", 7: "sneaker"}  # Fashion-MNIST labels 0, 1, 7 under new names
QUICK = ["trainer.progress_bar=false", "trainer.num_threads=1", "data.batch_size=16", "trainer.seed=0"]


# ---------------------------------------------------------------------------------------------- pure metrics
def test_average_precision_known_answer():
    # ranking by score: + - + -, 2 positives: precision 1 at recall 1/2, 2/3 at recall 1 -> AP = (1 + 2/3) / 2
    ap = average_precision(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0]))
    assert ap[0] == pytest.approx(5 / 6)
    # a tie between a positive and a negative at the top: one threshold, precision 1/2 at recall 1
    assert average_precision(np.array([0.5, 0.5]), np.array([1, 0]))[0] == pytest.approx(0.5)
    # a class without positives is NaN and left out of the mean
    s, t = np.array([[0.9, 0.2], [0.1, 0.3]]), np.array([[1, 0], [0, 0]])
    assert np.isnan(average_precision(s, t)[1]) and mean_average_precision(s, t) == 1.0


def test_average_precision_and_f1_match_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    targets = (rng.random((200, 6)) < 0.3).astype(int)
    scores = np.round(rng.normal(size=(200, 6)) + 1.5 * targets, 1)  # rounding makes ties
    ours = average_precision(scores, targets)
    theirs = [metrics.average_precision_score(targets[:, k], scores[:, k]) for k in range(6)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    assert mean_average_precision(torch.tensor(scores), torch.tensor(targets)) == pytest.approx(np.mean(theirs))
    probs = 1 / (1 + np.exp(-scores))
    for t in (0.3, 0.5, 0.8):
        expected = metrics.f1_score(targets, probs >= t, average=None, zero_division=0)
        np.testing.assert_allclose(f1_at_threshold(probs, targets, t), expected, rtol=1e-12)


def test_evaluate_labels_known_answer():
    from alignnet.metrics import evaluate_labels

    net = torch.nn.Linear(2, 2)  # identity: the inputs are the logits
    with torch.no_grad():
        net.weight.copy_(torch.eye(2)), net.bias.zero_()
    x = torch.tensor([[3.0, 1.0], [0.0, 2.0], [5.0, 4.0], [1.0, 0.0]])
    r = evaluate_labels(net, torch.utils.data.TensorDataset(x, torch.tensor([0, 1, 1, 0])))
    assert r["accuracy"] == 0.75 and r["per_class_accuracy"] == [1.0, 0.5] and r["n"] == 4
    multi_hot = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    r = evaluate_labels(net, torch.utils.data.TensorDataset(x, multi_hot), threshold=0.5)
    assert r["exact_match"] == 0.25  # every logit >= 0: both labels predicted everywhere, right only for row 3
    assert r["map"] == pytest.approx(mean_average_precision(x, multi_hot))
    with pytest.raises(InputError, match="more classes than the model's 2 outputs"):
        evaluate_labels(net, torch.utils.data.TensorDataset(x, torch.tensor([0, 1, 2, 0])))


def test_localisation_with_cell_masks_known_answer():
    # a 2x2 grid of 2x2-pixel cells; positive mass 1, 2, 3, 4 in cells 0..3 plus negative mass that is ignored
    a = torch.zeros(2, 4, 4)
    for cell, mass in enumerate([1.0, 2.0, 3.0, 4.0]):
        r, c = divmod(cell, 2)
        a[:, 2 * r, 2 * c] = mass
    a[:, 3, 3] = -5.0
    masks = torch.tensor([[True, False, False, True], [False, True, False, False]])
    np.testing.assert_allclose(localisation_scores(a, masks, 2).numpy(), [5 / 10, 2 / 10])
    # one cell as a mask gives the single-cell score
    one_hot = torch.nn.functional.one_hot(torch.tensor([2, 1]), 4).bool()
    assert torch.equal(localisation_scores(a, torch.tensor([2, 1]), 2), localisation_scores(a, one_hot, 2))
    with pytest.raises(InputError, match="masks must have shape"):
        localisation_scores(a, torch.ones(2, 3, dtype=torch.bool), 2)


def test_label_cells_and_mosaics():
    image, label, cells = label_cells(np.array([[3, -1, 3, 0], [-1, -1, 2, -1]]))
    assert image.tolist() == [0, 0, 1] and label.tolist() == [0, 3, 2]
    assert cells.tolist() == [[False, False, False, True], [True, False, True, False], [False, False, True, False]]
    items = np.arange(1, 7, dtype=np.uint8)[:, None, None] * np.ones((6, 2, 3), np.uint8)  # item i is all i+1
    mosaics, cell_labels = make_mosaics(items, np.array([0, 0, 1, 1, 2, 2]), n=50, grid=2, max_items=3, seed=1)
    assert mosaics.shape == (50, 4, 6) and cell_labels.shape == (50, 4)
    counts = (cell_labels >= 0).sum(1)
    assert counts.min() == 1 and counts.max() == 3
    for m, row in zip(mosaics, cell_labels, strict=True):
        present = row[row >= 0]
        assert len(set(present)) == len(present)  # distinct classes
        for cell, k in enumerate(row):
            r, c = divmod(cell, 2)
            value = m[2 * r, 3 * c]
            assert (value == 0) if k < 0 else (value - 1) // 2 == k  # items 1,2 are class 0, 3,4 class 1, ...


# ------------------------------------------------------------------------------------------------- the CSV
def _tiny_csv(root, rows, header="path,labels"):
    (root / "img").mkdir(exist_ok=True)
    lines = [header]
    for i, labels in enumerate(rows):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / "img" / f"{i}.png")
        lines.append(f"img/{i}.png,{labels}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


def test_read_label_csv(tmp_path):
    path = _tiny_csv(tmp_path, ["dog;cat", "cat", "", " bird ; dog"])
    table = read_label_csv(path)
    assert table.classes == ("bird", "cat", "dog")  # sorted union
    assert table.targets.tolist() == [[0, 1, 1], [0, 1, 0], [0, 0, 0], [1, 0, 1]]
    assert table.paths[0] == str(tmp_path / "img" / "0.png") and table.splits is None
    assert read_label_csv(path, "dog;cat;bird;fish").targets[0].tolist() == [1, 1, 0, 0]  # the order given
    with pytest.raises(InputError, match="labels bird are not among the classes"):
        read_label_csv(path, ["dog", "cat"])
    (tmp_path / "img" / "2.png").unlink()
    with pytest.raises(InputError, match=r"1 image files not found, e\.g\. .*2\.png"):
        read_label_csv(path)
    (tmp_path / "bad.csv").write_text("file,tags\nimg/0.png,a\n")
    with pytest.raises(InputError, match="header must name a path column"):
        read_label_csv(tmp_path / "bad.csv")


def test_split_column(tmp_path):
    path = _tiny_csv(tmp_path, ["a,train", "b,val", "a;b,train"], header="path,labels,split")
    train, val = csv_datasets(path, image_size=8)
    assert len(train) == 2 and len(val) == 1
    x, y = val[0]
    assert x.shape == (3, 8, 8) and y.tolist() == [0.0, 1.0]
    from alignnet.train import load_preset
    from alignnet.train.finetune import finetune_settings

    data = finetune_settings(load_preset("finetune"), "fmnist_bcos", path)["data"]  # what --data csv:FILE sets
    assert data["dataset"] == "csv" and data["root"] == str(path) and data["val_fraction"] == 0.1
    from alignnet.train import DataConfig
    from alignnet.train.runner import build_datasets

    train, _, n = build_datasets(DataConfig(dataset="csv", root=str(path), image_size=8, train_subset=1))
    assert len(train) == 1 and n == 2 and train.multilabel and train.classes == ("a", "b")  # a subset stays multi-label


def test_unreadable_image_in_the_csv_is_skipped_or_refused(tmp_path):
    path = _tiny_csv(tmp_path, ["a", "b", "a;b"])
    (tmp_path / "img" / "1.png").write_bytes(b"not a png")
    table = read_label_csv(path)
    data = MultiLabelCsv(table)
    with pytest.warns(UserWarning, match=r"1\.png"):
        assert data[1] is None
    assert data.skipped == 1 and data[2][1].tolist() == [1.0, 1.0]
    with pytest.raises(CorruptImageError, match=r"1\.png"):
        MultiLabelCsv(table, strict=True)[1]


# --------------------------------------------------------------------------------------- a multi-label run
@pytest.fixture(scope="module")
def mosaic_csv(tmp_path_factory):
    """60 mosaics (2x2 cells of 16x16 Fashion-MNIST items, 32x32) with 1-3 of the classes in NAMES."""
    x, y = load_embedded("train").tensors()
    keep = np.isin(y.numpy(), list(NAMES))
    small = torch.nn.functional.avg_pool2d(x[keep][:, 0:1], 2)[:, 0]  # (n, 16, 16) grey
    items = (small.numpy() * 255).round().astype(np.uint8)
    mosaics, cells = make_mosaics(items, y.numpy()[keep], n=60, grid=2, max_items=3, seed=0)
    labels = [[NAMES[k] for k in sorted(set(row[row >= 0]))] for row in cells]
    root = tmp_path_factory.mktemp("mosaics")
    return write_label_csv(root / "labels.csv", mosaics, labels), cells


@pytest.fixture(scope="module")
def run(mosaic_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("mlrun")
    sets = [a for s in QUICK for a in ("--set", s)]
    assert cli_main(["train", "--data", f"csv:{mosaic_csv[0]}", "--init-from", "fmnist_bcos", "--epochs", "3",
                     "--set", "model.threshold=0.4", *sets, "-o", str(out)]) == 0  # fmt: skip
    return out


def test_write_label_csv_refuses_to_overwrite(mosaic_csv):
    with pytest.raises(FileExistsError, match="would overwrite"):
        write_label_csv(mosaic_csv[0], np.zeros((1, 4, 4), np.uint8), [["shirt"]])


def test_multilabel_run_records_map_and_threshold(run, mosaic_csv):
    summary = json.loads((run / "summary.json").read_text())
    assert summary["multilabel"] is True and summary["monitor"] == "val_map" and summary["best_val_acc"] is None
    model = alignnet.load_model(run / "model.safetensors")
    assert model.class_names == ("shirt", "sneaker", "trouser") and model.multilabel_threshold == 0.4
    # the exported model is the best epoch's: its mAP on the validation rows is the best val_map logged
    _, val = csv_datasets(mosaic_csv[0], image_size=32, val_fraction=0.1, seed=0)
    xs, ys = zip(*(val[i] for i in range(len(val))), strict=True)
    with torch.no_grad():
        logits = model(torch.stack(xs))
    assert mean_average_precision(logits, torch.stack(ys)) == pytest.approx(summary["best_val_score"], abs=1e-5)
    logged = [float(r.split(",")[0]) for r in _column(run / "metrics.csv", "val_map")]
    assert max(logged) == pytest.approx(summary["best_val_score"], abs=1e-6) and len(logged) == 3


def _column(path, name):
    lines = path.read_text().splitlines()
    i = lines[0].split(",").index(name)
    return [line.split(",")[i] for line in lines[1:] if line.split(",")[i]]


def _probabilities(model, image_path):
    from alignnet.data import fit_to_model

    with torch.no_grad():
        return torch.sigmoid(model(fit_to_model(model, image_path)[None])[0])


def test_cli_explain_explains_every_label_above_the_threshold(run, mosaic_csv, tmp_path, capsys):
    model = alignnet.load_model(run / "model.safetensors")
    images = sorted((mosaic_csv[0].parent / "images").glob("*.png"))[:2]
    for threshold in (None, 0.02):
        capsys.readouterr()
        extra = [] if threshold is None else ["--threshold", str(threshold)]
        assert cli_main(["explain", *map(str, images), "--model", str(run / "model.safetensors"),
                         "--out", str(tmp_path / f"x{threshold}"), *extra]) == 0  # fmt: skip
        out = capsys.readouterr().out
        t = 0.4 if threshold is None else threshold
        for image in images:
            line = next(x for x in out.splitlines() if image.name in x)
            p = _probabilities(model, image)
            expected = [k for k in torch.argsort(p, descending=True).tolist() if p[k] >= t] or [int(p.argmax())]
            named = re.findall(r"(\w+) \((\d)\) logit", line)
            assert [int(i) for _, i in named] == expected, line
            assert ("labels with p >= " if p[expected[0]] >= t else "no label has p >= ") in line


def test_cli_evaluate_on_the_csv(run, mosaic_csv, tmp_path, capsys):
    capsys.readouterr()
    args = ["evaluate", "--model", str(run / "model.safetensors"), "--data", f"csv:{mosaic_csv[0]}", "--quiet"]
    assert cli_main([*args, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "accuracy.json").read_text())
    model = alignnet.load_model(run / "model.safetensors")
    table = read_label_csv(mosaic_csv[0], model.class_names)
    with torch.no_grad():
        logits = torch.cat([model(torch.stack([alignnet.data.fit_to_model(model, p) for p in table.paths]))])
    assert result["map"] == pytest.approx(mean_average_precision(logits, table.targets), abs=1e-6)
    f1 = f1_at_threshold(torch.sigmoid(logits), table.targets, 0.4)
    assert result["threshold"] == 0.4 and result["f1"] == pytest.approx(f1.mean(), abs=1e-6) and result["n"] == 60
    assert f"mAP {result['map']:.4f}" in capsys.readouterr().out
    assert cli_main([*args, "--out", str(tmp_path)]) != 0  # nothing is silently overwritten
    assert "would overwrite" in capsys.readouterr().err


def test_multilabel_localisation_on_mosaics(run, mosaic_csv):
    model = alignnet.load_model(run / "model.safetensors").double()
    table = read_label_csv(mosaic_csv[0], model.class_names)
    cells = mosaic_csv[1][:3]  # Fashion-MNIST labels per cell; the model's class index of each
    index = {k: model.class_names.index(n) for k, n in NAMES.items()}
    cell_labels = np.vectorize(lambda k: index.get(k, -1))(cells)
    x = torch.stack([alignnet.data.fit_to_model(model, p) for p in table.paths[:3]]).double()
    r = multilabel_localisation(model, x, cell_labels, grid=2)
    image, label, masks = label_cells(cell_labels)
    assert r["image"].tolist() == image.tolist() and r["label"].tolist() == label.tolist()
    # brute force: each label's explanation, positive contributions summed inside its cells over the total
    for i, (img, k, m) in enumerate(zip(image, label, masks, strict=True)):
        e = alignnet.explain(model, x[img : img + 1], int(k))
        pos = e.contributions[0].clamp_min(0)
        inside = sum(float(pos[16 * (c // 2) : 16 * (c // 2 + 1), 16 * (c % 2) : 16 * (c % 2 + 1)].sum())
                     for c in np.flatnonzero(m))  # fmt: skip
        assert r["score"][i] == pytest.approx(inside / float(pos.sum()), rel=1e-9)


def test_served_multilabel_model_lists_the_labels_above_threshold(run, mosaic_csv):
    from fastapi.testclient import TestClient

    from alignnet.serve.app import create_app
    from alignnet.serve.backend import build_models

    served = build_models([str(run / "model.safetensors")], progress=False)
    client = TestClient(create_app(served, methods=["grad"]))
    info = client.get("/api/info").json()["models"][0]
    assert info["classes"] == ["shirt", "sneaker", "trouser"] and info["threshold"] == 0.4
    image = sorted((mosaic_csv[0].parent / "images").glob("*.png"))[0]
    r = client.post(f"/api/explain?model={info['id']}", content=image.read_bytes())
    assert r.status_code == 200, r.text
    e = r.json()
    p = _probabilities(served[0].model, image)
    expected = [k for k in torch.argsort(p, descending=True).tolist() if p[k] >= 0.4]
    assert [c["index"] for c in e["labels"]] == expected and e["threshold"] == 0.4
    assert {c["name"] for c in e["top"]} <= {"shirt", "sneaker", "trouser"}


# ----------------------------------------------------------------------- evaluate on a folder of your images
def test_cli_evaluate_accuracy_on_an_image_folder(tmp_path, capsys):
    model = alignnet.load_pretrained("fmnist_bcos")
    x, y = load_embedded("test").tensors()
    names = {1: "Trouser", 7: "Sneaker", 8: "Bag"}  # folders named after three of the model's classes
    for k, name in names.items():
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in np.flatnonzero(y.numpy() == k)[:10]:
            Image.fromarray((x[i, 0].numpy() * 255).round().astype(np.uint8)).save(
                tmp_path / "data" / name / f"{i}.png"
            )
    capsys.readouterr()
    assert cli_main(["evaluate", "--model", "fmnist_bcos", "--data", f"imagefolder:{tmp_path / 'data'}",
                     "--quiet", "--out", str(tmp_path / "out")]) == 0  # fmt: skip
    result = json.loads((tmp_path / "out" / "accuracy.json").read_text())
    # brute force: the same PNGs through the model's own preparation, labels by the model's class index
    correct = [int(model(alignnet.data.fit_to_model(model, p)[None]).argmax()) == k
               for k, name in names.items() for p in sorted((tmp_path / "data" / name).glob("*.png"))]  # fmt: skip
    assert result["n"] == 30 and result["accuracy"] == pytest.approx(np.mean(correct))
    assert result["per_class_accuracy"][0] is None and result["per_class_accuracy"][1] is not None
    assert f"accuracy {result['accuracy']:.4f}" in capsys.readouterr().out
    (tmp_path / "data" / "cat").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "data" / "cat" / "0.png")
    assert cli_main(["evaluate", "--model", "fmnist_bcos", "--data", f"imagefolder:{tmp_path / 'data'}"]) != 0
    assert "class folders cat are not among the model's classes" in capsys.readouterr().err


def test_labels_above_is_every_label_at_the_threshold_most_probable_first():
    from alignnet.metrics import labels_above

    # sigmoid(0) = 0.5 is at the threshold (kept); ties keep class order
    logits = torch.tensor([-1.0, 2.0, 0.0, 2.0, -0.1])
    assert labels_above(logits, 0.5) == [1, 3, 2]
    assert labels_above(logits, 0.9) == []
    assert labels_above(logits, 0.2) == [1, 3, 2, 4, 0]
