"""Grid pointing game: known answers for the scores, the grid selection and the full protocol."""

import numpy as np
import pytest
import torch

from _attr_nets import TemplateNet, blob_images
from alignnet.attribution import Attributor, get_attributor
from alignnet.metrics import evaluate_localisation, localisation_scores, make_grids, summarise, tile_grids


def test_all_attribution_in_the_target_cell_scores_one():
    maps = torch.zeros(9, 1, 12, 12)
    for cell in range(9):
        r, q = divmod(cell, 3)
        maps[cell, 0, 4 * r : 4 * r + 4, 4 * q : 4 * q + 4] = torch.rand(4, 4) + 0.1
        maps[cell, 0, (4 * r + 5) % 12, (4 * q + 5) % 12] = -3.0  # negative evidence elsewhere is ignored
    torch.testing.assert_close(localisation_scores(maps, torch.arange(9), 3), torch.ones(9, dtype=torch.float64))


def test_uniform_gives_one_over_n_and_zero_gives_zero():
    for g in (2, 3):
        s = localisation_scores(torch.ones(4, 3, 6 * g, 6 * g), torch.zeros(4, dtype=torch.long), g)
        torch.testing.assert_close(s, torch.full((4,), 1 / g**2, dtype=torch.float64))
    assert localisation_scores(torch.zeros(2, 6, 6), torch.tensor([0, 3]), 2).tolist() == [0.0, 0.0]
    assert localisation_scores(-torch.ones(1, 6, 6), torch.tensor([1]), 2).tolist() == [0.0]


def test_smoothing_spreads_across_the_border_with_zero_padding():
    # one unit of attribution at the last pixel of cell 0 in a 2x2 grid of 4x4 cells, smoothed 3x3
    a = torch.zeros(1, 8, 8)
    a[0, 3, 3] = 1.0
    # 3x3 mean: 9 pixels get 1/9; of them 4 lie in cell 0 (rows/cols 2-3), 2 in cell 1, 2 in cell 2, 1 in cell 3
    expected = {0: 4 / 9, 1: 2 / 9, 2: 2 / 9, 3: 1 / 9}
    for cell, value in expected.items():
        s = localisation_scores(a, torch.tensor([cell]), 2, smooth=3)
        assert s.item() == pytest.approx(value)
    # at the image corner the zero padding counts in the mean but adds no mass: all stays in cell 0
    b = torch.zeros(1, 8, 8)
    b[0, 0, 0] = 1.0
    assert localisation_scores(b, torch.tensor([0]), 2, smooth=3).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="odd"):
        localisation_scores(a, torch.tensor([0]), 2, smooth=4)


def test_score_input_checks():
    with pytest.raises(ValueError, match="equal cells"):
        localisation_scores(torch.ones(1, 7, 7), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="cells must lie"):
        localisation_scores(torch.ones(1, 6, 6), torch.tensor([9]), 3)


def _fake_logits(labels, confidence, wrong=()):
    logits = torch.full((len(labels), 10), -5.0)
    logits[torch.arange(len(labels)), labels] = torch.logit(confidence)
    for i in wrong:
        logits[i, (labels[i] + 1) % 10] = 10.0
    return logits


def test_make_grids_is_seeded_filtered_and_never_repeats_a_class():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat(30)
    confidence = torch.rand(len(labels), generator=g) * 0.98 + 0.01
    wrong = list(range(0, 300, 7))
    logits = _fake_logits(labels, confidence, wrong)
    grids = make_grids(logits, labels, grid=3, n_grids=500, seed=42)
    assert grids.shape[1] == 9
    np.testing.assert_array_equal(grids, make_grids(logits, labels, grid=3, n_grids=500, seed=42))
    assert not np.array_equal(grids, make_grids(logits, labels, grid=3, n_grids=500, seed=1))
    eligible = {i for i in range(300) if confidence[i] > 0.5 and i not in wrong}
    used = grids.ravel().tolist()
    assert set(used) <= eligible and len(used) == len(set(used))
    for row in grids:
        assert len(set(labels[row].tolist())) == 9
    # each class's images are used from the most confident on
    for c in range(10):
        mine = [i for i in used if labels[i] == c]
        pool = sorted((i for i in eligible if labels[i] == c), key=lambda i: -confidence[i].item())
        assert sorted(mine, key=lambda i: -confidence[i].item()) == pool[: len(mine)]
    # selection stops when no more than 9 classes still have images
    counts = {c: sum(1 for i in eligible if labels[i] == c) for c in range(10)}
    left = {c: counts[c] - sum(1 for i in used if labels[i] == c) for c in range(10)}
    assert sum(1 for v in left.values() if v > 0) <= 9
    assert len(make_grids(logits, labels, grid=3, n_grids=5, seed=42)) == 5


