"""The benchmark harness on tiny tables (the benchmarks themselves run outside
the test suite: `python benchmarks/run.py`)."""

import json
import os

import numpy as np
import pytest

from keras_embed.tools import bag_benchmark
from keras_embed.tools import benchmark
from keras_embed.tools import measuring
from keras_embed.tools.benchmark_report import format_floors
from keras_embed.tools.benchmark_report import format_tables
from keras_embed.tools.benchmark_report import plot


@pytest.fixture(scope="module")
def tiny_results():
    rng = np.random.default_rng(0)
    results = {
        "machine": measuring.machine(),
        "quick": True,
        "settings": {"batch": benchmark.BATCH, "length": benchmark.LENGTH,
                     "train_width": benchmark.TRAIN_WIDTH},
        "bandwidth": measuring.measure_copy_bandwidth(size=2**20, repeats=2),
        "lookup": [benchmark.measure_lookup(50, 4, repeats=2, rng=rng)],
        "training": [benchmark.measure_training(60, repeats=2, rng=rng)],
        "bags": [benchmark.measure_bags(8, 5, 4, 50, 0.5, repeats=2, rng=rng)],
    }
    results["lookup"][0]["share_of_copy_bandwidth"] = benchmark.share_of_copy_bandwidth(
        results["lookup"][0], results["bandwidth"]
    )
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
    bags = tiny_results["bags"][0]
    assert set(bags["peak_bytes"]) == set(benchmark.BAG_CANDIDATES)
    assert set(bags["median_s"]) == {*benchmark.BAG_CANDIDATES, bag_benchmark.LOWER_BOUND}
    # Bags of 1 to 4 ids of 5 (lengths spread evenly): 20 ids, 20 padding.
    assert bags["ids"] == 20 and bags["bld_bytes"] == 8 * 5 * 4 * 4
    assert bags["bag_vs_pooling"] == (bags["median_s"]["Embedding -> GlobalAveragePooling1D"]
                                      / bags["median_s"]["EmbeddingBag"])
    assert bags["bound_vs_pooling"] == (bags["median_s"]["Embedding -> GlobalAveragePooling1D"]
                                        / bags["median_s"][bag_benchmark.LOWER_BOUND])


def test_bag_floors_are_checked_at_the_issues_shape_only():
    def bags(padding, pooling, reduce_mean):
        return {"batch": 256, "length": 200, "width": 64, "rows": 1_000_000,
                "padding": padding, "bag_vs_pooling": pooling, "bag_vs_reduce_mean": reduce_mean}

    results = {"lookup": [], "training": [], "bags": [bags(0.0, 2.1, 0.85), bags(0.5, 1.0, 1.0)]}
    met = {check["floor"]: (check["met"], check["value"]) for check in benchmark.floors(results)}
    assert met == {
        "bags B=256 L=200 D=64 V=1M: EmbeddingBag >= 2x faster than "
        "Embedding(mask_zero) -> GlobalAveragePooling1D": (True, 2.1),
        "bags B=256 L=200 D=64 V=1M: EmbeddingBag >= 0.9x reduce_mean(gather)": (False, 0.85),
    }


def test_share_of_copy_bandwidth():
    # 2 GB moved in 0.5 s is 4 GB/s: a quarter of a 16 GB/s copy.
    lookup = {"bytes_moved": 2e9, "median_s": {"ours": 0.5, "stock": 9.0, "raw tf.gather": 9.0}}
    assert benchmark.share_of_copy_bandwidth(lookup, {"copy_gb_per_s": 16.0}) == 0.25


RESULTS = {
    "lookup": [{"rows": 100, "width": 64, "ours_vs_raw": 0.94, "ours_vs_stock": 1.2}],
    "training": [
        {"rows": 100_000, "median_s": {"ours + LazyAdam": 0.020}},
        {"rows": 1_000_000, "lazy_speedup_vs_stock_adam": 5.5,
         "median_s": {"ours + LazyAdam": 0.031},
         "peak_bytes": {"stock + Adam": 100, "ours + LazyAdam": 101}},
    ],
}


