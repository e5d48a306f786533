"""The B-cos toy example (docs/algorithms.md#toy-example) and ``alignnet toy``."""

import math

import pytest
import torch

from alignnet.cli import main
from alignnet.toy import angle_loss, make_toy_data, toy_experiment, train_angle


def test_optimum_moves_toward_class_direction_as_b_grows():
    data = make_toy_data()
    result = toy_experiment(data, (1.0, 2.0, 50.0))
    d = [result.distance_to_class(b) for b in (1.0, 2.0, 50.0)]
    assert d[0] > d[1] > d[2], d
    assert d[0] > 20  # a linear unit points away from the negatives, not at the class
    assert d[2] < 3  # B=50 aligns with the class cluster (grid step 0.5 deg)


def test_gradient_training_reaches_the_grid_optimum():
    data = make_toy_data()
    result = toy_experiment(data, (1.0, 2.0, 50.0))
    for b in (1.0, 2.0, 50.0):
        trained = train_angle(data, b)
        assert abs((trained - result.optimum[b] + 180) % 360 - 180) < 1.0, (b, trained, result.optimum[b])


def test_b1_loss_matches_a_plain_linear_unit():
    data = make_toy_data(n_per_cluster=20)
    phi = torch.tensor([0.3, -1.2], dtype=torch.float64)
    w = torch.stack([phi.cos(), phi.sin()], 1)
    logits = 5.0 * data.x @ w.T + math.log(0.1 / 0.9)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, data.y[:, None].expand(-1, 2), reduction="none"
    ).mean(0)
    torch.testing.assert_close(angle_loss(data, 1.0, phi), expected)


def test_bad_input():
    with pytest.raises(ValueError, match="B must be >= 1"):
        angle_loss(make_toy_data(n_per_cluster=2), 0.5, torch.zeros(3))
    with pytest.raises(ValueError, match="n_per_cluster"):
        make_toy_data(n_per_cluster=0)


def test_cli_toy_writes_figure_and_refuses_overwrite(tmp_path, capsys):
    out = tmp_path / "toy.png"
    assert main(["toy", "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "B=50: optimal weight angle" in text
    assert main(["toy", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["toy", "--out", str(out), "--force"]) == 0