def test_tile_grids_is_row_major():
    imgs = torch.arange(4.0).view(1, 4, 1, 1, 1).expand(1, 4, 2, 3, 3)
    tiled = tile_grids(imgs, 2)
    assert tiled.shape == (1, 2, 6, 6)
    assert tiled[0, 0, 0, 0] == 0 and tiled[0, 0, 0, 5] == 1 and tiled[0, 0, 5, 0] == 2 and tiled[0, 0, 5, 5] == 3


def test_the_protocol_scores_exact_explanations_of_a_linear_model_perfectly(tmp_path):
    model = TemplateNet()
    data = blob_images(per_class=8)
    res = evaluate_localisation(model, data, "ours", grid=3, n_grids=6, progress=False)
    assert res.scores.shape == (54,) and res.grids.shape == (6, 9)
    np.testing.assert_allclose(res.scores, 1.0)
    assert res.summary["mean"] == pytest.approx(1.0)
    np.testing.assert_array_equal(res.classes, data[1].numpy()[res.grids])
    json_path, npz_path = res.save(tmp_path)
    assert '"method": "ours"' in json_path.read_text()
    with np.load(npz_path) as f:
        np.testing.assert_array_equal(f["scores"], res.scores)
    # occlusion of a linear model with zero baseline only drops the logit where the evidence is
    occ = evaluate_localisation(model, data, "occlusion5", grid=2, n_grids=4, progress=False)
    assert occ.summary["mean"] > 0.6


class _Interrupting(Attributor):
    """Wraps ``ours`` and raises after ``calls`` batches, to test resuming."""

    def __init__(self, model, calls):
        super().__init__(model)
        self.inner, self.calls = get_attributor("ours", model), calls
        self.name = "ours"

    def config(self):
        return {}

    def _attribute(self, images, targets):
        if self.calls == 0:
            raise KeyboardInterrupt
        self.calls -= 1
        return self.inner.attribute(images, targets)


def test_cache_resumes_after_an_interruption(tmp_path):
    model = TemplateNet()
    data = blob_images(per_class=8)
    kw = dict(grid=2, n_grids=6, batch_size=8, progress=False, cache_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        evaluate_localisation(model, data, _Interrupting(model, 2), **kw)
    (cached,) = tmp_path.glob("localisation-ours-*")
    shards = sorted(cached.glob("shard-*.npz"))
    assert len(shards) == 2  # two batches of two grids were finished, one file each
    with np.load(shards[1]) as f:
        assert f["range"].tolist() == [2, 4] and f["scores"].shape == (8,)
    resumed = evaluate_localisation(model, data, _Interrupting(model, 1), **kw)  # needs one more batch only
    fresh = evaluate_localisation(model, data, "ours", grid=2, n_grids=6, progress=False)
    np.testing.assert_allclose(resumed.scores, fresh.scores)


def test_summarise():
    s = summarise(np.array([0.0, 0.25, 0.5, 0.75, 1.0]))
    assert s == {
        "n": 5,
        "mean": 0.5,
        "median": 0.5,
        "q25": 0.25,
        "q75": 0.75,
        "std": pytest.approx(np.sqrt(0.125)),
        "min": 0.0,
        "max": 1.0,
    }


def test_one_process_loop_takes_the_same_protocol_options_as_the_sharded_one(tmp_path):
    """``confidence`` and ``rescale`` reach the single-process loop too, with the sharded loop's scores."""
    from alignnet.metrics.evaluate import evaluate_one
    from alignnet.metrics.presets import Protocol

    torch.manual_seed(0)
    model = TemplateNet()
    data = blob_images(per_class=4)
    for confidence, rescale in ((0.5, False), (0.9, False), (0.5, True)):
        res = evaluate_localisation(
            model, data, "ours", grid=2, n_grids=4, confidence=confidence, rescale=rescale, progress=False
        )
        protocol = Protocol("localisation", grid=2, n_grids=4, confidence=confidence, rescale=rescale)
        ref = evaluate_one(model, data, "ours", protocol, tmp_path / f"{confidence}{rescale}", progress=False)
        np.testing.assert_array_equal(res.grids, ref.grids)
        np.testing.assert_allclose(res.scores, ref.scores, rtol=0, atol=1e-12)
        assert res.config["confidence"] == confidence and res.config.get("rescale", False) == rescale
        assert res.config["data"]["shape"][-1] == (8 if rescale else 16)
    with pytest.raises(ValueError, match="no grid could be formed"):  # the threshold does select images
        evaluate_localisation(model, data, "ours", grid=2, n_grids=4, confidence=0.999999, progress=False)
