"""Explaining videos frame by frame (docs/video.md#video-explanations).

Read the frames, predict each, explain the class predicted most often (or a given class) in
every frame, and write frame | colour explanation | contribution map side by side as a GIF or
MP4. The *stability* of a clip's explanations is the mean Pearson correlation of consecutive
frames' contribution maps (1 = identical maps up to scale; 0 = unrelated).

Library use::

    frames = read_video("clip.mp4", max_frames=64)          # (T, 3, H, W) in [0, 1]
    result = explain_frames(model, alignnet.data.fit_to_model(model, frames))
    result.stability, write_animation("out.gif", render_panels(result))

Decoding uses PyAV (a base dependency: its wheels carry FFmpeg) and falls back to imageio for formats it lacks.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import InputError
from .explanation import colour_explanation, explain

__all__ = [
    "VideoExplanation",
    "explain_frames",
    "map_correlations",
    "read_video",
    "render_panels",
    "synthetic_clip",
    "write_animation",
]


@dataclass(frozen=True)
class VideoExplanation:
    """Explanations of T frames for one class.

    Attributes
    ----------
    frames: ``(T, 3, H, W)`` the model's input frames in [0, 1].
    logits: ``(T, K)``.
    target: the explained class.
    contributions: ``(T, H, W)`` contribution maps (they sum, with the bias, to the target logit).
    colour: ``(T, H, W, 4)`` colour explanations, or None for models without the 6-channel encoding.
    correlations: ``(T - 1,)`` Pearson correlation of consecutive contribution maps.
    """

    frames: Tensor
    logits: Tensor
    target: int
    contributions: Tensor
    colour: np.ndarray | None
    correlations: Tensor

    @property
    def stability(self) -> float:
        """Mean correlation of consecutive contribution maps (NaN for a single frame)."""
        return float(self.correlations.mean()) if len(self.correlations) else math.nan

    @property
    def predictions(self) -> Tensor:
        """``(T,)`` predicted class per frame."""
        return self.logits.argmax(1)


def read_video(path: str | Path, max_frames: int | None = None, stride: int = 1) -> tuple[Tensor, float]:
    """Decode a video (or animated GIF) into ``(T, 3, H, W)`` float32 frames in [0, 1] and its fps.

    Parameters
    ----------
    max_frames: keep at most this many frames (after ``stride``).
    stride: keep every ``stride``-th frame.

    Notes
    -----
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when it
    cannot be decoded or holds no frame.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video not found: {path}")
    if stride < 1 or (max_frames is not None and max_frames < 1):
        raise InputError(f"stride and max_frames must be >= 1, got {stride} and {max_frames}")
    try:
        frames, fps = _read_pyav(path, max_frames, stride)
    except ImportError:
        frames, fps = _read_imageio(path, max_frames, stride)
    except Exception as first:  # PyAV raises its own error types (av.error.*) for unreadable data
        try:
            frames, fps = _read_imageio(path, max_frames, stride)
        except Exception:
            raise InputError(f"cannot read video {path}: {first}") from None
    if not frames:
        raise InputError(f"cannot read video {path}: it holds no decodable frame")
    array = np.stack(frames)  # (T, H, W, 3) uint8
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div_(255.0), fps


def _read_pyav(path: Path, max_frames: int | None, stride: int) -> tuple[list[np.ndarray], float]:
    import av

    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise InputError("no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        for i, frame in enumerate(container.decode(stream)):
            if i % stride:
                continue
            frames.append(frame.to_ndarray(format="rgb24"))
            if max_frames is not None and len(frames) >= max_frames:
                break
    return frames, fps


def _read_imageio(path: Path, max_frames: int | None, stride: int) -> tuple[list[np.ndarray], float]:
    import imageio.v3 as iio

    frames: list[np.ndarray] = []
    for i, frame in enumerate(iio.imiter(path)):
        if i % stride:
            continue
        frame = np.asarray(frame)
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, -1)
        frames.append(frame[..., :3].astype(np.uint8))
        if max_frames is not None and len(frames) >= max_frames:
            break
    meta = iio.immeta(path)
    duration = meta.get("duration")  # GIF: milliseconds per frame
    fps = float(meta.get("fps") or (1000.0 / duration if duration else 10.0))
    return frames, fps


def map_correlations(maps: Tensor) -> Tensor:
    """``(T, H, W) -> (T - 1,)`` Pearson correlation of each map with the next (0 if one is constant)."""
    flat = maps.detach().double().flatten(1)
    centred = flat - flat.mean(1, keepdim=True)
    norm = torch.linalg.vector_norm(centred, dim=1)
    num = (centred[:-1] * centred[1:]).sum(1)
    den = norm[:-1] * norm[1:]
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num)).float()


