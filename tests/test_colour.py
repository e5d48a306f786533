"""Colour explanations (docs/algorithms.md#colour-explanations) on hand-made inputs with known answers, and plots."""

import numpy as np
import pytest
import torch

import alignnet
from alignnet.explanation import colour_from_weights, plot_contribution_map, plot_explanation, save_rgba
from conftest import tiny_bcos


def test_known_colours_and_opacity():
    w = torch.zeros(6, 2, 3)
    w[:, 0, 0] = torch.tensor([1.0, 0, 0, 0, 1, 1])  # looks for red
    w[:, 0, 1] = torch.tensor([0.0, 2, 0, 2, 0, 2])  # looks for green (scaled: colour is scale-free)
    w[:, 0, 2] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.5])  # grey
    w[:, 1, 0] = torch.tensor([1.0, 0, 0, 0, 1, 1])  # red weights, but negative contribution below
    x = torch.zeros(6, 2, 3)
    x[:3], x[3:] = 1.0, 0.0  # white image
    x[:, 1, 0] = torch.tensor([0.0, 0, 0, 1, 1, 1])  # black pixel at (1, 0)
    w[:, 1, 0] *= -1  # contribution sum(x*w) = -2 < 0
    rgba = colour_from_weights(w, x, smooth=1, alpha_percentile=100)
    np.testing.assert_allclose(rgba[0, 0, :3], [1, 0, 0], atol=1e-9)
    np.testing.assert_allclose(rgba[0, 1, :3], [0, 1, 0], atol=1e-9)
    np.testing.assert_allclose(rgba[0, 2, :3], [0.5, 0.5, 0.5], atol=1e-9)
    # alpha = ||w|| / max ||w||: norms sqrt(3), sqrt(12), sqrt(1.5), 0 (negative contribution)
    norms = np.array([np.sqrt(3), np.sqrt(12), np.sqrt(1.5)])
    np.testing.assert_allclose(rgba[0, :, 3], norms / np.sqrt(12), rtol=1e-6)
    assert rgba[1, 0, 3] < 1e-9
    assert rgba.shape == (2, 3, 4) and rgba.dtype == np.float32


def test_smoothing_and_percentile():
    """One active pixel, 15x15 mean pool: alpha is 1 on the 15x15 square around it, 0 elsewhere."""
    w = torch.zeros(6, 31, 31)
    w[0, 15, 15] = 3.0
    x = torch.ones(6, 31, 31)
    rgba = colour_from_weights(w, x)
    alpha = rgba[..., 3]
    square = np.zeros((31, 31), bool)
    square[8:23, 8:23] = True
    np.testing.assert_allclose(alpha[square], 1.0, rtol=1e-6)
    assert alpha[~square].max() < 1e-9


def test_colour_of_explanation_and_errors():
    e = alignnet.explain(tiny_bcos(), torch.rand(2, 3, 12, 12))
    rgba = alignnet.colour_explanation(e, index=1)
    assert rgba.shape == (12, 12, 4) and 0 <= rgba.min() and rgba.max() <= 1
    with pytest.raises(IndexError):
        alignnet.colour_explanation(e, index=2)
    with pytest.raises(ValueError, match="6-channel"):
        colour_from_weights(torch.rand(3, 4, 4), torch.rand(3, 4, 4))


def test_plots_write_pngs(tmp_path):
    e = alignnet.explain(tiny_bcos(), torch.rand(1, 3, 12, 12))
    plot_contribution_map(e.contributions[0], path=tmp_path / "c.png")
    save_rgba(alignnet.colour_explanation(e), tmp_path / "rgba.png")
    plot_explanation(torch.rand(3, 12, 12), alignnet.colour_explanation(e), e.contributions[0], path=tmp_path / "f.png")
    from PIL import Image

    for name in ("c.png", "rgba.png", "f.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size[0] > 4
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        plot_contribution_map(torch.rand(2, 3, 4))
