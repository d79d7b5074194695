"""The demo's picture: the projection worked by hand, and the PNG."""

import numpy as np
import pytest

from keras_embed.tools import demo_plot


def test_project_on_principal_components_by_hand():
    # Points on the line y = 2x (centred at the origin): one component holds
    # all the variance, along (1, 2) / sqrt(5).
    table = np.array([[-1.0, -2.0], [0.0, 0.0], [1.0, 2.0]])
    points, explained = demo_plot.project(table)
    np.testing.assert_allclose(explained, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(np.abs(points[:, 0]), [5**0.5, 0, 5**0.5], atol=1e-12)
    np.testing.assert_allclose(points[:, 1], 0, atol=1e-12)
    # A rotation of a 2-D table keeps its points' distances.
    rng = np.random.default_rng(0)
    table = rng.normal(size=(20, 2)) * [3.0, 1.0]
    points, explained = demo_plot.project(table)
    centred = table - table.mean(axis=0)
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), np.linalg.norm(centred, axis=1))
    assert explained[0] > explained[1] and explained.sum() == pytest.approx(1.0)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(1)
    words = ["", "[UNK]"] + [f"w{i}" for i in range(30)]
    path = tmp_path / "v.png"
    demo_plot.plot_vectors(rng.normal(size=(32, 5)), words, rng.random(32), path, first_word=2)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (720, 560)
