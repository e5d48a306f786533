"""``alignnet explain`` and ``alignnet compare`` through the real entry point; shared command helpers."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import alignnet
from alignnet.cli import main
from alignnet.cli._common import check_new_files, load_images
from alignnet.cli.explain import parse_target
from alignnet.explanation import layer_contributions


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = alignnet.create_model("bcos_cifar10_9l", width=0.0625).eval()
    path = tmp_path_factory.mktemp("m") / "tiny.safetensors"
    alignnet.save_model(model, path)
    return model, path


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """A grey PNG, an RGBA PNG with transparency, a 16-bit PNG and a JPEG of odd sizes."""
    d = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(d / "grey.png")
    rgba = rng.integers(0, 256, (40, 60, 4), dtype=np.uint8)
    rgba[:10, :, 3] = 0  # transparent band -> white
    Image.fromarray(rgba, "RGBA").save(d / "rgba.png")
    Image.fromarray(rng.integers(0, 65536, (50, 30), dtype=np.uint16)).save(d / "deep.png")
    Image.fromarray(rng.integers(0, 256, (45, 45, 3), dtype=np.uint8)).save(d / "photo.jpg")
    return [d / "grey.png", d / "rgba.png", d / "deep.png", d / "photo.jpg"]


def test_load_images_any_mode_and_reports_bad_paths(tiny, image_files, tmp_path):
    model, _ = tiny
    images = load_images(image_files, model)
    assert [tuple(x.shape) for x in images] == [(3, 32, 32)] * 4
    assert all(0 <= float(x.min()) and float(x.max()) <= 1 for x in images)
    assert float(images[1][:, :3].min()) > 0.99  # transparent band composited over white
    raw = np.asarray(Image.open(image_files[2]), dtype=np.float64) / 65535
    assert float(load_images([image_files[2]], model, "none")[0][0].mean()) == pytest.approx(raw.mean(), abs=1e-4)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"2 of 3 images could not be read: .*bad\.png.*missing\.png"):
        load_images([image_files[0], bad, tmp_path / "missing.png"], model)


def test_check_new_files(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    check_new_files([tmp_path / "b.png"], force=False)
    check_new_files([tmp_path / "a.png"], force=True)
    with pytest.raises(FileExistsError, match="a.png"):
        check_new_files([tmp_path / "a.png", tmp_path / "b.png"], force=False)


def test_parse_target():
    assert parse_target("pred") == "pred" and parse_target("top3") == "top3" and parse_target("7") == 7
    for bad in ("-1", "top0", "best"):
        with pytest.raises(Exception, match="class index|expected"):
            parse_target(bad)


def test_layer_contributions_sum_to_the_logit(tiny):
    """Each layer's map is d logit/d a * a; for the plain B-cos stack every map sums to logit - bias."""
    model, _ = tiny
    model = model.double()
    try:
        x = torch.rand(3, 32, 32, dtype=torch.float64)
        maps = layer_contributions(model, x, 4)
        e = alignnet.explain(model, x[None], 4)
        assert len(maps) == 9 and [tuple(m.shape) for _, m in maps][::4] == [(32, 32), (16, 16), (8, 8)]
        for _, m in maps:
            assert float(m.sum()) == pytest.approx(float(e.outputs[0] - e.bias[0]), rel=1e-9, abs=1e-9)
        torch.testing.assert_close(maps[0][1], e.contributions[0])  # the first layer's input is the encoding
    finally:
        model.float()


