"""The optimizers' benchmark: each row-sparse optimizer's training step, side
by side with the same Keras optimizer on the stock layer and with `LazyAdam`.

Part of `keras_embed.tools.benchmark` (its `optimizers` section): the model
is the training benchmark's (Embedding(V, 64) -> GlobalAveragePooling1D ->
Dense(1), B=256 x L=200 ids). At V <= `STOCK_UP_TO` every configuration is
alive at once and timed in interleaved rounds; above, Keras's dense
optimizers are left out (their step reads and writes the whole table and
slots several times) and ours are timed one after the other, each freed
before the next is built (a 10M x 64 table is 2.56 GB).
"""

from keras_embed.tools.measuring import time_training
from keras_embed.tools.measuring import training_model
from keras_embed.utils.memory import available_memory_bytes

STOCK_UP_TO = 1_000_000
GIB = 2**30
# The floors.
SPEEDUP_FLOOR = 5.0  # ours + X at V=1M vs stock + keras X
LAZY_ADAM_RATIO_FLOOR = 1.2  # ours + X at V=1M vs ours + LazyAdam
GROWTH_FLOORS = {1_000_000: 1.5, 10_000_000: 2.0}  # step(V) / step(100K)
MARKED_SGD_FLOOR = 1.2  # ours + SGD vs keras SGD on a table marked by hand
ROWWISE_MEMORY_FLOOR = 1.1
# Ours -> the Keras optimizer it is compared with on the stock layer.
PAIRS = {
    "ours + Adagrad": "stock + keras Adagrad",
    "ours + Ftrl": "stock + keras Ftrl",
    "ours + SGD momentum": "stock + keras SGD momentum",
}
NEW = ("ours + Adagrad", "ours + RowWiseAdagrad", "ours + Ftrl",
       "ours + SGD momentum", "ours + SGD")
# Table-sized slots each of ours reads and writes by rows per step (a row of
# RowWiseAdagrad's accumulator is 4 bytes: counted as none).
SLOTS = {"ours + LazyAdam": 2, "ours + Adagrad": 1, "ours + RowWiseAdagrad": 0,
         "ours + Ftrl": 2, "ours + SGD momentum": 1, "ours + SGD": 0}
SLOTS_COUNTS = (0, 1, 2)


def makers(rows, width):
    """Name -> function of no arguments building the compiled model."""
    import keras

    import keras_embed
    from keras_embed import optimizers

    def ours(optimizer):
        return lambda: training_model(keras_embed.Embedding(rows, width), optimizer())

    def marked_sgd():
        layer = keras_embed.Embedding(rows, width)
        model = training_model(layer, keras.optimizers.SGD())
        optimizers.mark_updated_by_rows(layer.embeddings)  # before the first trace
        return model

    found = {
        "ours + LazyAdam": ours(optimizers.LazyAdam),
        "ours + Adagrad": ours(optimizers.Adagrad),
        "ours + RowWiseAdagrad": ours(optimizers.RowWiseAdagrad),
        "ours + Ftrl": ours(optimizers.Ftrl),
        "ours + SGD momentum": ours(lambda: optimizers.SGD(momentum=0.9)),
        "ours + SGD": ours(optimizers.SGD),
        "ours + keras SGD, marked by hand": marked_sgd,
    }
    if rows <= STOCK_UP_TO:
        def stock(optimizer):
            return lambda: training_model(keras.layers.Embedding(rows, width), optimizer())

        found["stock + keras Adagrad"] = stock(keras.optimizers.Adagrad)
        found["stock + keras Ftrl"] = stock(keras.optimizers.Ftrl)
        found["stock + keras SGD momentum"] = stock(lambda: keras.optimizers.SGD(momentum=0.9))
    return found


