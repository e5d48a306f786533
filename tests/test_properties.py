"""Property-based tests (hypothesis) of the public entry points: ``explain``, every attributor, the
metrics' pure functions and ``alignnet.data.load_image``.

Each draws random shapes, dtypes, target forms and bad values; every call either works (and, for
exact explanations, completeness holds to float64 rounding) or raises one of the documented errors
(``TypeError`` / ``ValueError`` / ``IndexError``, and ``FileNotFoundError`` for files) with a message
that names the problem. ``CASES`` counts the examples run per test; ``test_zz_report_case_counts``
prints them (run with ``-s``), and ``--hypothesis-show-statistics`` gives hypothesis' own numbers.
"""

from __future__ import annotations

import collections
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignnet.attribution import get_attributor, list_attributors
from alignnet.explanation import explain
from alignnet.metrics import (
    localisation_scores,
    make_grids,
    removal_counts,
    removal_curves,
    summarise,
    tile_grids,
)
from conftest import tiny_bcos, tiny_coda

CASES: collections.Counter = collections.Counter()
DOCUMENTED = (TypeError, ValueError, IndexError)
# cheap settings so a few dozen examples per method run in seconds
FAST = {"lime": {"n_samples": 12}, "rise": {"n_masks": 8}, "intgrad": {"n_steps": 3}}
COMMON = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
_MODELS = {"bcos": tiny_bcos, "coda": tiny_coda}
_CACHE: dict = {}


def _model(name: str, dtype: torch.dtype) -> torch.nn.Module:
    key = (name, dtype)
    if key not in _CACHE:
        torch.manual_seed(0)
        _CACHE[key] = _MODELS[name]().to(dtype).eval()
    return _CACHE[key]


def _clear(exc: Exception) -> None:
    """A documented error with a message that says something (not a bare torch internals message)."""
    assert isinstance(exc, DOCUMENTED), f"undocumented error type {type(exc).__name__}: {exc}"
    msg = str(exc)
    assert len(msg) > 15, msg
    assert not re.search(r"(Expected|size of tensor|at index|dimension out of range|shape '\[)", msg), msg


@st.composite
def image_batches(draw):
    """Images that are mostly valid, sometimes with a bad shape, dtype, channel count or value."""
    # valid values first: hypothesis starts from (and shrinks towards) the first choices
    n = draw(st.sampled_from([2, 1, 3, 2, 1, 0]))
    c = draw(st.sampled_from([3, 3, 3, 3, 1, 4]))
    h = draw(st.sampled_from([8, 10, 12, 9, 6, 3, 1]))
    w = draw(st.sampled_from([8, 12, 9, 10, 7, 2, 1]))
    dims = draw(st.sampled_from(["4d", "4d", "4d", "4d", "4d", "3d", "5d"]))
    dtype = draw(st.sampled_from([torch.float64, torch.float64, torch.float32, torch.float64, torch.int64, torch.bool]))
    shape = {"4d": (n, c, h, w), "3d": (c, h, w), "5d": (1, n, c, h, w)}[dims]
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    bad_value = draw(st.sampled_from([None, None, None, None, None, math.nan, math.inf]))
    if bad_value is not None and x.numel():
        x.view(-1)[0] = bad_value
    x = x.to(dtype) if dtype is not torch.bool else x > 0.5
    return x


def targets_strategy(k: int = 10):
    ints = st.integers(-2, k + 2)
    return st.one_of(
        st.none(),
        ints,
        st.lists(ints, min_size=0, max_size=4),
        st.lists(st.lists(st.integers(0, k - 1), min_size=2, max_size=2), min_size=1, max_size=3),
        st.sampled_from(["all", "pred", 1.5, (1, 2.5), object()]),
        st.builds(lambda v: torch.tensor(v), st.lists(ints, min_size=1, max_size=3)),
        st.builds(lambda v: torch.tensor(v, dtype=torch.float32), st.lists(ints, min_size=1, max_size=3)),
    )


@COMMON
@given(images=image_batches(), targets=targets_strategy(), name=st.sampled_from(["bcos", "coda"]))
def test_explain_works_with_completeness_or_raises_a_documented_error(images, targets, name):
    CASES["explain"] += 1
    model = _model(name, torch.float64)
    try:
        e = explain(model, images, targets)
    except DOCUMENTED as exc:
        _clear(exc)
        CASES["explain: documented error"] += 1
        return
    CASES["explain: worked"] += 1
    assert images.dim() == 4 and images.is_floating_point() and images.shape[1] == 3
    if images.dtype == torch.float64:
        assert e.completeness_error() < 1e-11
    else:
        assert e.completeness_error() < 1e-4
    assert e.weights.shape[-3:] == (6, *images.shape[-2:])
    assert bool(((e.targets >= 0) & (e.targets < 10)).all())


