"""The papers' interpretability metrics (docs/metrics.md), their plots and the ``evaluate`` CLI.

Pure tensor functions (:func:`make_grids`, :func:`tile_grids`, :func:`localisation_scores`,
:func:`removal_curves`) and the protocols built on them (:func:`evaluate_localisation`,
:func:`evaluate_pixel_removal`). Plots live in :mod:`alignnet.metrics.plots` (matplotlib is
imported only there).
"""

from .interop import quantus_explain_func
from .localisation import (
    LocalisationResult,
    evaluate_localisation,
    localisation_scores,
    make_grids,
    summarise,
    tile_grids,
)
from .multilabel import (
    average_precision,
    evaluate_labels,
    f1_at_threshold,
    label_cells,
    labels_above,
    mean_average_precision,
    multilabel_localisation,
    multilabel_summary,
)
from .pixel_removal import PixelRemovalResult, evaluate_pixel_removal, removal_counts, removal_curves

__all__ = [
    "LocalisationResult",
    "average_precision",
    "evaluate_labels",
    "f1_at_threshold",
    "label_cells",
    "labels_above",
    "mean_average_precision",
    "multilabel_localisation",
    "multilabel_summary",
    "PixelRemovalResult",
    "evaluate_localisation",
    "evaluate_pixel_removal",
    "localisation_scores",
    "make_grids",
    "quantus_explain_func",
    "removal_counts",
    "removal_curves",
    "summarise",
    "tile_grids",
]
