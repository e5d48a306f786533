"""The papers' evaluation protocols as named, frozen presets (docs/metrics.md).

``alignnet evaluate --preset NAME`` starts from one of these; any option given explicitly on the
command line overrides the preset's value. Every localisation preset states its confidence
threshold: the B-cos v2 / B-cosification code keeps cells whose true-class ``sigmoid(logit)``
exceeds 0.5 (``_noconfthresh``: 0), Rao et al.'s GridPG requires 0.99 -- numbers measured with
different thresholds are not comparable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from ..errors import InputError

__all__ = ["PRESETS", "Protocol", "get_preset", "list_presets"]

METRICS = ("localisation", "pixel-removal")


@dataclass(frozen=True)
class Protocol:
    """Everything that defines one evaluation (besides the model, data and method).

    Localisation (the grid pointing game, docs/metrics.md#localisation-grid-pointing-game) uses ``grid`` .. ``confidence``; pixel removal
    (docs/metrics.md#pixel-removal) uses ``n_images`` .. ``removal_seed``; ``batch_size`` and ``shard_size`` only decide
    how the work is cut (results do not depend on the number of processes, but a different batch
    size may change them in the last float bits, and LIME's samples depend on it).
    """

    metric: str = "localisation"
    grid: int = 3  # cells per side
    n_grids: int = 500
    seed: int = 42  # grid selection seed
    smooth: int = 0  # odd average-pool size before scoring (0 or 1: none; B-cos v2 ImageNet: 15)
    confidence: float = 0.5  # cells need sigmoid(true-class logit) > confidence (GridPG: 0.99)
    rescale: bool = False  # shrink each cell image by 1/grid so the grid has the model's input size (ViTs)
    n_images: int = 1024
    steps: int = 128
    fraction: float = 0.25  # largest removed fraction
    orders: tuple[str, ...] = ("least", "most")
    removal_seed: int = 0  # random order among equally important pixels
    batch_size: int = 36  # maps attributed per step
    shard_size: int = 0  # grids or images per shard file; 0: a default for the metric
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise InputError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.grid < 1 or self.n_grids < 1 or self.n_images < 1 or self.batch_size < 1 or self.shard_size < 0:
            raise InputError("grid, n_grids, n_images and batch_size must be >= 1 and shard_size >= 0")
        if self.smooth > 1 and self.smooth % 2 == 0:
            raise InputError(f"smooth must be odd (same-size output), got {self.smooth}")
        if not 0 <= self.confidence < 1:
            raise InputError(f"confidence must be in [0, 1), got {self.confidence}")
        if not self.orders or any(o not in ("least", "most") for o in self.orders):
            raise InputError(f"orders must be least and/or most, got {self.orders!r}")
        object.__setattr__(self, "orders", tuple(self.orders))

    def with_values(self, **values) -> Protocol:
        """A copy with some fields changed (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    def record(self) -> dict:
        """The fields that define the result, for the result files."""
        d = asdict(self)
        d.pop("description")
        d["orders"] = list(self.orders)
        return d


PRESETS: dict[str, Protocol] = {
    "coda-localisation": Protocol(
        "localisation", grid=3, n_grids=500, smooth=0, confidence=0.5,
        description="CoDA-Nets / B-cos v1 CIFAR-10: 500 grids of 3x3, no smoothing, threshold 0.5 (docs/metrics.md#localisation-grid-pointing-game)",
    ),
    "coda-pixel-removal": Protocol(
        "pixel-removal", n_images=1024, steps=128, fraction=0.25,
        description="CoDA-Nets: 1024 images, up to 25% removed in 128 steps, both orders (docs/metrics.md#pixel-removal)",
    ),
    "bcos-v2-localisation": Protocol(
        "localisation", grid=2, n_grids=250, smooth=15, confidence=0.5, batch_size=8,
        description="B-cos v2 ImageNet: 250 grids of 2x2, smoothing 15, threshold 0.5 (config 250_2x2)",
    ),
    "bcos-v2-localisation-noconfthresh": Protocol(
        "localisation", grid=2, n_grids=250, smooth=15, confidence=0.0, batch_size=8,
        description="B-cos v2 ImageNet without confidence threshold (250_2x2_noconfthresh), smoothing 15",
    ),
    "bcos-v2-localisation-cifar": Protocol(
        "localisation", grid=3, n_grids=500, smooth=0, confidence=0.5,
        description="B-cos v2 CIFAR-10: 500 grids of 3x3, no smoothing (smoothing 1), threshold 0.5 (500_3x3)",
    ),
    "bcosification-localisation": Protocol(
        "localisation", grid=3, n_grids=500, smooth=15, confidence=0.5, batch_size=9,
        description="B-cosification CNNs: 500 grids of 3x3, smoothing 15, threshold 0.5 (500_3x3)",
    ),
    "bcosification-localisation-vit": Protocol(
        "localisation", grid=2, n_grids=500, smooth=15, confidence=0.5, rescale=True, batch_size=8,
        description="B-cosification ViTs: 500 grids of 2x2, each image shrunk to half size (224 -> 112-pixel cells, "
        "so the grid is the ViT's 224x224 input), smoothing 15, threshold 0.5 (500_2x2_rescale)",
    ),
    "gridpg-localisation": Protocol(
        "localisation", grid=3, n_grids=500, smooth=0, confidence=0.99,
        description="Rao et al. GridPG threshold: cells need confidence >= 0.99; 500 grids of 3x3, no smoothing",
    ),
    "imagenet-pixel-removal": Protocol(
        "pixel-removal", n_images=1024, steps=128, fraction=0.25, batch_size=16,
        description="Section 9 on ImageNet images (224x224): 1024 images, 25%, 128 steps, both orders",
    ),
}  # fmt: skip


def list_presets() -> list[str]:
    """Names of the evaluation presets."""
    return sorted(PRESETS)


def get_preset(name: str) -> Protocol:
    """The preset ``name``; unknown names raise ``ValueError`` listing the known ones."""
    if name not in PRESETS:
        raise InputError(f"unknown evaluation preset {name!r} (known: {', '.join(list_presets())})")
    return PRESETS[name]