def measure_optimizers(rows, repeats, rng, batch, length, width):
    """Step times and memory of every configuration of `makers` at V=rows."""
    import tensorflow as tf


    built = makers(rows, width)
    ids = tf.constant(rng.integers(rows, size=(batch, length)), tf.int32)
    targets = tf.constant(rng.random((batch, 1)), tf.float32)
    # The table and its slots (at most 2) per configuration, and 3 tables
    # more for a dense optimizer's temporaries.
    table = rows * width * 4
    needed = len(built) * 3 * table + 3 * table
    together = rows <= STOCK_UP_TO and needed < 0.8 * (available_memory_bytes() or 8 * GIB)
    seconds, held, step_peak = time_training(built, ids, targets, repeats, together)
    unique = int(tf.size(tf.unique(tf.reshape(ids, [-1]))[0]))
    row_passes = None
    if rows == 1_000_000:  # where the speed-ups and the byte floor are checked
        row_passes = row_pass_seconds(rows, width, ids, repeats)
    return {
        "rows": rows, "width": width, "median_s": seconds, "interleaved": together,
        "repeats": repeats, "unique_ids": unique, "table_bytes": table,
        "held_bytes": held, "step_peak_bytes": step_peak,
        "peak_bytes": {name: held[name] + step_peak[name] for name in built},
        "lazy_adam_bytes_floor": lazy_adam_bytes(batch * length, unique, width),
        "row_pass_s": row_passes,
    }


def row_pass_seconds(rows, width, ids, repeats):
    """Median seconds of a step's row reads and writes alone, for 0, 1 and
    2 table-sized slots: the lookup of `ids`, then the unique ids' rows of
    the table and of each slot read and written back, on tables of `rows`
    rows that a row write has put in TensorFlow's row-written mode, as
    training does. Timed in interleaved rounds.

    Rows of 256 bytes read at random from tables of hundreds of MB cost far
    more per byte than a copy (cache and TLB misses): no row-sparse step
    with that many slots can be faster, whatever its arithmetic.
    """
    import tensorflow as tf

    from keras_embed.tools.measuring import interleaved

    flat = tf.reshape(ids, [-1])
    unique = tf.unique(flat)[0]
    tables = [tf.Variable(tf.zeros((rows, width))) for _ in range(3)]
    for table in tables:
        table.scatter_update(tf.IndexedSlices(tf.zeros((1, width)), unique[:1]))

    def passes(slots):
        @tf.function(autograph=False)
        def row_reads_and_writes():
            looked_up = tf.gather(tables[0], flat)
            for table in tables[:1 + slots]:
                table.scatter_update(tf.IndexedSlices(tf.gather(table, unique), unique))
            return looked_up
        row_reads_and_writes()
        return row_reads_and_writes

    return interleaved({slots: passes(slots) for slots in SLOTS_COUNTS}, repeats)


def lazy_adam_bytes(ids, unique, width):
    """The bytes a LazyAdam step must move: the looked-up rows read and the
    output written, the output's gradient, the summed gradient's rows, and
    those rows of the table and both slots read and written."""
    row = width * 4
    return 2 * ids * row + ids * row + unique * row + 6 * unique * row


