"""The optimizers' benchmark: its configurations, byte floor, floors and table,
on tiny or made-up numbers (the benchmark itself runs outside the suite)."""

from keras_embed import optimizers
from keras_embed.tools import benchmark_optimizers as bench


def test_configurations_use_the_optimizers_they_name():
    built = bench.makers(50, 4)
    assert set(built) == {
        "ours + LazyAdam", "ours + Adagrad", "ours + RowWiseAdagrad", "ours + Ftrl",
        "ours + SGD momentum", "ours + SGD", "ours + keras SGD, marked by hand",
        "stock + keras Adagrad", "stock + keras Ftrl", "stock + keras SGD momentum",
    }
    model = built["ours + SGD momentum"]()
    assert type(model.optimizer) is optimizers.SGD and model.optimizer.momentum == 0.9
    marked = built["ours + keras SGD, marked by hand"]()
    assert optimizers.is_updated_by_rows(marked.layers[0].embeddings)
    assert type(marked.optimizer).__module__.startswith("keras.")
    # Above STOCK_UP_TO, Keras's dense optimizers are left out.
    assert not any(name.startswith("stock") for name in bench.makers(bench.STOCK_UP_TO + 1, 4))


def test_lazy_adam_byte_floor_by_hand():
    # 51,200 ids, 49,836 distinct, D=64 (256 B a row): 2 x 51,200 rows for the
    # lookup and its output, 51,200 for the output's gradient, 49,836 for the
    # summed gradient, 6 x 49,836 for the table's and slots' rows read and
    # written: 153,600 + 348,852 = 502,452 rows.
    assert bench.lazy_adam_bytes(51_200, 49_836, 64) == 502_452 * 256


def _result(rows, seconds, peak=None, step_peak=None):
    return {"rows": rows, "width": 64, "median_s": seconds, "interleaved": True,
            "table_bytes": rows * 256, "unique_ids": 1000,
            "peak_bytes": peak or {n: 1.0 for n in seconds},
            "step_peak_bytes": step_peak or {n: 0.0 for n in seconds},
            "lazy_adam_bytes_floor": 100e6}


def test_floors_on_made_up_numbers():
    names = ("ours + LazyAdam",) + bench.NEW
    at_100k = {n: 0.010 for n in names}
    at_1m = {n: 0.012 for n in names} | {"ours + Ftrl": 0.030,
                                          "stock + keras Adagrad": 0.120,
                                          "stock + keras Ftrl": 0.120,
                                          "stock + keras SGD momentum": 0.040}
    at_10m = {n: 0.019 for n in names} | {"ours + keras SGD, marked by hand": 0.018}
    table = 10_000_000 * 256
    at_10m_result = _result(10_000_000, at_10m,
                            peak={"ours + RowWiseAdagrad": table + 40e6 + 30e6},
                            step_peak={"ours + RowWiseAdagrad": 30e6})
    checks = bench.floors([_result(100_000, at_100k), _result(1_000_000, at_1m), at_10m_result],
                          copy_gb_per_s=10.0)
    found = {c["floor"]: (round(c["value"], 4), c["met"]) for c in checks}
    assert found["V=1M: ours + Adagrad >= 5x faster than stock + keras Adagrad"] == (10.0, True)
    assert found["V=1M: ours + Ftrl >= 5x faster than stock + keras Ftrl"] == (4.0, False)
    assert found["V=1M: ours + Ftrl within 1.2x of ours + LazyAdam"] == (2.5, False)
    assert found["V=1M: ours + SGD within 1.2x of ours + LazyAdam"] == (1.0, True)
    assert found["ours + Ftrl: step at V=1,000,000 <= 1.5x its step at V=100K"] == (3.0, False)
    assert found["ours + SGD: step at V=10,000,000 <= 2.0x its step at V=100K"] == (1.9, True)
    assert found["V=10M: ours + SGD within 1.2x of keras SGD on a table marked by hand"] == (
        round(0.019 / 0.018, 4), True)
    memory = [v for k, v in found.items() if "RowWiseAdagrad's peak memory" in k]
    assert memory == [(round((table + 70e6) / (table + 30e6), 4), True)]
    # 100 MB at 10 GB/s is 10 ms; LazyAdam measured 12 ms: 1.2x its floor.
    (byte_floor,) = [v for k, v in found.items() if "byte floor" in k]
    assert byte_floor == (1.2, True)


def test_table_lists_every_configuration_and_marks_the_missing():
    results = {
        "optimizers": [_result(100_000, {"ours + SGD": 0.002, "stock + keras Ftrl": 0.05}),
                       _result(10_000_000, {"ours + SGD": 0.003})],
    }
    text = bench.format_optimizer_tables(results)
    assert "| ours + SGD | 2.0 | 3.0 |" in text
    assert "| stock + keras Ftrl | 50.0 | - |" in text


def test_table_states_lazy_adams_byte_floor_and_row_reads_side_by_side():
    at_1m = _result(1_000_000, {"ours + LazyAdam": 0.012}) | {
        "row_pass_s": {"0": 0.004, "1": 0.006, "2": 0.008}}  # as read back from JSON
    text = bench.format_optimizer_tables(
        {"optimizers": [at_1m], "bandwidth": {"copy_gb_per_s": 10.0}})
    assert "median ms: 0 slots 4.0, 1 slot 6.0, 2 slots 8.0." in text
    # 100 MB at 10 GB/s: 10 ms; LazyAdam has 2 slots.
    assert text.endswith(
        "LazyAdam at V=1M: step 12.0 ms; it must move 100 MB, 10.0 ms at this run's copy "
        "bandwidth (10.0 GB/s); its row reads and writes alone take 8.0 ms.")


def test_speed_up_floors_state_the_most_the_row_reads_and_writes_allow():
    seconds = {n: 0.040 for n in ("ours + LazyAdam",) + bench.NEW} | {"stock + keras Adagrad": 0.120}
    at_1m = _result(1_000_000, seconds) | {"row_pass_s": {"0": 0.02, "1": 0.03, "2": 0.04}}
    (check,) = [c for c in bench.floors([at_1m], 10.0) if "keras Adagrad" in c["floor"]]
    # Adagrad has one table-sized slot: 120 ms / 30 ms.
    assert check["floor"].endswith("(its row reads and writes alone allow at most 4.0x)")
    assert (check["value"], check["met"]) == (3.0, False)


def test_row_reads_and_writes_are_timed_on_tables_of_the_vocabulary():
    import numpy as np
    import tensorflow as tf

    ids = tf.constant(np.random.default_rng(0).integers(1000, size=(4, 5)), tf.int32)
    seconds = bench.row_pass_seconds(1000, 8, ids, repeats=3)
    assert set(seconds) == {0, 1, 2} and all(0 < s < 1 for s in seconds.values())


def test_every_configuration_is_measured_on_a_tiny_table():
    import numpy as np

    result = bench.measure_optimizers(50, 1, np.random.default_rng(0), batch=4, length=5, width=4)
    assert set(result["median_s"]) == set(bench.makers(50, 4))
    assert result["interleaved"] and result["row_pass_s"] is None  # row passes: at V=1M only
    assert 0 < result["unique_ids"] <= 20
    # The table and its slots: LazyAdam holds 2 slots, RowWiseAdagrad a column.
    table = 50 * 4 * 4
    assert result["held_bytes"]["ours + LazyAdam"] >= 3 * table
    assert table <= result["held_bytes"]["ours + RowWiseAdagrad"] < 2 * table
