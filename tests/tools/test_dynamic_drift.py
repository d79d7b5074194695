"""benchmarks/drifting_stream.py and benchmarks/dynamic_drift.py (the "what a
row of its own is worth" experiment) on a tiny stream: structure only, no
losses judged (the experiment: `python benchmarks/dynamic_drift.py`)."""

import importlib.util
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCHMARKS = os.path.join(ROOT, "benchmarks")


def _module(name):
    if BENCHMARKS not in sys.path:  # dynamic_drift imports drifting_stream
        sys.path.insert(0, BENCHMARKS)
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def drifting_stream():
    return _module("drifting_stream")


def test_the_stream_is_seeded_and_drifts(drifting_stream):
    stream = drifting_stream.DriftingStream(keys=2_000, examples=60_000, stretches=6, seed=4)
    parts = [stream.stretch(i) for i in range(6)]
    again = drifting_stream.DriftingStream(keys=2_000, examples=60_000, stretches=6, seed=4)
    np.testing.assert_array_equal(again.stretch(3)["key"], parts[3]["key"])
    assert all(len(part["key"]) == 10_000 for part in parts)
    assert parts[0]["key"].dtype == np.int64 and (parts[0]["key"] > 2**32).mean() > 0.9
    # Old keys fade: the last stretch shares few keys with the first.
    first, last = set(parts[0]["key"].tolist()), parts[-1]["key"]
    assert np.isin(last, list(first)).mean() < 0.05
    assert len(np.unique(np.concatenate([p["key"] for p in parts]))) > 3 * len(first) / 2
    # Labels follow their probabilities; the entropy bounds the log loss.
    labels = np.concatenate([p["label"] for p in parts])
    probability = np.concatenate([p["probability"] for p in parts])
    assert set(np.unique(labels)) == {0.0, 1.0}
    assert abs(labels.mean() - probability.mean()) < 0.01
    assert 0 < drifting_stream.entropy(probability) < np.log(2)


def test_the_experiment_trains_each_way_and_draws_them(drifting_stream, tmp_path):
    experiment = _module("dynamic_drift")
    stream = drifting_stream.DriftingStream(keys=300, examples=6_000, stretches=4, seed=1)
    results = experiment.run(stream, capacity=50, progress=lambda line: None)
    assert set(results) == {"best", *experiment.WAYS}
    assert len(results["best"]) == 3
    for way in experiment.WAYS:
        assert len(results[way]["loss"]) == len(results[way]["own_row_share"]) == 3
        assert all(np.isfinite(results[way]["loss"]))
    assert np.isnan(results[experiment.WAYS[0]]["own_row_share"]).all()  # hashing: shared
    assert all(0 <= share <= 1 for share in results[experiment.WAYS[2]]["own_row_share"])
    text = experiment.table(results, stream, 50)
    assert "| DynamicEmbedding (LRU) |" in text and "lowest possible" in text
    path = os.path.join(tmp_path, "drift.png")
    experiment.plot(results, stream, 50, path)
    with open(path, "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"