def floors(optimizer_results, copy_gb_per_s):
    """The issue's floors for the optimizers, each with its measured value."""
    by_rows = {r["rows"]: r for r in optimizer_results}
    checks = []

    def check(floor, value, met):
        checks.append({"floor": floor, "value": float(value), "met": bool(met)})

    if 1_000_000 in by_rows:
        at_1m = by_rows[1_000_000]["median_s"]
        for ours, stock in PAIRS.items():
            if stock in at_1m:
                speedup = at_1m[stock] / at_1m[ours]
                bound = ""
                row_passes = by_rows[1_000_000].get("row_pass_s")
                if row_passes:  # (keys are strings once read back from JSON)
                    passes = {int(k): v for k, v in row_passes.items()}
                    most = at_1m[stock] / passes[SLOTS[ours]]
                    bound = f" (its row reads and writes alone allow at most {most:.1f}x)"
                check(f"V=1M: {ours} >= {SPEEDUP_FLOOR:.0f}x faster than {stock}{bound}",
                      speedup, speedup >= SPEEDUP_FLOOR)
        for name in NEW:
            ratio = at_1m[name] / at_1m["ours + LazyAdam"]
            check(f"V=1M: {name} within {LAZY_ADAM_RATIO_FLOOR}x of ours + LazyAdam",
                  ratio, ratio <= LAZY_ADAM_RATIO_FLOOR)
        floor_bytes = by_rows[1_000_000]["lazy_adam_bytes_floor"]
        floor_s = floor_bytes / (copy_gb_per_s * 1e9)
        measured = at_1m["ours + LazyAdam"]
        check(f"V=1M: LazyAdam step vs its byte floor ({floor_bytes / 1e6:.0f} MB, "
              f"{floor_s * 1e3:.1f} ms at this run's copy bandwidth): measured / floor",
              measured / floor_s, measured / floor_s <= 1.5)
    if 100_000 in by_rows:
        base = by_rows[100_000]["median_s"]
        for rows, limit in GROWTH_FLOORS.items():
            if rows not in by_rows:
                continue
            for name in NEW + ("ours + LazyAdam",):
                growth = by_rows[rows]["median_s"][name] / base[name]
                check(f"{name}: step at V={rows:,} <= {limit}x its step at V=100K",
                      growth, growth <= limit)
    if 10_000_000 in by_rows:
        at_10m = by_rows[10_000_000]
        seconds = at_10m["median_s"]
        ratio = seconds["ours + SGD"] / seconds["ours + keras SGD, marked by hand"]
        check(f"V=10M: ours + SGD within {MARKED_SGD_FLOOR}x of keras SGD on a table "
              "marked by hand", ratio, ratio <= MARKED_SGD_FLOOR)
        name = "ours + RowWiseAdagrad"
        ratio = at_10m["peak_bytes"][name] / (at_10m["table_bytes"] + at_10m["step_peak_bytes"][name])
        check(f"V=10M: RowWiseAdagrad's peak memory <= {ROWWISE_MEMORY_FLOOR}x the "
              "table's bytes plus the step's working set", ratio, ratio <= ROWWISE_MEMORY_FLOOR)
    return checks


def format_optimizer_tables(results):
    """The optimizers' results as a Markdown table (their floors are in
    `benchmark.floors`, printed by `benchmarks/run.py --check`)."""
    lines = [
        "Optimizers, training step (train_on_batch), D=64, median ms; peak memory GiB "
        "(held + step); '-' where not measured:",
        "",
    ]
    optimizer_results = results["optimizers"]
    names = []
    for r in optimizer_results:
        names += [n for n in r["median_s"] if n not in names]
    lines.append("| configuration | " + " | ".join(
        f"V={r['rows']:,}{'' if r['interleaved'] else ' (one at a time)'}"
        for r in optimizer_results) + " | " + " | ".join(
        f"peak GiB V={r['rows']:,}" for r in optimizer_results) + " |")
    lines.append("|---|" + "---:|" * (2 * len(optimizer_results)))
    for name in names:
        times = [f"{r['median_s'][name] * 1e3:.1f}" if name in r["median_s"] else "-"
                 for r in optimizer_results]
        peaks = [f"{r['peak_bytes'][name] / GIB:.2f}" if name in r["peak_bytes"] else "-"
                 for r in optimizer_results]
        lines.append(f"| {name} | " + " | ".join(times) + " | " + " | ".join(peaks) + " |")
    at_1m = [r for r in optimizer_results if r["rows"] == 1_000_000 and r.get("row_pass_s")]
    if at_1m:
        r = at_1m[0]
        passes = {int(k): v for k, v in r["row_pass_s"].items()}  # JSON keys are strings
        floor_bytes = r["lazy_adam_bytes_floor"]
        copy = results["bandwidth"]["copy_gb_per_s"]
        lines += ["", (
            "Row reads and writes alone at V=1M (the lookup, then the unique ids' rows of the "
            "table and of its table-sized slots read and written back), median ms: "
            + ", ".join(f"{k} slot{'s' * (k != 1)} {v * 1e3:.1f}" for k, v in sorted(passes.items()))
            + "."), "", (
            f"LazyAdam at V=1M: step {r['median_s']['ours + LazyAdam'] * 1e3:.1f} ms; it must "
            f"move {floor_bytes / 1e6:.0f} MB, {floor_bytes / (copy * 1e9) * 1e3:.1f} ms at "
            f"this run's copy bandwidth ({copy:.1f} GB/s); its row reads and writes alone "
            f"take {passes[SLOTS['ours + LazyAdam']] * 1e3:.1f} ms.")]
    return "\n".join(lines)