_METHODS = sorted(set(list_attributors()) - {"guided_backprop"})


@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
@pytest.mark.parametrize("method", _METHODS)
def test_every_attributor_works_or_raises_a_documented_error(method, data):
    CASES[f"attributor {method}"] += 1
    images = data.draw(image_batches())
    targets = data.draw(st.one_of(st.none(), st.integers(-2, 12), st.lists(st.integers(-1, 11), max_size=3)))
    if data.draw(st.booleans()):  # half the cases: a valid target per image
        targets = [data.draw(st.integers(0, 9)) for _ in range(images.shape[0] if images.dim() == 4 else 1)]
    alias = data.draw(st.booleans())
    model = _model("bcos", torch.float64)
    try:
        att = get_attributor(method, model, **FAST.get(method, {}))
        out = att.attribute(images, target=targets) if alias else att.attribute(images, targets)
    except DOCUMENTED as exc:
        _clear(exc)
        CASES[f"attributor {method}: documented error"] += 1
        return
    CASES[f"attributor {method}: worked"] += 1
    assert out.shape == images.shape and out.dtype == images.dtype
    assert torch.isfinite(out).all()
    if method == "ours" and images.dtype == torch.float64:  # per-pixel maps + bias sum to the logit
        e = explain(model, images, targets)
        total = out.sum((1, 2, 3)) + e.bias
        torch.testing.assert_close(total, e.outputs, rtol=1e-11, atol=1e-11)


@COMMON
@given(
    n=st.sampled_from([3, 1, 4, 0]),
    grid=st.sampled_from([3, 2, 1, 4, 0, -1]),
    cell=st.integers(1, 4),
    odd=st.sampled_from([0, 0, 0, 1]),
    channels=st.sampled_from([None, 1, 3]),
    cell_shift=st.sampled_from([0, 1, 2, -1, -2]),
    smooth=st.sampled_from([0, 3, 1, 5, 2]),
)
def test_localisation_scores_are_fractions_or_documented_errors(n, grid, cell, odd, channels, cell_shift, smooth):
    CASES["localisation_scores"] += 1
    h = w = max(1, grid) * cell + odd
    g = torch.Generator().manual_seed(n * 100 + h * 10 + w)
    shape = (n, h, w) if channels is None else (n, channels, h, w)
    a = torch.randn(shape, generator=g, dtype=torch.float64)
    cells = (torch.arange(n) + cell_shift) % max(1, grid * grid) + (cell_shift if cell_shift < -1 else 0)
    try:
        s = localisation_scores(a, cells, grid, smooth)
    except DOCUMENTED as exc:
        _clear(exc)
        CASES["localisation_scores: documented error"] += 1
        return
    CASES["localisation_scores: worked"] += 1
    assert s.shape == (n,) and bool(((s >= 0) & (s <= 1 + 1e-12)).all())
    if n:  # the scores of all cells of a map sum to 1 when it has positive attribution
        maps = a.sum(1) if a.dim() == 4 else a
        if smooth <= 1 and grid >= 1:
            all_cells = localisation_scores(
                maps.repeat_interleave(grid * grid, 0), torch.arange(grid * grid).repeat(n), grid
            ).view(n, -1)
            positive = maps.clamp_min(0).flatten(1).sum(1) > 0
            torch.testing.assert_close(all_cells.sum(1)[positive], torch.ones(int(positive.sum()), dtype=torch.float64))


@COMMON
@given(
    n=st.sampled_from([60, 40, 25, 10, 0]),
    k=st.sampled_from([10, 6, 12, 1]),
    grid=st.sampled_from([2, 1, 3, 0]),
    n_grids=st.sampled_from([3, 1, 6, 0, -1]),
    seed=st.integers(0, 5),
    bad_labels=st.booleans(),
)
def test_make_grids_and_tile_grids(n, k, grid, n_grids, seed, bad_labels):
    CASES["make_grids"] += 1
    g = torch.Generator().manual_seed(n * 7 + k)
    logits = torch.randn(n, k, generator=g) * 4 + 2  # mostly confident
    labels = logits.argmax(1) if n else torch.zeros(0, dtype=torch.long)
    if bad_labels:
        labels = labels[:-1] if n else torch.zeros(1, dtype=torch.long)
    try:
        grids = make_grids(logits, labels, grid, n_grids, seed)
    except DOCUMENTED as exc:
        _clear(exc)
        CASES["make_grids: documented error"] += 1
        return
    CASES["make_grids: worked"] += 1
    assert grids.ndim == 2 and grids.shape[1] == grid * grid and len(grids) <= max(n_grids, 0)
    for row in grids:  # distinct classes, correct and confident images, no image twice
        assert len(set(labels[row].tolist())) == len(row)
    assert len(set(grids.ravel().tolist())) == grids.size
    if len(grids) and grid:
        images = torch.rand(n, 2, 3, 4)
        tiled = tile_grids(images[torch.from_numpy(grids)], grid)
        assert tiled.shape == (len(grids), 2, 3 * grid, 4 * grid)
        torch.testing.assert_close(tiled[:, :, :3, :4], images[torch.from_numpy(grids[:, 0])])


