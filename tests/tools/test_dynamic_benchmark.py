"""The `dynamic` section of the benchmark harness (DynamicEmbedding against
Embedding and EmbeddingBag), at tiny sizes: structure only, no timings
judged (the benchmark itself: `python benchmarks/run.py --sections dynamic`)."""

import json
import os

import numpy as np
import pytest

from keras_embed.tools import benchmark
from keras_embed.tools import dynamic_benchmark
from keras_embed.tools.dynamic_benchmark import CANDIDATES

TINY = {"capacities": (2_000,), "width": 4, "key_space": 10**6, "zipf_exponent": 1.1,
        "repeats": 2, "max_warm_batches": 30, "steady_steps": 2}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`run(quick=True, sections=["dynamic"])` with a tiny table."""
    output = tmp_path_factory.mktemp("dynamic")
    patch = pytest.MonkeyPatch()
    patch.setitem(benchmark.QUICK, "dynamic", TINY)
    try:
        results = benchmark.run(quick=True, output=str(output), progress=lambda line: None,
                                sections=["dynamic"])
    finally:
        patch.undo()
    return results, output


def test_the_section_measures_every_candidate(quick_run):
    results, _ = quick_run
    assert results["lookup"] == results["training"] == results["bags"] == []
    (dynamic,) = results["dynamic"]
    assert (dynamic["capacity"], dynamic["width"]) == (2_000, 4)
    assert (dynamic["batch"], dynamic["length"]) == (benchmark.BATCH, benchmark.LENGTH)
    for key in ("train_median_s", "forward_median_s"):
        assert set(dynamic[key]) == set(CANDIDATES)
        assert all(value > 0 for value in dynamic[key].values())
    assert dynamic["step_ratio"] == (dynamic["train_median_s"]["DynamicEmbedding"]
                                     / dynamic["train_median_s"][CANDIDATES[1]])
    assert dynamic["forward_ratio"] == (dynamic["forward_median_s"]["DynamicEmbedding"]
                                        / dynamic["forward_median_s"][CANDIDATES[1]])
    # Full and evicting before the timed steps, each of which admits keys.
    figures = dynamic["step_figures"]
    assert figures["rows_held"] == 2_000
    assert figures["admitted"] > 0 and figures["evicted"] == figures["admitted"]
    assert dynamic["warm_batches"] < TINY["max_warm_batches"]
    assert len(dynamic["steady_step_s"]) == dynamic["steady_steps"] == 2
    # 51,200 keys a batch over 2,000 rows: the others' rows are folded.
    assert dynamic["rows_folded"] is True


def test_memory_is_measured_in_a_fresh_process_and_computed(quick_run):
    memory = quick_run[0]["dynamic"][0]["memory"]
    assert memory["evicting"] is True and memory["rows_held"] == 2_000
    assert memory["table_bytes"] == 2_001 * 4 * 4
    assert memory["resident_after"] > 0 and memory["resident_before"] > 0
    # 2,000 / 0.8 + 1 -> 4,096 buckets of 12 bytes, and 8 + 4 + 4 + 1 bytes a row.
    assert memory["buckets"] == 4_096
    assert memory["computed_bytes_per_row"] == pytest.approx(4_096 * 12 / 2_000 + 17)
    # The layer's own variables are the computed ones, give or take a few bytes.
    assert memory["structures_bytes_per_row"] == pytest.approx(
        memory["computed_bytes_per_row"], abs=0.5)
    assert memory["computed_bytes_per_row_with_sketch"] == pytest.approx(
        memory["computed_bytes_per_row"] + 4 * 1024 * 4 / 2_000)
    # Twice the rows in another process: 8,192 buckets for 4,000 rows.
    doubled = memory["doubled"]
    assert doubled["capacity"] == 4_000 and doubled["evicting"] is True
    assert doubled["computed_added_bytes_per_row"] == pytest.approx(
        ((8_192 - 4_096) * 12 + 2_000 * 17) / 2_000)
    assert np.isfinite(doubled["resident_added_bytes_per_row"])


def test_the_run_writes_tables_and_json(quick_run):
    results, output = quick_run
    assert sorted(os.listdir(output)) == ["benchmark.json", "benchmark.md"]  # no plot
    with open(os.path.join(output, "benchmark.json")) as file:
        written = json.load(file)
    assert written["dynamic"][0]["capacity"] == 2_000
    assert written["settings"]["dynamic"]["capacities"] == [2_000]
    with open(os.path.join(output, "benchmark.md")) as file:
        text = file.read()
    assert "| 2,000 | 4 | training step |" in text and "| 2,000 | 4 | forward |" in text
    assert "floor" not in text.lower()  # A user's results: not the project's floors.
    checks = {check["floor"]: check for check in benchmark.floors(results)}
    assert len(checks) == 4 and all(isinstance(c["met"], bool) for c in checks.values())


def test_floors_compare_against_their_thresholds():
    result = {"capacity": 1_000_000, "width": 64, "step_ratio": 1.49, "forward_ratio": 3.2,
              "memory": {"resident_bytes_per_row": 90.0, "computed_bytes_per_row": 41.2,
                         "doubled": {"resident_added_bytes_per_row": 48.5}}}
    met = {check["floor"]: (check["met"], check["value"])
           for check in dynamic_benchmark.floors([result])}
    assert met == {
        "dynamic capacity=1,000,000 D=64: training step <= 1.5x "
        "Embedding -> GlobalAveragePooling1D's (LazyAdam)": (True, 1.49),
        "dynamic capacity=1,000,000 D=64: forward pass <= 3.0x "
        "Embedding -> GlobalAveragePooling1D's": (False, 3.2),
        "dynamic capacity=1,000,000 D=64: memory beyond the table, measured (resident "
        "memory a row added, 2x rows against 1x), <= 48 bytes a row": (False, 48.5),
        "dynamic capacity=1,000,000 D=64: memory beyond the table, computed, <= 48 bytes "
        "a row": (True, 41.2),
    }
    assert dynamic_benchmark.format_dynamic_tables({"dynamic": []}) == ""


def test_keys_are_a_seeded_zipf_stream_of_large_int64_values():
    first = dynamic_benchmark.zipf_keys(np.random.default_rng(3), 1.1, 10**8, 4, 50)
    again = dynamic_benchmark.zipf_keys(np.random.default_rng(3), 1.1, 10**8, 4, 50)
    assert first.dtype == np.int64 and first.shape == (4, 50)
    np.testing.assert_array_equal(first, again)
    # Ranks 1..key_space go to distinct keys spread over all of int64.
    ranks = np.arange(1, 10_001, dtype=np.uint64)
    keys = (ranks * dynamic_benchmark.SPREAD).view(np.int64)
    assert len(np.unique(keys)) == 10_000 and (keys < 0).any() and np.abs(keys).max() > 2**40
    # The most popular key (rank 1) repeats; many keys appear once.
    values, counts = np.unique(first, return_counts=True)
    assert counts.max() > 10 and (counts == 1).sum() > 50


def test_computed_bytes_per_row_at_a_million_rows():
    buckets, per_row = dynamic_benchmark.computed_bytes_per_row(1_000_000)
    assert buckets == 2**21 and per_row == pytest.approx(2**21 * 12 / 1e6 + 17)
    _, with_sketch = dynamic_benchmark.computed_bytes_per_row(1_000_000, min_count=2)
    assert with_sketch == pytest.approx(per_row + 4)  # width capacity // 4: 4 bytes a row
