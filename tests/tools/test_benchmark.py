"""The benchmark harness on tiny tables (the benchmarks themselves run outside
the test suite: `python benchmarks/run.py`)."""

import json
import os

import numpy as np
import pytest

from keras_embed.tools import benchmark
from keras_embed.tools.benchmark_report import format_tables
from keras_embed.tools.benchmark_report import plot


def test_interleaved_rotates_the_order_and_takes_medians(monkeypatch):
    """On a fake clock: each call of "a" takes 1, 2, 9, 3 s in its four rounds
    and "b" 5 s, so the medians per call are 2.5 s and 5 s."""
    clock = [0.0]
    monkeypatch.setattr(benchmark.time, "perf_counter", lambda: clock[0])
    calls = []
    a_seconds = iter([1, 1, 2, 2, 9, 9, 3, 3])

    def a():
        calls.append("a")
        clock[0] += next(a_seconds)

    def b():
        calls.append("b")
        clock[0] += 5

    seconds = benchmark.interleaved({"a": a, "b": b}, repeats=4, calls=2)
    assert calls == list("aabb" "bbaa" "aabb" "bbaa")
    assert seconds == {"a": 2.5, "b": 5.0}


@pytest.fixture(scope="module")
def tiny_results():
    rng = np.random.default_rng(0)
    results = {
        "machine": benchmark.machine(),
        "quick": True,
        "settings": {"batch": benchmark.BATCH, "length": benchmark.LENGTH,
                     "train_width": benchmark.TRAIN_WIDTH},
        "bandwidth": benchmark.measure_copy_bandwidth(size=2**20, repeats=2),
        "lookup": [benchmark.measure_lookup(50, 4, repeats=2, rng=rng)],
        "training": [benchmark.measure_training(60, repeats=2, rng=rng)],
    }
    results["lookup"][0]["share_of_copy_bandwidth"] = benchmark.share_of_copy_bandwidth(
        results["lookup"][0], results["bandwidth"]
    )
    results["floors"] = benchmark.floors(results)
    return results


def test_measurements_have_every_candidate(tiny_results):
    lookup = tiny_results["lookup"][0]
    assert set(lookup["median_s"]) == {"ours", "stock", "raw tf.gather"}
    assert lookup["bytes_moved"] == 2 * benchmark.BATCH * benchmark.LENGTH * 4 * 4
    training = tiny_results["training"][0]
    assert set(training["median_s"]) == {"stock + Adam", "ours + Adam", "ours + LazyAdam"}
    # Table, two Adam slots, the Dense layer's and Adam's own variables.
    table = 60 * benchmark.TRAIN_WIDTH * 4
    assert 3 * table < training["held_bytes"]["ours + LazyAdam"] < 3 * table + 4096
    assert training["interleaved"] is True
    assert tiny_results["bandwidth"]["copy_gb_per_s"] > 0


def test_share_of_copy_bandwidth():
    # 2 GB moved in 0.5 s is 4 GB/s: a quarter of a 16 GB/s copy.
    lookup = {"bytes_moved": 2e9, "median_s": {"ours": 0.5, "stock": 9.0, "raw tf.gather": 9.0}}
    assert benchmark.share_of_copy_bandwidth(lookup, {"copy_gb_per_s": 16.0}) == 0.25


def test_floors_compare_against_the_issues_thresholds():
    results = {
        "lookup": [{"rows": 100, "width": 64, "ours_vs_raw": 0.94, "ours_vs_stock": 1.2}],
        "training": [
            {"rows": 100_000, "median_s": {"ours + LazyAdam": 0.020}},
            {"rows": 1_000_000, "lazy_speedup_vs_stock_adam": 5.5,
             "median_s": {"ours + LazyAdam": 0.031},
             "peak_bytes": {"stock + Adam": 100, "ours + LazyAdam": 101}},
        ],
    }
    met = {check["floor"]: (check["met"], round(check["value"], 3))
           for check in benchmark.floors(results)}
    assert met == {
        "lookup V=100 D=64: ours >= 0.95x raw tf.gather": (False, 0.94),
        "lookup V=100 D=64: ours >= stock (1.00x)": (True, 1.2),
        "train V=1M: ours + LazyAdam >= 5x faster than stock + Adam": (True, 5.5),
        "train V=1M: peak memory of ours + LazyAdam <= stock + Adam": (False, 1.01),
        "train: ours + LazyAdam at V=1M <= 1.5x its time at V=100K": (False, 1.55),
    }


def test_report_writes_tables_and_a_png(tiny_results, tmp_path):
    text = format_tables(tiny_results)
    assert "| 50 | 4 |" in text and "| 60 |" in text
    assert f"{tiny_results['machine']['cores']} cores" in text
    path = os.path.join(tmp_path, "plot.png")
    plot(tiny_results, path)
    with open(path, "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    json.dumps(tiny_results)  # JSON-ready as it is


def test_main_parses_its_arguments(monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(benchmark, "run", lambda **kwargs: seen.update(kwargs))
    assert benchmark.main(["--quick", "--output", "somewhere"]) == 0
    assert seen == {"quick": True, "output": "somewhere"}
    assert benchmark.main([]) == 0
    assert seen == {"quick": False, "output": os.path.join("benchmarks", "results")}
    with pytest.raises(SystemExit):
        benchmark.main(["--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
