"""Video explanations: reading, explaining, stability, writing; ``alignnet video``."""

from pathlib import Path

import numpy as np
import pytest
import torch

import alignnet
from alignnet.cli import main
from alignnet.video import (
    explain_frames,
    map_correlations,
    read_video,
    render_panels,
    synthetic_clip,
    write_animation,
)

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return alignnet.create_model("bcos_cifar10_9l", width=0.0625).eval()


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory, tiny_model):
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    alignnet.save_model(tiny_model, path)
    return path


def test_map_correlations_match_numpy():
    torch.manual_seed(1)
    maps = torch.randn(5, 7, 6)
    maps[3] = 2.5 * maps[2] + 1.0  # perfectly correlated pair
    expected = [np.corrcoef(maps[i].flatten(), maps[i + 1].flatten())[0, 1] for i in range(4)]
    got = map_correlations(maps)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert got[2] == pytest.approx(1.0, abs=1e-6)
    assert map_correlations(torch.zeros(3, 4, 4)).tolist() == [0.0, 0.0]  # constant maps: 0, not NaN


def test_synthetic_clip_moves_and_adds_an_item():
    a = torch.zeros(3, 28, 28)
    a[:, 4:24, 8:20] = 0.8
    b = torch.zeros(3, 28, 28)
    b[:, 10:18, 2:26] = 0.6
    clip = synthetic_clip(a, b, n_frames=12, size=40)
    assert clip.shape == (12, 3, 40, 40)
    assert 0 <= float(clip.min()) and float(clip.max()) <= 1
    cols = [float((f.sum((0, 1)) * torch.arange(40)).sum() / f.sum()) for f in clip[:4]]
    assert cols == sorted(cols) and cols[-1] - cols[0] > 5  # the item moves right
    areas = [int((f[0] > 0.1).sum()) for f in clip[4:8]]
    assert min(areas) < 0.7 * areas[0]  # zooms out
    right = clip[8:, 0, :, 30:]
    assert float(right[-1].sum()) > float(right[0].sum())  # a second item enters from the right


def test_explain_frames_targets_and_completeness(tiny_model):
    torch.manual_seed(2)
    frames = torch.rand(5, 3, 32, 32)
    r = explain_frames(tiny_model, frames, batch_size=2, progress=False)
    with torch.no_grad():
        preds = tiny_model(frames).argmax(1)
    assert (preds == r.target).sum() == torch.bincount(preds).max()  # the most frequent prediction
    assert r.contributions.shape == (5, 32, 32) and r.colour.shape == (5, 32, 32, 4)
    e = alignnet.explain(tiny_model, frames, r.target)
    torch.testing.assert_close(r.contributions, e.contributions, rtol=1e-4, atol=1e-5)
    bias = e.bias
    torch.testing.assert_close(r.contributions.flatten(1).sum(1) + bias, r.logits[:, r.target], rtol=1e-4, atol=1e-4)
    same = explain_frames(tiny_model, frames[:1].repeat(3, 1, 1, 1), target=4, progress=False)
    assert same.target == 4 and same.stability == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_animation_round_trip(tmp_path, tiny_model, suffix):
    torch.manual_seed(3)
    frames = torch.rand(4, 3, 32, 32)
    panels = render_panels(explain_frames(tiny_model, frames, progress=False), min_height=64)
    assert panels.dtype == np.uint8 and panels.shape[0] == 4 and panels.shape[1] == 64
    path = write_animation(tmp_path / f"clip{suffix}", panels, fps=5)
    back, fps = read_video(path)
    assert back.shape[0] == 4 and back.shape[1] == 3
    assert abs(back.shape[-1] - panels.shape[2]) <= 1 and abs(back.shape[-2] - panels.shape[1]) <= 1
    ref = torch.from_numpy(panels).permute(0, 3, 1, 2).float() / 255
    err = (back[..., : ref.shape[-2], : ref.shape[-1]] - ref).abs().mean()
    assert err < (0.05 if suffix == ".gif" else 0.08)  # GIF: 256-colour palette; MP4: lossy
    assert fps == pytest.approx(5, rel=0.05)


def test_corrupt_and_missing_video_are_clear_errors(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="cannot read video .*broken.mp4"):
        read_video(bad)
    with pytest.raises(FileNotFoundError, match="video not found"):
        read_video(tmp_path / "nope.avi")
    assert main(["video", str(bad), "--out", str(tmp_path / "o.gif"), "--model", "fmnist_bcos"]) == 2


@pytest.mark.skipif(not VTEST.is_file(), reason="Debian's opencv-doc (vtest.avi) is not installed")
def test_real_camera_recording(tmp_path, tiny_model_path, capsys):
    frames, fps = read_video(VTEST, max_frames=3, stride=5)
    assert frames.shape == (3, 3, 576, 768) and fps == pytest.approx(10, rel=0.01)
    assert 0.05 < float(frames.mean()) < 0.95 and float(frames.std()) > 0.05  # real pixels
    out = tmp_path / "vtest.gif"
    args = [
        "video",
        str(VTEST),
        "--model",
        str(tiny_model_path),
        "--out",
        str(out),
        "--max-frames",
        "3",
        "--no-progress",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "stability" in text and out.stat().st_size > 1000
    assert read_video(out)[0].shape[0] >= 2


def test_cli_video_round_trip_and_overwrite(tmp_path, tiny_model_path, capsys):
    clip = (torch.rand(6, 40, 56, 3) * 255).to(torch.uint8).numpy()
    src = write_animation(tmp_path / "in.mp4", clip, fps=6)
    out = tmp_path / "out.gif"
    base = ["video", str(src), "--model", str(tiny_model_path), "--out", str(out), "--no-progress"]
    assert main([*base, "--target", "3"]) == 0
    text = capsys.readouterr().out
    assert "6 frames at 32x32" in text and "class 3" in text
    stability = float(text.split("consecutive contribution maps): ")[1].split()[0])
    assert -1 <= stability <= 1
    assert read_video(out)[0].shape[0] >= 2
    assert main(base) == 2 and "would overwrite" in capsys.readouterr().err
    assert main([*base, "--force", "--resize", "none"]) == 0
    assert "6 frames at 40x56" in capsys.readouterr().out
    assert main([*base, "--force", "--target", "99"]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["video", str(src), "--out", str(tmp_path / "x.avi"), "--model", str(tiny_model_path)]) == 2
