"""``alignnet demo`` end to end (quick version) and the HTML report."""

import contextlib
import io
import re

import pytest
import torch

import alignnet
from alignnet.cli import main
from alignnet.data import load_embedded
from alignnet.demo import choose_output_dir
from alignnet.report import Report, linked_files


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(io.StringIO()):
        code = main(["demo", "--quick", "--out", str(out), "--no-progress"])
    return code, out, buffer.getvalue()


@pytest.mark.slow
def test_quick_demo_report_and_summary(quick_demo):
    code, out, text = quick_demo
    assert code == 0, text
    html = (out / "index.html").read_text()
    links = linked_files(html)
    assert len(links) >= 8
    assert all((out / f).is_file() and (out / f).stat().st_size > 1000 for f in links)  # links only files that exist
    assert {f.rsplit(".", 1)[1] for f in links} == {"png", "gif"}
    assert "http://" not in html and "https://" not in html and "<script" not in html  # self-contained
    for stage in ("[1/8] load models", "[5/8] localisation", "[8/8] report"):
        assert stage in text
    assert f"report: {out / 'index.html'}" in text
    # the printed accuracy is the model's real accuracy on the embedded test set
    images, labels = load_embedded("test").tensors()
    for kind in ("bcos", "coda"):
        printed = float(re.search(rf"{kind}: test accuracy ([\d.]+) %", text).group(1))
        with torch.no_grad():
            acc = (alignnet.load_pretrained(f"fmnist_{kind}")(images).argmax(1) == labels).float().mean()
        assert printed == pytest.approx(100 * float(acc), abs=0.051)
        assert printed > 60  # trained models, far above chance (10 %)
        means = dict(re.findall(r"(\w+) ([\d.]+)", text.split(f"{kind} localisation mean (2x2): ")[1].splitlines()[0]))
        assert set(means) == {"ours", "gradcam"} and all(0 <= float(v) <= 1 for v in means.values())
        stability = float(re.search(rf"{kind} clip stability: (-?[\d.]+)", text).group(1))
        assert 0 < stability <= 1
    ours_bcos = float(re.search(r"bcos localisation mean \(2x2\): ours ([\d.]+)", text).group(1))
    assert ours_bcos > 0.25  # better than a uniform map


def test_output_dir_policy(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert choose_output_dir(None, False) == tmp_path.joinpath("alignnet-demo").relative_to(tmp_path)
    (tmp_path / "alignnet-demo").mkdir()
    assert str(choose_output_dir(None, False)) == "alignnet-demo"  # empty folder: used
    (tmp_path / "alignnet-demo" / "index.html").write_text("old")
    (tmp_path / "alignnet-demo-2").mkdir()
    (tmp_path / "alignnet-demo-2" / "x").write_text("old")
    assert str(choose_output_dir(None, False)) == "alignnet-demo-3"  # never overwrites a previous run
    with pytest.raises(FileExistsError, match="not empty"):
        choose_output_dir(tmp_path / "alignnet-demo", False)
    assert choose_output_dir(tmp_path / "alignnet-demo", True) == tmp_path / "alignnet-demo"
    assert main(["demo", "--quick", "--out", str(tmp_path / "alignnet-demo")]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "alignnet-demo" / "index.html").read_text() == "old"


def test_report_links_only_existing_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths are relative to the working directory
    (tmp_path / "a.png").write_bytes(b"png")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b c.gif").write_bytes(b"gif")
    r = Report(tmp_path / "index.html", "T <&>", "sub")
    r.figure(tmp_path / "a.png", "caption <b>")
    r.figure("sub/b c.gif")
    r.table(["x", "y"], [["m", 0.123456], ["n", "<i>"]])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        r.figure(tmp_path / "missing.png")
    outside = tmp_path.parent / f"{tmp_path.name}_outside.png"
    outside.write_bytes(b"x")
    with pytest.raises(ValueError, match="not inside"):
        r.link(outside)
    html = r.write().read_text()
    assert linked_files(html) == ["a.png", "sub/b c.gif"]
    assert "0.123" in html and "&lt;i&gt;" in html and "T &lt;&amp;&gt;" in html and "<b>" not in html
    (tmp_path / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match="a.png"):
        r.write()


def test_imagenet_stage_skips_without_cached_weights_and_never_downloads(tmp_path, monkeypatch):
    from alignnet.demo import DemoConfig, _imagenet_stage

    monkeypatch.setenv("ALIGNNET_HOME", str(tmp_path / "home"))
    info = _imagenet_stage(tmp_path, DemoConfig.quick(), None, progress=False)
    assert "skipped" in info["note"] and "--imagenet bcos_resnet18" in info["note"]
    assert not (tmp_path / "home").exists()


@pytest.mark.slow
def test_imagenet_stage_explains_real_photos_and_a_clip(tmp_path, monkeypatch):
    """With ImageNet weights at hand (here random weights registered as a local file), stage 7 explains the
    real photos installed packages carry, and the real street clip when one is installed."""
    from alignnet import pretrained
    from alignnet.data.samples import sample_photos, sample_video
    from alignnet.demo import DemoConfig, _imagenet_stage

    if not sample_photos():
        pytest.skip("no real photos installed (scikit-image or foolbox)")
    torch.manual_seed(0)
    path = alignnet.save_model(alignnet.create_model("bcos_resnet18"), tmp_path / "r18.safetensors")
    alignnet.register_weights("test_demo_r18", "bcos_resnet18", file=path, dataset="ImageNet")
    try:
        info = _imagenet_stage(tmp_path, DemoConfig.quick(), "test_demo_r18", progress=False)
    finally:
        pretrained._ENTRIES.pop("test_demo_r18")
    assert len(info["predicted"]) == min(3, len(sample_photos())) and info["completeness"] < 1e-3
    assert all(p in pretrained.imagenet_classes() for p in info["predicted"])
    assert (tmp_path / "imagenet_photos.png").stat().st_size > 10_000
    if sample_video() is not None:
        assert (tmp_path / "imagenet_clip.gif").is_file() and -1 <= info["stability"] <= 1
