"""Pixel removal on a model whose output depends on known pixels."""

import numpy as np
import pytest
import torch
from torch import nn

from alignnet.layers import AddInverse
from alignnet.metrics import evaluate_pixel_removal, removal_counts, removal_curves


class KeyPixels(nn.Module):
    """``logit = 4 * (number of kept key pixels) - 6``; a pixel is kept when its encoding is not zeroed.

    Key pixels are the 4 pixels of ``key``. An encoded pixel is ``[x, 1 - x]``; its channel sum is 1
    when kept and 0 when removed, whatever x is.
    """

    def __init__(self, key):
        super().__init__()
        self.enc = AddInverse()
        self.register_buffer("key", key.float())

    def forward(self, x):
        present = self.enc(x).sum(1) / x.shape[1]  # (N, H, W): 1 kept, 0 removed
        return (4 * (present * self.key).sum((1, 2)) - 6)[:, None]


def _setup():
    key = torch.zeros(8, 8)
    key[2, 3] = key[5, 5] = key[6, 1] = key[7, 7] = 1
    model = KeyPixels(key)
    x = torch.rand(3, 3, 8, 8)
    attribution = key.expand(3, 3, 8, 8) + 0.01 * torch.rand(3, 3, 8, 8)  # key pixels most important
    return model, x, torch.zeros(3, dtype=torch.long), attribution


def test_removal_counts():
    np.testing.assert_array_equal(removal_counts(64, 0.25, 5), [0, 4, 8, 12, 16])
    with pytest.raises(ValueError):
        removal_counts(64, 0.0, 5)


def test_least_first_keeps_the_probability_most_first_drops_it_at_the_right_steps():
    model, x, t, a = _setup()
    fractions, least = removal_curves(model, x, t, a, "least", fraction=0.25, steps=17)
    np.testing.assert_allclose(fractions, np.arange(17) / 64)
    full = 1 / (1 + np.exp(-(4 * 4 - 6)))
    np.testing.assert_allclose(least, full, rtol=1e-6)  # 16 of the 60 unimportant pixels go first
    _, most = removal_curves(model, x, t, a, "most", fraction=0.25, steps=17)
    expected = [1 / (1 + np.exp(-(4 * max(4 - k, 0) - 6))) for k in range(17)]  # one key pixel per step
    np.testing.assert_allclose(most, np.tile(expected, (3, 1)), rtol=1e-6)


def test_batching_does_not_change_the_curves():
    model, x, t, a = _setup()
    _, big = removal_curves(model, x, t, a, "most", steps=9, forward_batch=512)
    _, small = removal_curves(model, x, t, a, "most", steps=9, forward_batch=4)
    np.testing.assert_allclose(big, small)


def test_auto_forward_batch_is_a_pixel_budget(monkeypatch):
    """``forward_batch=None`` (the default): at most AUTO_PIXELS // (H * W) masked copies per pass."""
    from alignnet.attribution import _base

    model, x, t, a = _setup()
    _, big = removal_curves(model, x, t, a, "most", steps=9, forward_batch=512)
    monkeypatch.setitem(_base.AUTO_PIXELS, "cpu", 3 * x.shape[-2] * x.shape[-1])  # 3 copies per pass
    sizes = []
    handle = model.register_forward_pre_hook(lambda _m, args: sizes.append(args[0].shape[0]))
    _, auto = removal_curves(model, x, t, a, "most", steps=9)
    handle.remove()
    assert max(sizes) == 3 and sum(sizes) == x.shape[0] * 9
    np.testing.assert_allclose(auto, big)


def test_evaluate_pixel_removal_and_results(tmp_path):
    torch.manual_seed(0)
    model, x, _, _ = _setup()
    labels = torch.zeros(5, dtype=torch.long)
    images = torch.rand(5, 3, 8, 8)
    res = evaluate_pixel_removal(
        model, (images, labels), "occlusion5", n_images=4, steps=9, batch_size=3, progress=False
    )
    assert res.curves["least"].shape == (4, 9) and res.curves["most"].shape == (4, 9)
    # occlusion finds the key pixels: most-first drops, least-first keeps
    assert res.summary["most"]["final"] < 0.3 < 0.9 < res.summary["least"]["final"]
    assert res.summary["least"]["auc"] == pytest.approx(np.trapezoid(res.mean_curve("least"), res.fractions) / 0.25)
    json_path, npz_path = res.save(tmp_path)
    text = json_path.read_text()
    assert '"steps": 9' in text and '"method": "occlusion5"' in text
    with np.load(npz_path) as f:
        np.testing.assert_allclose(f["mean_most"], res.mean_curve("most"))
    with pytest.raises(ValueError, match="orders"):
        evaluate_pixel_removal(model, (images, labels), "ours", orders=("first",))
