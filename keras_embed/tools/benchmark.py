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

Ids are uniform at random: few repeats, the hardest case for `LazyAdam`.

Usage (`--quick`: a small configuration in under a minute):

    python benchmarks/run.py [--quick] [--output DIR]
    keras-embed bench [--quick] [--output DIR]

It prints Markdown tables and writes them (`benchmark.md`) with
`benchmark.json` and `benchmark.png` to DIR (default `benchmarks/results`).
"""

import argparse
import gc
import json
import os
import platform
import sys
import time
import warnings

import numpy as np

from keras_embed.tools.benchmark_report import RAW_GATHER_FLOOR
from keras_embed.tools.benchmark_report import format_tables
from keras_embed.tools.benchmark_report import plot
from keras_embed.utils.memory import available_memory_bytes, physical_memory_bytes

BATCH, LENGTH = 256, 200
TRAIN_WIDTH = 64
FULL = {
    "lookup_rows": (10_000, 100_000, 1_000_000),
    "lookup_widths": (16, 64, 256),
    "train_rows": (100_000, 1_000_000, 4_000_000),
    "lookup_repeats": 75,
    "train_repeats": 15,
}
QUICK = {
    "lookup_rows": (10_000, 100_000),
    "lookup_widths": (16, 64),
    "train_rows": (10_000, 100_000),
    "lookup_repeats": 9,
    "train_repeats": 5,
}
GIB = 2**30


def main(argv=None):
    """Command-line entry: parses `argv`, runs, prints; returns 0."""
    parser = argparse.ArgumentParser(
        prog="keras-embed bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true",
                        help="a small configuration that runs in under a minute")
    parser.add_argument("--output", default=os.path.join("benchmarks", "results"),
                        help="folder for benchmark.json, .md and .png "
                             "(default: %(default)s)")
    arguments = parser.parse_args(argv)
    run(quick=arguments.quick, output=arguments.output)
    return 0


def run(quick=False, output=os.path.join("benchmarks", "results"), progress=None):
    """Runs every measurement, prints tables, writes them, JSON and a PNG.

    Args:
        quick: the small configuration (`QUICK`) instead of `FULL`.
        output: folder for `benchmark.json`, `benchmark.md` and
            `benchmark.png`, or `None` to write nothing.
        progress: called with a line of text for each step done; defaults to
            printing to stderr.

    Returns:
        The results, as written to `benchmark.json`.
    """
    if progress is None:
        def progress(line):
            print(line, file=sys.stderr, flush=True)
    settings = QUICK if quick else FULL
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    results = {"machine": machine(), "quick": quick,
               "settings": {**settings, "batch": BATCH, "length": LENGTH,
                            "train_width": TRAIN_WIDTH}}
    results["bandwidth"] = measure_copy_bandwidth()
    progress(f"memory copy: {results['bandwidth']['copy_gb_per_s']:.1f} GB/s")
    shapes = [(v, d) for v in settings["lookup_rows"] for d in settings["lookup_widths"]]
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
    for number, rows in enumerate(settings["train_rows"], 1):
        result = measure_training(rows, settings["train_repeats"], rng)
        results["training"].append(result)
        progress(f"[training {number}/{len(settings['train_rows'])}] "
                 f"V={rows:,}: " + _medians(result))
    results["floors"] = floors(results)
    results["seconds"] = time.perf_counter() - started
    tables = format_tables(results)
    print(tables, flush=True)
    if output is not None:
        os.makedirs(output, exist_ok=True)
        with open(os.path.join(output, "benchmark.json"), "w") as file:
            json.dump(results, file, indent=1)
        with open(os.path.join(output, "benchmark.md"), "w") as file:
            file.write(tables + "\n")
        plot(results, os.path.join(output, "benchmark.png"))
        progress(f"wrote {output}/benchmark.json, benchmark.md and benchmark.png "
                 f"({results['seconds']:.0f} s)")
    return results


def interleaved(candidates, repeats, calls=1):
    """Median seconds per call of each candidate, timed in rotating rounds.

    Args:
        candidates: dict of name -> function of no arguments.
        repeats: rounds; each times every candidate once, `calls` calls each.
    """
    names = list(candidates)
    times = {name: [] for name in names}
    for round_number in range(repeats):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            function = candidates[name]
            start = time.perf_counter()
            for _ in range(calls):
                function()
            times[name].append((time.perf_counter() - start) / calls)
    return {name: float(np.median(values)) for name, values in times.items()}


def measure_copy_bandwidth(size=256 * 2**20, repeats=7):
    """Bytes moved per second (read + write) copying a buffer of `size` bytes,
    the best of NumPy's copy (one thread) and TensorFlow's (all threads)."""
    import tensorflow as tf

    source = np.ones(size // 4, "float32")
    target = np.empty_like(source)
    tensor = tf.constant(source)
    one = tf.Variable(1.0)  # a variable, so that no optimizer folds it away
    copy_tf = tf.function(lambda: (tensor * one)[:1], autograph=False)
    copy_tf()
    seconds = interleaved(
        {"numpy": lambda: np.copyto(target, source), "tensorflow": copy_tf}, repeats
    )
    rates = {name: 2 * size / value / 1e9 for name, value in seconds.items()}
    return {"copy_gb_per_s": max(rates.values()),
            "numpy_gb_per_s": rates["numpy"], "tensorflow_gb_per_s": rates["tensorflow"],
            "note": "bytes read plus bytes written per second"}


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


def _training_model(layer, optimizer):
    import keras

    model = keras.Sequential([
        keras.Input((LENGTH,), dtype="int32"),
        layer,
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _allocated(reset=False):
    """(current, peak) bytes of TensorFlow's CPU allocator, the peak reset
    first if `reset`; NaNs where the allocator keeps no statistics.

    TensorFlow's default CPU allocator keeps none on some machines; its BFC
    allocator always does (`TF_CPU_ALLOCATOR_USE_BFC=true`, read when
    TensorFlow starts: `benchmarks/run.py` sets it).
    """
    import tensorflow as tf

    try:
        if reset:
            tf.config.experimental.reset_memory_stats("CPU:0")
        info = tf.config.experimental.get_memory_info("CPU:0")
    except ValueError:  # "Allocator stats not available for device 'CPU:0'"
        return float("nan"), float("nan")
    return info["current"], info["peak"]


def measure_training(rows, repeats, rng):
    """Step time and memory of the three training configurations at V=rows."""
    import keras
    import tensorflow as tf

    import keras_embed
    from keras_embed.optimizers import LazyAdam

    makers = {
        "stock + Adam": lambda: _training_model(
            keras.layers.Embedding(rows, TRAIN_WIDTH), keras.optimizers.Adam()),
        "ours + Adam": lambda: _training_model(
            keras_embed.Embedding(rows, TRAIN_WIDTH), keras.optimizers.Adam()),
        "ours + LazyAdam": lambda: _training_model(
            keras_embed.Embedding(rows, TRAIN_WIDTH), LazyAdam()),
    }
    ids = tf.constant(rng.integers(rows, size=(BATCH, LENGTH)), tf.int32)
    targets = tf.constant(rng.random((BATCH, 1)), tf.float32)
    # Table and two slots per configuration, and about as much again for
    # dense Adam's temporaries: if all three do not fit, time one at a time.
    needed = len(makers) * 3 * rows * TRAIN_WIDTH * 4 + 3 * rows * TRAIN_WIDTH * 4
    together = needed < 0.8 * (available_memory_bytes() or 8 * GIB)
    models, held, step_peak = {}, {}, {}

    def build(name):
        model = makers[name]()
        for _ in range(2):  # builds the optimizer, traces, warms up
            model.train_on_batch(ids, targets)
        # What the configuration holds, counted exactly (the allocator's
        # running total also moves with one-time allocations of the process).
        held[name] = sum(
            int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
            for v in model.variables + model.optimizer.variables
        )
        gc.collect()
        current, _ = _allocated(reset=True)
        model.train_on_batch(ids, targets)
        step_peak[name] = _allocated()[1] - current
        return model

    def step(model):
        return lambda: model.train_on_batch(ids, targets)

    # Dense Adam turns the table's gradient into a dense tensor, and says so
    # above 10**8 elements: that is what is being measured, not news.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Converting sparse IndexedSlices")
        if together:
            models = {name: build(name) for name in makers}
            seconds = interleaved({n: step(m) for n, m in models.items()}, repeats)
        else:
            seconds = {}
            for name in makers:
                model = build(name)
                seconds.update(interleaved({name: step(model)}, repeats))
                del model
                gc.collect()
    del models
    gc.collect()
    keras.backend.clear_session()
    return {
        "rows": rows, "width": TRAIN_WIDTH, "median_s": seconds,
        "interleaved": together,
        "held_bytes": held, "step_peak_bytes": step_peak,
        "peak_bytes": {name: held[name] + step_peak[name] for name in makers},
        "lazy_speedup_vs_stock_adam":
            seconds["stock + Adam"] / seconds["ours + LazyAdam"],
    }


def floors(results):
    """The issue's floors, each with its measured value and whether it is met."""
    checks = []
    for lookup in results["lookup"]:
        shape = f"V={lookup['rows']:,} D={lookup['width']}"
        checks.append({"floor": f"lookup {shape}: ours >= {RAW_GATHER_FLOOR:.2f}x raw tf.gather",
                       "value": lookup["ours_vs_raw"],
                       "met": lookup["ours_vs_raw"] >= RAW_GATHER_FLOOR})
        checks.append({"floor": f"lookup {shape}: ours >= stock (1.00x)",
                       "value": lookup["ours_vs_stock"], "met": lookup["ours_vs_stock"] >= 1.0})
    training = {t["rows"]: t for t in results["training"]}
    if 1_000_000 in training:
        at_1m = training[1_000_000]
        speedup = at_1m["lazy_speedup_vs_stock_adam"]
        checks.append({"floor": "train V=1M: ours + LazyAdam >= 5x faster than stock + Adam",
                       "value": speedup, "met": speedup >= 5})
        peaks = at_1m["peak_bytes"]
        ratio = peaks["ours + LazyAdam"] / peaks["stock + Adam"]
        checks.append({"floor": "train V=1M: peak memory of ours + LazyAdam <= stock + Adam",
                       "value": ratio, "met": ratio <= 1})
        if 100_000 in training:
            growth = (at_1m["median_s"]["ours + LazyAdam"]
                      / training[100_000]["median_s"]["ours + LazyAdam"])
            checks.append({"floor": "train: ours + LazyAdam at V=1M <= 1.5x its time at V=100K",
                           "value": growth, "met": growth <= 1.5})
    return checks


def _medians(result):
    return ", ".join(f"{name} {value * 1e3:.2f} ms" for name, value in result["median_s"].items())


def machine():
    """What the figures were measured on."""
    import keras
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            names = [line.split(":", 1)[1].strip() for line in file
                     if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    memory = physical_memory_bytes()
    return {"cpu": cpu, "cores": os.cpu_count(),
            "memory_gib": float("nan") if memory is None else memory / GIB,
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "platform": platform.platform()}