def test_cli_explain(tiny, image_files, tmp_path, capsys):
    _, path = tiny
    out = tmp_path / "ex"
    args = [
        "explain",
        *map(str, image_files[:2]),
        "--model",
        str(path),
        "--target",
        "top3",
        "--out",
        str(out),
        "--layers",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    for stem in ("grey", "rgba"):
        assert (out / f"{stem}_explain.png").stat().st_size > 5000
        assert (out / f"{stem}_layers.png").stat().st_size > 5000
    errors = [float(t.split("completeness error ")[1].split(")")[0]) for t in text.splitlines() if "completeness" in t]
    assert len(errors) == 2 and max(errors) < 1e-4
    assert text.count(" logit ") == 6  # three classes per image
    assert main(args) == 2  # refuses to overwrite
    assert "would overwrite" in capsys.readouterr().err
    assert main([*args[:-1], "--force", "--target", "2"]) == 0
    assert "class 2 logit" in capsys.readouterr().out
    assert (
        main(["explain", str(image_files[0]), "--model", str(path), "--target", "10", "--out", str(tmp_path / "y")])
        == 2
    )
    assert "out of range" in capsys.readouterr().err


def test_cli_explain_gives_every_image_its_own_file(tiny, tmp_path, capsys):
    """``a/x.png b/x.png x_2.png``: three images, three figures (``x_2`` is not given to a second ``x``)."""
    _, path = tiny
    rng = np.random.default_rng(1)
    inputs = [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "x_2.png"]
    for p in inputs:
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p)
    out = tmp_path / "ex"
    args = ["explain", *map(str, inputs), "--model", str(path), "--out", str(out)]
    assert main(args) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if " -> " in line]
    written = {line.split(": ", 1)[0]: line.rsplit(" -> ", 1)[1] for line in lines}  # input -> its figure
    stems = ("a_x", "b_x", "x_2")
    assert written == {str(p): str(out / f"{s}_explain.png") for p, s in zip(inputs, stems, strict=True)}
    assert sorted(p.name for p in out.iterdir()) == ["a_x_explain.png", "b_x_explain.png", "x_2_explain.png"]
    assert main(args) == 2 and "would overwrite" in capsys.readouterr().err


def test_cli_explain_bad_inputs(tiny, tmp_path, capsys):
    _, path = tiny
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    assert main(["explain", str(bad), "--model", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "broken.png" in capsys.readouterr().err
    assert main(["explain", str(bad), "--model", "no_such_model", "--out", str(tmp_path / "o")]) == 2
    assert "no_such_model" in capsys.readouterr().err


def test_cli_compare(tiny, image_files, tmp_path, capsys):
    _, path = tiny
    out = tmp_path / "cmp.png"
    args = [
        "compare",
        *map(str, image_files),
        "--model",
        str(path),
        "--methods",
        "ours,grad,gradcam",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert out.stat().st_size > 10_000 and "3 methods (ours, grad, gradcam) on 4 images" in capsys.readouterr().out
    assert main(args) == 2 and "would overwrite" in capsys.readouterr().err
    assert main([*args[:-4], "--methods", "ours,nope", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "unknown method(s) nope" in err and "occlusion9" in err  # the registry's names


def test_every_command_has_working_help(capsys):
    """``--help`` of every subcommand prints and exits 0 (evaluate's once crashed on a '%' in a preset text)."""
    from alignnet.cli import COMMANDS

    commands = sorted(COMMANDS)
    assert {"demo", "evaluate", "explain", "train", "models"} <= set(commands)
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0, command
        assert f"usage: alignnet {command}" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["demo", "explain", "compare", "video", "toy"])
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--out" in text and "--force" in text
    if command in ("explain", "compare", "video"):
        assert "--resize" in text and "centre-crops" in text
        # --model names every weights file shipped in the package (read from the registry)
        from alignnet.pretrained import get_weights, list_pretrained

        shipped = [n for n in list_pretrained() if get_weights(n).file is not None]
        assert "fmnist_bcosified" in shipped and all(n in text for n in shipped)


def test_installed_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "alignnet", "toy", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "B in {1, 2, 50}" in proc.stdout


@pytest.mark.parametrize("error", [ValueError("a slip inside"), KeyError("missing"), RuntimeError("torch said")])
def test_a_bug_keeps_its_traceback(monkeypatch, error):
    """Only alignnet's deliberate user errors are one line; a plain ValueError/KeyError is a bug (issue 22.16)."""
    import alignnet.cli.toy as toy

    def broken(args):
        raise error

    monkeypatch.setattr(toy, "run", broken)
    with pytest.raises(type(error)):
        main(["toy", "--out", "x.png"])


def test_a_user_error_is_one_line_with_exit_code_2(monkeypatch, capsys):
    import alignnet.cli.toy as toy
    from alignnet.errors import InputError

    def refuses(args):
        raise InputError("--out must end in .png")

    monkeypatch.setattr(toy, "run", refuses)
    assert main(["toy", "--out", "x.png"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["alignnet toy: error: --out must end in .png"]
    assert issubclass(InputError, ValueError)  # library callers that catch ValueError still catch it