def explain_frames(
    model: nn.Module,
    frames: Tensor,
    target: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> VideoExplanation:
    """Explain every frame for one class.

    Parameters
    ----------
    frames: ``(T, 3, H, W)`` in [0, 1], already at the model's input size (see ``fit_to_model``).
    target: class to explain; None picks the class predicted most often over the clip (ties: the
        class with the larger summed logit).
    batch_size: frames per forward/backward pass.
    """
    from tqdm.auto import tqdm

    if frames.dim() != 4 or frames.shape[0] < 1:
        raise InputError(f"frames must have shape (T, C, H, W) with T >= 1, got {tuple(frames.shape)}")
    device = next(model.parameters()).device
    chunks = range(0, frames.shape[0], batch_size)
    if target is None:
        with torch.no_grad():
            logits = torch.cat([model(frames[i : i + batch_size].to(device)).cpu() for i in chunks])
        counts = Counter(logits.argmax(1).tolist())
        best = max(counts.values())
        tied = [c for c, n in counts.items() if n == best]
        target = max(tied, key=lambda c: float(logits[:, c].sum()))
    logits_all, maps, colours = [], [], []
    for i in tqdm(chunks, desc="explaining frames", unit="batch", disable=not progress, leave=False):
        e = explain(model, frames[i : i + batch_size].to(device), int(target))
        logits_all.append(e.logits.cpu())
        maps.append(e.contributions.cpu())
        if e.inputs.shape[1] == 6:
            colours.extend(colour_explanation(e, j) for j in range(len(e)))
    contributions = torch.cat(maps)
    return VideoExplanation(
        frames=frames.cpu(),
        logits=torch.cat(logits_all),
        target=int(target),
        contributions=contributions,
        colour=np.stack(colours) if colours else None,
        correlations=map_correlations(contributions),
    )


def _upscale(image: np.ndarray, factor: int) -> np.ndarray:
    return image.repeat(factor, 0).repeat(factor, 1) if factor > 1 else image


def render_panels(result: VideoExplanation, min_height: int = 160) -> np.ndarray:
    """``(T, H', W', 3)`` uint8 frames: input | colour explanation (over black) | contribution map.

    Small frames are enlarged by an integer factor (nearest neighbour) to at least ``min_height``;
    each contribution map uses a symmetric colour scale (red +, blue -) set by its own largest value.
    """
    from matplotlib import colormaps

    cmap = colormaps["bwr"]
    t, _, h, w = result.frames.shape
    factor = max(1, math.ceil(min_height / h))
    out = []
    for k in range(t):
        panels = [result.frames[k].permute(1, 2, 0).numpy()]
        if result.colour is not None:
            rgba = result.colour[k]
            panels.append(rgba[..., :3] * rgba[..., 3:])
        c = result.contributions[k].numpy()
        lim = float(np.abs(c).max()) or 1.0
        panels.append(cmap(0.5 + 0.5 * c / lim)[..., :3])
        gap = np.ones((h, max(1, w // 16), 3))
        row = np.concatenate([p if i == 0 else np.concatenate([gap, p], 1) for i, p in enumerate(panels)], 1)
        out.append(_upscale((np.clip(row, 0, 1) * 255).round().astype(np.uint8), factor))
    return np.stack(out)


def write_animation(path: str | Path, frames: np.ndarray, fps: float = 8.0) -> Path:
    """Write ``(T, H, W, 3)`` uint8 frames as an animated GIF (Pillow) or MP4 (PyAV, H.264)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise InputError(f"the output must end in .gif or .mp4, got {path}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        duration = max(20, round(1000 / fps))
        images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0)
        return path
    import av

    # H.264 with yuv420p needs even sizes: pad by one pixel where needed
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=max(1, round(fps)))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _paste(canvas: Tensor, item: Tensor, cy: float, cx: float, scale: float) -> None:
    """Composite ``item`` (3, h, w) resized by ``scale`` with its centre at (cy, cx) by pixel-wise max."""
    h = max(1, round(item.shape[-2] * scale))
    w = max(1, round(item.shape[-1] * scale))
    small = F.interpolate(item[None], size=(h, w), mode="bilinear", align_corners=False, antialias=scale < 1)[0]
    top, left = round(cy - h / 2), round(cx - w / 2)
    H, W = canvas.shape[-2:]
    y0, x0, y1, x1 = max(0, top), max(0, left), min(H, top + h), min(W, left + w)
    if y0 >= y1 or x0 >= x1:
        return
    region = small[:, y0 - top : y1 - top, x0 - left : x1 - left].clamp(0, 1)
    canvas[:, y0:y1, x0:x1] = torch.maximum(canvas[:, y0:y1, x0:x1], region)


def synthetic_clip(first: Tensor, second: Tensor, n_frames: int = 36, size: int = 48) -> Tensor:
    """A clip made of two real images on a black canvas: ``(n_frames, 3, size, size)``.

    Three equal parts: ``first`` slides in from the left to the centre; it zooms out and back in;
    it moves left while ``second`` enters from the right. Images are ``(3, h, w)`` in [0, 1] on a
    dark background (Fashion-MNIST), composited by pixel-wise maximum.
    """
    if first.dim() != 3 or second.dim() != 3:
        raise InputError(f"expected two (3, h, w) images, got {tuple(first.shape)} and {tuple(second.shape)}")
    if n_frames < 3:
        raise InputError(f"n_frames must be >= 3, got {n_frames}")
    third = n_frames // 3
    parts = [third, third, n_frames - 2 * third]
    c = size / 2
    base = 0.8 * size / max(first.shape[-2:])  # the item fills 80% of the canvas
    frames = []
    for k in range(parts[0]):  # translation: from half outside on the left to the centre
        u = k / max(1, parts[0] - 1)
        canvas = torch.zeros(3, size, size)
        _paste(canvas, first, c, (1 - u) * 0.1 * size + u * c, base)
        frames.append(canvas)
    for k in range(parts[1]):  # zoom: 1 -> 0.6 -> 1
        u = k / max(1, parts[1] - 1)
        canvas = torch.zeros(3, size, size)
        _paste(canvas, first, c, c, base * (1 - 0.4 * math.sin(math.pi * u)))
        frames.append(canvas)
    for k in range(parts[2]):  # a second item enters from the right, the first one moves left
        u = k / max(1, parts[2] - 1)
        canvas = torch.zeros(3, size, size)
        _paste(canvas, first, c, c - u * 0.3 * size, base * 0.7)
        _paste(canvas, second, c, size * (1.3 - u * 0.55), base * 0.7)
        frames.append(canvas)
    return torch.stack(frames)
