"""Side-by-side benchmarks of `keras_embed.Embedding` and `LazyAdam`.

Everything runs in one process, with the candidates of each configuration
alive together and timed in interleaved rounds (the order rotates each round),
so that a machine shared with other work slows them alike; figures are medians.

- Forward lookup, B=256 sequences of L=200 ids, for V rows x D dims: ours,
  stock `keras.layers.Embedding` and raw `tf.gather` on the same table, each in
  a `tf.function`.
- Training step (`train_on_batch`, Embedding -> GlobalAveragePooling1D ->
  Dense(1), D=64): stock + `keras.optimizers.Adam`, ours + Adam, ours +
  `LazyAdam`; and each configuration's peak memory: what it holds (its model's
  and optimizer's variables) plus the peak of a training step above that
  (from TensorFlow's CPU allocator).
- The machine's memory-copy bandwidth, and the lookup's share of it.
- Bags (`keras_embed.EmbeddingBag`, combiner "mean"), forward + backward to
  the table, B bags of L ids: ours, `keras_embed.Embedding(mask_zero=True)`
  -> `GlobalAveragePooling1D`, a plain `tf.reduce_mean(tf.gather(...))`, and
  the fused `tf.sparse.segment_mean` (sparse gradient) on a table read
  densely, fresh and after row updates (as `LazyAdam` leaves it); each with
  the peak memory of one call above what was allocated before it.
- Optimizers (`keras_embed.tools.benchmark_optimizers`): each of
  `keras_embed.optimizers` against the same Keras optimizer on the stock
  layer and against `LazyAdam`, at V = 100K, 1M and 10M.
- `DynamicEmbedding` (`keras_embed.tools.dynamic_benchmark`): its training
  step (LazyAdam) and forward pass on a stream of Zipf-distributed int64
  keys, full and evicting, against `Embedding` -> GlobalAveragePooling1D and
  `EmbeddingBag` on the same keys mapped to rows first; and its memory
  beyond the table, per row, measured in a fresh process and computed.

Ids are uniform at random: few repeats, the hardest case for `LazyAdam`.

Usage (`--quick`: a small configuration in under a minute):

    python benchmarks/run.py [--quick] [--output DIR] [--check] [--sections ...]
    keras-embed bench [--quick] [--output DIR]

It prints Markdown tables and writes them (`benchmark.md`) with
`benchmark.json` and `benchmark.png` to DIR (default `benchmarks/results`).
The project's floors (`keras_embed.tools.benchmark_floors`) are checked by
`benchmarks/run.py --check` only, which exits with status 1 when one is
missed; `keras-embed bench`, a user's tool, prints the measurements.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from keras_embed.tools.bag_benchmark import BAG_CANDIDATES  # noqa: F401 (re-exported)
from keras_embed.tools.bag_benchmark import measure_bags
from keras_embed.tools import benchmark_optimizers
from keras_embed.tools import dynamic_benchmark
from keras_embed.tools.benchmark_floors import floors
from keras_embed.tools.benchmark_report import format_floors
from keras_embed.tools.benchmark_report import format_tables
from keras_embed.tools.benchmark_report import plot
from keras_embed.tools.measuring import BATCH
from keras_embed.tools.measuring import LENGTH
from keras_embed.tools.measuring import TRAIN_WIDTH
from keras_embed.tools.measuring import interleaved
from keras_embed.tools.measuring import machine
from keras_embed.tools.measuring import measure_copy_bandwidth
from keras_embed.tools.measuring import time_training
from keras_embed.tools.measuring import training_model
from keras_embed.utils.memory import available_memory_bytes

FULL = {
    "lookup_rows": (10_000, 100_000, 1_000_000),
    "lookup_widths": (16, 64, 256),
    "train_rows": (100_000, 1_000_000, 4_000_000),
    "lookup_repeats": 75,
    "train_repeats": 15,
    # (bags B, ids per bag L, dims D, rows V, share of padding): the issue's
    # case, then with half of each bag padding (bags of 1 to 199 ids), and
    # a large B x L x D whose (B, L, D) tensor holds 400 MiB.
    "bag_shapes": ((256, 200, 64, 1_000_000, 0.0), (256, 200, 64, 1_000_000, 0.5),
                   (4096, 200, 128, 100_000, 0.0)),
    "bag_repeats": 15,
    "optimizer_rows": (100_000, 1_000_000, 10_000_000),
    "optimizer_repeats": {100_000: 15, 1_000_000: 15, 10_000_000: 5},
    # DynamicEmbedding: keys Zipf(exponent) over key_space values; warm-up
    # batches until full and evicting (at most max_warm_batches), then
    # steady_steps timed alone, then repeats interleaved rounds.
    "dynamic": {"capacities": (1_000_000,), "width": 64, "key_space": 10**8,
                "zipf_exponent": 1.1, "repeats": 21, "max_warm_batches": 400,
                "steady_steps": 80},
}
QUICK = {
    "lookup_rows": (10_000, 100_000),
    "lookup_widths": (16, 64),
    "train_rows": (10_000, 100_000),
    "lookup_repeats": 9,
    "train_repeats": 5,
    "bag_shapes": ((256, 200, 64, 100_000, 0.0), (256, 200, 64, 100_000, 0.5)),
    "bag_repeats": 5,
    "optimizer_rows": (10_000, 100_000),
    "optimizer_repeats": {10_000: 5, 100_000: 5},
    "dynamic": {"capacities": (100_000,), "width": 64, "key_space": 10**8,
                "zipf_exponent": 1.1, "repeats": 5, "max_warm_batches": 60,
                "steady_steps": 10},
}
GIB = 2**30
SECTIONS = ("lookup", "training", "optimizers", "bags", "dynamic")


def main(argv=None):
    """`benchmarks/run.py`: parses `argv`, runs, prints; returns 0, or 1
    with `--check` when a floor is missed."""
    parser = argparse.ArgumentParser(
        prog="keras-embed bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true",
                        help="a small configuration that runs in under a minute")
    parser.add_argument("--output", default=os.path.join("benchmarks", "results"),
                        help="folder for benchmark.json, .md and .png "
                             "(default: %(default)s)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=SECTIONS,
                        help="what to measure (default: all of %(choices)s)")
    parser.add_argument("--check", action="store_true",
                        help="check the project's floors (see `floors`): "
                             "exit with status 1 when one is missed")
    arguments = parser.parse_args(argv)
    results = run(quick=arguments.quick, output=arguments.output,
                  sections=arguments.sections)
    if not arguments.check:
        return 0
    checks = floors(results)
    print("\n" + format_floors(checks), flush=True)
    missed = [check for check in checks if not check["met"]]
    if missed:
        print(f"{len(missed)} of {len(checks)} floors missed", file=sys.stderr)
        return 1
    return 0


def run(quick=False, output=os.path.join("benchmarks", "results"), progress=None,
        sections=None):
    """Runs every measurement, prints tables, writes them, JSON and a PNG.

    Args:
        quick: the small configuration (`QUICK`) instead of `FULL`.
        output: folder for `benchmark.json`, `benchmark.md` and
            `benchmark.png`, or `None` to write nothing.
        progress: called with a line of text for each step done; defaults to
            printing to stderr.
        sections: which of `SECTIONS` to measure; defaults to all.

    Returns:
        The results, as written to `benchmark.json`.
    """
    if progress is None:
        def progress(line):
            print(line, file=sys.stderr, flush=True)
    settings = QUICK if quick else FULL
    sections = SECTIONS if sections is None else tuple(sections)
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    results = {"machine": machine(), "quick": quick,
               "settings": {**settings, "batch": BATCH, "length": LENGTH,
                            "train_width": TRAIN_WIDTH}}
    results["bandwidth"] = measure_copy_bandwidth()
    progress(f"memory copy: {results['bandwidth']['copy_gb_per_s']:.1f} GB/s")
    shapes = [(v, d) for v in settings["lookup_rows"] for d in settings["lookup_widths"]
              if "lookup" in sections]
    results["lookup"] = []
    for number, (rows, width) in enumerate(shapes, 1):
        result = measure_lookup(rows, width, settings["lookup_repeats"], rng)
        result["share_of_copy_bandwidth"] = share_of_copy_bandwidth(
            result, results["bandwidth"]
        )
        results["lookup"].append(result)
        progress(f"[lookup {number}/{len(shapes)}] V={rows:,} D={width}: "
                 + _medians(result))
    results["training"] = []
    train_rows = settings["train_rows"] if "training" in sections else ()
    for number, rows in enumerate(train_rows, 1):
        result = measure_training(rows, settings["train_repeats"], rng)
        results["training"].append(result)
        progress(f"[training {number}/{len(train_rows)}] "
                 f"V={rows:,}: " + _medians(result))
    results["optimizers"] = []
    optimizer_rows = settings["optimizer_rows"] if "optimizers" in sections else ()
    for number, rows in enumerate(optimizer_rows, 1):
        result = benchmark_optimizers.measure_optimizers(
            rows, settings["optimizer_repeats"][rows], rng, BATCH, LENGTH, TRAIN_WIDTH
        )
        results["optimizers"].append(result)
        progress(f"[optimizers {number}/{len(optimizer_rows)}] "
                 f"V={rows:,}: " + _medians(result))
    results["bags"] = []
    bag_shapes = settings["bag_shapes"] if "bags" in sections else ()
    for number, shape in enumerate(bag_shapes, 1):
        result = measure_bags(*shape, repeats=settings["bag_repeats"], rng=rng)
        results["bags"].append(result)
        progress(f"[bags {number}/{len(bag_shapes)}] "
                 "B={:,} L={} D={} V={:,} padding {:.0%}: ".format(*shape)
                 + _medians(result))
    results["dynamic"] = []
    dynamic = settings["dynamic"]
    capacities = dynamic["capacities"] if "dynamic" in sections else ()
    for number, capacity in enumerate(capacities, 1):
        result = dynamic_benchmark.measure_dynamic(
            capacity, dynamic["width"], dynamic["key_space"], dynamic["zipf_exponent"],
            dynamic["repeats"], dynamic["max_warm_batches"], dynamic["steady_steps"],
            rng, BATCH, LENGTH,
        )
        results["dynamic"].append(result)
        progress(f"[dynamic {number}/{len(capacities)}] capacity={capacity:,}: training "
                 + _medians({"median_s": result["train_median_s"]}) + "; forward "
                 + _medians({"median_s": result["forward_median_s"]})
                 + f"; {result['memory']['doubled']['resident_added_bytes_per_row']:.1f} "
                 "bytes a row beyond the table (resident, a row added)")
    results["seconds"] = time.perf_counter() - started
    tables = format_tables(results)
    if not (results["lookup"] or results["training"] or results["bags"]):
        tables = tables.split("\n")[0]  # the machine line only
    if results["optimizers"]:
        tables += "\n\n" + benchmark_optimizers.format_optimizer_tables(results)
    if results["dynamic"]:
        tables += "\n\n" + dynamic_benchmark.format_dynamic_tables(results)
    print(tables, flush=True)
    if output is not None:
        os.makedirs(output, exist_ok=True)
        with open(os.path.join(output, "benchmark.json"), "w") as file:
            json.dump(results, file, indent=1)
        with open(os.path.join(output, "benchmark.md"), "w") as file:
            file.write(tables + "\n")
        if results["lookup"] and results["training"]:
            plot(results, os.path.join(output, "benchmark.png"))
        progress(f"wrote {output}/benchmark.json, benchmark.md and benchmark.png "
                 f"({results['seconds']:.0f} s)")
    return results


def measure_lookup(rows, width, repeats, rng):
    """Ours, stock and raw `tf.gather` looking up B x L ids in one table."""
    import keras
    import tensorflow as tf

    import keras_embed

    ours = keras_embed.Embedding(rows, width)
    stock = keras.layers.Embedding(rows, width)
    ours.build()
    stock.build()
    stock.embeddings.assign(ours.embeddings)
    # The same table, read as ours and stock read it (one dense read, no row
    # read: a row read would make TensorFlow copy the table on dense reads).
    table = ours.embeddings.value
    ids = tf.constant(rng.integers(rows, size=(BATCH, LENGTH)), tf.int32)
    functions = {
        "ours": tf.function(lambda: ours(ids), autograph=False),
        "stock": tf.function(lambda: stock(ids), autograph=False),
        "raw tf.gather": tf.function(lambda: tf.gather(table.value(), ids), autograph=False),
    }
    first = functions["raw tf.gather"]().numpy()
    for name, function in functions.items():
        np.testing.assert_array_equal(function().numpy(), first, err_msg=name)
    start = time.perf_counter()
    functions["raw tf.gather"]()
    calls = max(1, int(0.01 / (time.perf_counter() - start)))  # ~10 ms a sample
    seconds = interleaved(functions, repeats, calls)
    output_bytes = BATCH * LENGTH * width * 4
    return {
        "rows": rows, "width": width, "median_s": seconds,
        "ids_per_s": {name: BATCH * LENGTH / value for name, value in seconds.items()},
        "ours_vs_raw": seconds["raw tf.gather"] / seconds["ours"],
        "ours_vs_stock": seconds["stock"] / seconds["ours"],
        # Rows read plus output written.
        "bytes_moved": 2 * output_bytes,
    }


def share_of_copy_bandwidth(lookup, bandwidth):
    """The bytes a lookup moves per second (`ours`), as a share of the
    memory-copy bandwidth: `measure_lookup`'s and `measure_copy_bandwidth`'s
    results."""
    bytes_per_s = lookup["bytes_moved"] / lookup["median_s"]["ours"]
    return bytes_per_s / (bandwidth["copy_gb_per_s"] * 1e9)


def measure_training(rows, repeats, rng):
    """Step time and memory of the three training configurations at V=rows."""
    import keras
    import tensorflow as tf

    import keras_embed
    from keras_embed.optimizers import LazyAdam

    makers = {
        "stock + Adam": lambda: training_model(
            keras.layers.Embedding(rows, TRAIN_WIDTH), keras.optimizers.Adam()),
        "ours + Adam": lambda: training_model(
            keras_embed.Embedding(rows, TRAIN_WIDTH), keras.optimizers.Adam()),
        "ours + LazyAdam": lambda: training_model(
            keras_embed.Embedding(rows, TRAIN_WIDTH), LazyAdam()),
    }
    ids = tf.constant(rng.integers(rows, size=(BATCH, LENGTH)), tf.int32)
    targets = tf.constant(rng.random((BATCH, 1)), tf.float32)
    # Table and two slots per configuration, and about as much again for
    # dense Adam's temporaries: if all three do not fit, time one at a time.
    needed = len(makers) * 3 * rows * TRAIN_WIDTH * 4 + 3 * rows * TRAIN_WIDTH * 4
    together = needed < 0.8 * (available_memory_bytes() or 8 * GIB)
    seconds, held, step_peak = time_training(makers, ids, targets, repeats, together)
    return {
        "rows": rows, "width": TRAIN_WIDTH, "median_s": seconds,
        "interleaved": together,
        "held_bytes": held, "step_peak_bytes": step_peak,
        "peak_bytes": {name: held[name] + step_peak[name] for name in makers},
        "lazy_speedup_vs_stock_adam":
            seconds["stock + Adam"] / seconds["ours + LazyAdam"],
    }


def _medians(result):
    return ", ".join(f"{name} {value * 1e3:.2f} ms" for name, value in result["median_s"].items())