@COMMON
@given(
    n=st.integers(1, 3),
    side=st.sampled_from([6, 4, 5, 1]),
    order=st.sampled_from(["least", "most", "random"]),
    fraction=st.sampled_from([0.25, 1.0, 0.5, 0.0, 1.5]),
    steps=st.sampled_from([4, 2, 6, 1]),
    seed=st.integers(0, 3),
    attr_dims=st.sampled_from([3, 4, 3, 2]),
)
def test_removal_curves_are_probabilities_or_documented_errors(n, side, order, fraction, steps, seed, attr_dims):
    CASES["removal_curves"] += 1
    model = _model("bcos", torch.float64)
    g = torch.Generator().manual_seed(n * 10 + side)
    x = torch.rand(n, 3, side, side, generator=g, dtype=torch.float64)
    a = torch.randn({4: (n, 3, side, side), 3: (n, side, side), 2: (n, side)}[attr_dims], generator=g)
    t = torch.arange(n) % 10
    try:
        counts = removal_counts(side * side, fraction, steps)
        fr, probs = removal_curves(model, x, t, a, order, fraction, steps, seed=seed)
    except DOCUMENTED as exc:
        _clear(exc)
        CASES["removal_curves: documented error"] += 1
        return
    CASES["removal_curves: worked"] += 1
    assert probs.shape == (n, steps) and np.all((probs >= 0) & (probs <= 1))
    np.testing.assert_allclose(fr, counts / (side * side))
    assert counts[0] == 0 and np.all(np.diff(counts) >= 0)
    with torch.no_grad():  # nothing removed yet: the model's own probability
        p0 = torch.sigmoid(model(x).gather(1, t[:, None])[:, 0]).numpy()
    np.testing.assert_allclose(probs[:, 0], p0, rtol=1e-6)
    s = summarise(probs[:, -1])
    assert s["n"] == n and s["min"] <= s["mean"] <= s["max"]


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["L", "RGB", "RGBA", "P", "I;16", "CMYK", "garbage", "missing", "empty"]),
    h=st.integers(1, 20),
    w=st.integers(1, 20),
    size=st.one_of(st.none(), st.integers(1, 16), st.tuples(st.integers(1, 16), st.integers(1, 16))),
)
def test_load_image_reads_every_mode_or_raises_a_documented_error(tmp_path_factory, kind, h, w, size):
    from PIL import Image

    from alignnet.data import load_image

    CASES["load_image"] += 1
    path = tmp_path_factory.mktemp("img") / f"x_{kind.replace(';', '')}.png"
    rng = np.random.default_rng(h * 100 + w)
    if kind == "garbage":
        path.write_bytes(rng.bytes(64))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "CMYK":
        path = path.with_suffix(".jpg")
        Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "CMYK").save(path)
    elif kind == "I;16":
        Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16)).save(path)
    elif kind != "missing":
        Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA").convert(kind).save(path)
    try:
        x = load_image(path, size)
    except (FileNotFoundError, ValueError) as exc:
        assert kind in ("garbage", "missing", "empty"), f"{kind}: {exc}"
        assert str(path.name) in str(exc) or isinstance(exc, FileNotFoundError)
        CASES["load_image: documented error"] += 1
        return
    CASES["load_image: worked"] += 1
    assert kind not in ("garbage", "missing", "empty")
    assert x.dtype == torch.float32 and x.shape[0] == 3 and float(x.min()) >= 0 and float(x.max()) <= 1
    if size is None:
        assert x.shape[1:] == (h, w)
    elif isinstance(size, int):
        assert x.shape[1:] == (size, size)
    else:
        assert x.shape[1:] == size


def test_zz_report_case_counts():
    """Runs last in this file: prints how many examples each property test tried (``pytest -s``)."""
    if not CASES:
        pytest.skip("run with the property tests to count their cases")
    total = sum(v for k, v in CASES.items() if ":" not in k)
    print(f"\nhypothesis cases: {total} in all")
    for k in sorted(CASES):
        print(f"  {k}: {CASES[k]}")
    assert CASES["explain"] >= 20 and CASES["load_image"] >= 10