def test_floors_compare_against_the_issues_thresholds():
    results = RESULTS
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
    assert "| 8 | 5 | 4 | 50 | 50% |" in text and "EmbeddingBag" in text
    assert "floor" not in text.lower()  # A user's results: not the project's floors.
    assert f"{tiny_results['machine']['cores']} cores" in text
    path = os.path.join(tmp_path, "plot.png")
    plot(tiny_results, path)
    with open(path, "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    json.dumps(tiny_results)  # JSON-ready as it is


def test_share_above_copy_bandwidth_is_explained():
    # A table held in the CPU's cache is read faster than the memory copy runs.
    lookup = {"rows": 50, "width": 4, "ours_vs_raw": 1.0, "ours_vs_stock": 1.0,
              "median_s": {"ours": 1e-4, "stock": 1e-4, "raw tf.gather": 1e-4},
              "share_of_copy_bandwidth": 1.7}
    results = {
        "machine": {"cpu": "x", "cores": 2, "memory_gib": 4, "tensorflow": "t", "keras": "k"},
        "settings": {"batch": 2, "length": 3, "train_width": 4},
        "bandwidth": {"copy_gb_per_s": 10.0}, "lookup": [lookup], "training": [],
    }
    lines = format_tables(results).splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("| 50 | 4 |"))
    assert lines[row].endswith("| 170% |")
    assert lines[row + 2].startswith("A share above 100%: the lookup's table and output fit "
                                     "in the CPU's cache")
    lookup["share_of_copy_bandwidth"] = 0.5
    assert "A share above 100%" not in format_tables(results)


def test_main_parses_its_arguments(monkeypatch, capsys):
    seen = {}

    def fake_run(**kwargs):
        seen.update(kwargs)
        return RESULTS

    monkeypatch.setattr(benchmark, "run", fake_run)
    assert benchmark.main(["--quick", "--output", "somewhere"]) == 0
    assert seen == {"quick": True, "output": "somewhere", "sections": benchmark.SECTIONS}
    assert benchmark.main([]) == 0
    assert seen == {"quick": False, "output": os.path.join("benchmarks", "results"),
                    "sections": ("lookup", "training", "optimizers", "bags", "dynamic")}
    assert "Floors" not in capsys.readouterr().out
    assert benchmark.main(["--sections", "optimizers", "lookup"]) == 0
    assert seen["sections"] == ["optimizers", "lookup"]
    with pytest.raises(SystemExit):
        benchmark.main(["--sections", "speed"])
    assert "argument --sections: invalid choice: 'speed'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        benchmark.main(["--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_check_exits_non_zero_when_a_floor_is_missed(monkeypatch, capsys):
    monkeypatch.setattr(benchmark, "run", lambda **kwargs: RESULTS)
    assert benchmark.main(["--check"]) == 1
    captured = capsys.readouterr()
    assert "- NOT MET: lookup V=100 D=64: ours >= 0.95x raw tf.gather (measured 0.940)" in captured.out
    assert "- met: lookup V=100 D=64: ours >= stock (1.00x) (measured 1.200)" in captured.out
    assert captured.err == "3 of 5 floors missed\n"
    met = {"lookup": [{**RESULTS["lookup"][0], "ours_vs_raw": 0.99}], "training": []}
    monkeypatch.setattr(benchmark, "run", lambda **kwargs: met)
    assert benchmark.main(["--check"]) == 0
    assert format_floors(benchmark.floors(met)).splitlines()[2].startswith("- met: ")


def test_the_harness_modules_import_each_other_downwards_only():
    # benchmark (the top: sections, main) imports the others; none of them
    # imports it, at the top or inside a function. Order, lowest first:
    # measuring, bag_benchmark, benchmark_optimizers, dynamic_benchmark,
    # benchmark_report, benchmark_floors, benchmark.
    import ast

    order = ["measuring", "bag_benchmark", "benchmark_optimizers", "dynamic_benchmark",
             "benchmark_report", "benchmark_floors", "benchmark"]
    folder = os.path.dirname(benchmark.__file__)
    for position, name in enumerate(order):
        with open(os.path.join(folder, f"{name}.py"), encoding="utf-8") as file:
            tree = ast.parse(file.read())
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "keras_embed.tools":
                    imported.update(alias.name for alias in node.names)
                elif node.module.startswith("keras_embed.tools."):
                    imported.add(node.module.rsplit(".", 1)[1])
            elif isinstance(node, ast.Import):
                imported.update(a.name.rsplit(".", 1)[1] for a in node.names
                                if a.name.startswith("keras_embed.tools."))
        higher = sorted(imported & set(order[position:]))
        assert not higher, f"tools/{name}.py imports {higher}, which are not below it"
