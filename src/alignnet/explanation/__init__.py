"""Explanations: the exact dynamic-linear explanation, colour explanations and plots."""

from .colour import colour_explanation, colour_from_weights
from .dynamic_linear import Explanation, check_target_range, expected_input_channels, explain
from .layerwise import layer_contributions, top_level_dynamic_layers
from .plot import plot_contribution_map, plot_explanation, save_rgba

__all__ = [
    "Explanation",
    "check_target_range",
    "colour_explanation",
    "colour_from_weights",
    "expected_input_channels",
    "explain",
    "layer_contributions",
    "plot_contribution_map",
    "plot_explanation",
    "save_rgba",
    "top_level_dynamic_layers",
]
