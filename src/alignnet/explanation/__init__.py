"""Explanations: the exact dynamic-linear explanation, colour explanations and plots."""

from .colour import colour_explanation, colour_from_weights
from .dynamic_linear import Explanation, expected_input_channels, explain
from .plot import plot_contribution_map, plot_explanation, save_rgba

__all__ = [
    "Explanation",
    "colour_explanation",
    "colour_from_weights",
    "expected_input_channels",
    "explain",
    "plot_contribution_map",
    "plot_explanation",
    "save_rgba",
]
