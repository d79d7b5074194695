"""The `keras_embed.DynamicEmbedding` benchmark of `keras_embed.tools.benchmark`
(its `dynamic` section): what a row of its own per key costs against a
table whose ids are already rows.

Keys are a stream: batches of B bags of L keys, Zipf-distributed (exponent
`zipf_exponent`) over `key_space` possible values, each rank sent to a large
int64 value by a fixed bijection (a multiplication by an odd constant modulo
2**64), drawn from the run's seeded NumPy generator. The layer's table is
first trained on fresh batches until it is full and evicting; then every
timed step takes a batch of its own, so each admits keys and evicts others
as a stream would. Side by side, in one interleaved run, on the same
batches:

- Training step (`train_on_batch`, MSE, `keras_embed.optimizers.LazyAdam`):
  keys -> `DynamicEmbedding(capacity, D, combiner="mean")` -> Dense(1),
  against `keras_embed.Embedding(capacity, D)` -> GlobalAveragePooling1D ->
  Dense(1) and `keras_embed.EmbeddingBag(capacity, D, combiner="mean")` ->
  Dense(1), on the batches' keys mapped to rows with NumPy first
  (`np.unique`; folded modulo `capacity` where more keys than rows).
- Forward pass: a `tf.function` calling each layer (`training=False` for
  `DynamicEmbedding`: it only looks up; the Embedding then pooled).
- Memory beyond the table: in a fresh process (memory an allocator freed
  earlier in this one would hide growth), the process's resident memory
  (`/proc/self/statm`) before and after building and filling a
  `DynamicEmbedding`, less the table's `(capacity + 1) x D x 4` bytes, per
  row; how much TensorFlow's allocator's count of what is held grew while
  training (where it keeps one); and the figure computed from the layer's
  structures: hash-table buckets (12 bytes each) plus `row_keys`, `counts`
  and `last_seen` (8 + 4 + 4 bytes a row) and the fresh-row flags (1),
  plus the count-min sketch's `4 * width * 4` bytes with `min_count > 1`.
  The table is initialized with zeros there, so that drawing it leaves no
  temporaries behind to be counted as the layer's. The same again at twice
  the rows, in another fresh process: the growth per row added is what a
  row costs, without what a process holds whatever its table's size, and
  it is what the floor checks.

Beside the interleaved steps, `steady_steps` training steps of
`DynamicEmbedding` alone, one after another, each timed: their mean counts
the steps that rebuild its key map.
"""

import gc
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

from keras_embed.tools.measuring import allocated
from keras_embed.tools.measuring import interleaved

DYNAMIC = "DynamicEmbedding"
EMBEDDING = "Embedding -> GlobalAveragePooling1D"
BAG = "EmbeddingBag"
CANDIDATES = (DYNAMIC, EMBEDDING, BAG)
# The project's floors, on DynamicEmbedding against Embedding -> pooling.
STEP_FLOOR = 1.5  # training step, at most this many times as long
FORWARD_FLOOR = 3.0  # forward pass
BYTES_PER_ROW_FLOOR = 48  # memory beyond the table and optimizer slots
# The DenseHashTable's bucket: an int64 key and an int32 row.
BUCKET_BYTES = 12
MAX_LOAD = 0.8
# Odd, so that multiplying by it modulo 2**64 sends distinct ranks to
# distinct keys (the golden ratio's 64-bit constant).
SPREAD = np.uint64(0x9E3779B97F4A7C15)
# Steps on fresh batches after the first eviction, before timing.
STEADY_STEPS = 3
# Batches every candidate trains on before timing (traces, builds slots).
EXTRA_BATCHES = 2


def zipf_keys(rng, exponent, key_space, batch, length):
    """One batch of `(batch, length)` int64 keys: Zipf ranks in 1..key_space
    (draws above `key_space` drawn again), each sent to a large int64 value
    by a fixed bijection."""
    ranks = rng.zipf(exponent, batch * length)
    over = ranks > key_space
    while over.any():
        ranks[over] = rng.zipf(exponent, int(over.sum()))
        over = ranks > key_space
    return (ranks.astype(np.uint64) * SPREAD).view(np.int64).reshape(batch, length)


def computed_bytes_per_row(capacity, min_count=1, sketch_width=None, buckets=None):
    """Bytes a row of `DynamicEmbedding` holds beyond its table row, from its
    structures: hash-table buckets (by default as many as the map makes for
    `capacity`), `row_keys`, `counts`, `last_seen`, the flags of rows given
    to new keys (read by the optimizers), and the sketch with
    `min_count > 1`. Returns `(buckets, bytes per row)`."""
    if buckets is None:  # As `keras_embed.layers.key_map.KeyMap` sizes its table.
        buckets = 2 ** math.ceil(math.log2(max(capacity / MAX_LOAD + 1, capacity + 64)))
    total = buckets * BUCKET_BYTES + capacity * (8 + 4 + 4 + 1)
    if min_count > 1:
        width = sketch_width or max(1024, capacity // 4)
        total += 4 * width * 4
    return buckets, total / capacity


def _resident_bytes():
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _fill(layer, rng, exponent, key_space, batch, length, max_batches):
    """Trains `layer` alone (its calls with `training=True`) on fresh
    batches until it is full and has evicted in `STEADY_STEPS` steps:
    `(batches, whether it evicted)`."""
    import tensorflow as tf

    admit = tf.function(lambda keys: layer(keys, training=True), autograph=False)
    batches, evicted_steps = 0, 0
    while batches < max_batches and evicted_steps < STEADY_STEPS:
        admit(tf.constant(zipf_keys(rng, exponent, key_space, batch, length)))
        batches += 1
        evicted_steps += _figures(layer)["evicted"] > 0
    return batches, evicted_steps > 0


def measure_memory(capacity, width, key_space, exponent, seed, batch, length,
                   max_batches):
    """Memory of a `DynamicEmbedding` beyond its table, measured in this
    process (a fresh one: see `measure_memory_in_fresh_process`).

    A small layer is built and filled first, so that what any first run
    allocates once (kernels, thread pools, traces) is not counted; then the
    process's resident memory and TensorFlow's allocator's count are read
    before and after building a `DynamicEmbedding(capacity, width)` (its
    table zeros: drawing random values leaves temporaries behind) and
    training it alone until it is full and evicting.
    """
    import tensorflow as tf

    import keras_embed

    rng = np.random.default_rng(seed)

    def layer_of(rows):
        return keras_embed.DynamicEmbedding(rows, width, combiner="mean",
                                            embeddings_initializer="zeros")

    small = layer_of(1000)
    _fill(small, rng, exponent, key_space, batch, length, max_batches)
    del small
    gc.collect()
    before = _resident_bytes()
    layer = layer_of(capacity)
    layer.build((batch, length))
    built = _resident_bytes()
    held_built, _ = allocated(reset=True)
    batches, evicting = _fill(layer, rng, exponent, key_space, batch, length, max_batches)
    gc.collect()
    after = _resident_bytes()
    held_after, peak = allocated()
    table_bytes = layer.embeddings.shape[0] * width * 4
    buckets = int(layer._key_map.table.export()[0].shape[0])
    # What the layer's own variables hold, beside its table and the map's
    # buckets: row_keys, counts, last_seen (and the small ones), and the
    # fresh-row flags (1 byte a row, not a weight).
    variables = [v for v in layer.weights if v is not layer.embeddings]
    state_bytes = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)
    state_bytes += int(np.prod(layer._fresh.shape))
    _, computed = computed_bytes_per_row(capacity, buckets=buckets)
    _, with_sketch = computed_bytes_per_row(capacity, min_count=2, buckets=buckets)
    return {
        "capacity": capacity, "width": width, "fill_batches": batches,
        "rows_held": int(_figures(layer)["rows_held"]), "evicting": evicting,
        "table_bytes": table_bytes,
        "resident_before": before, "resident_built": built, "resident_after": after,
        "resident_bytes_per_row": (after - before - table_bytes) / capacity,
        "resident_built_bytes_per_row": (built - before - table_bytes) / capacity,
        # What training added to the resident memory: the temporaries of its
        # steps (batch-sized), which the allocator keeps for the next step.
        "resident_training_bytes": after - built,
        # TensorFlow's allocator (NaN where it keeps no count): how much
        # what it holds grew while training (the map is sized once), and the
        # most it held during training above the built layer.
        "allocator_growth_bytes_per_row": (held_after - held_built) / capacity,
        "allocator_step_peak_bytes": peak - held_built,
        "buckets": buckets,
        "structures_bytes_per_row": (buckets * BUCKET_BYTES + state_bytes) / capacity,
        "computed_bytes_per_row": computed,
        "computed_bytes_per_row_with_sketch": with_sketch,
    }


def measure_memory_in_fresh_process(**arguments):
    """`measure_memory` in a new Python process (same environment)."""
    code = ("import json, sys; from keras_embed.tools.dynamic_benchmark import measure_memory; "
            "print(json.dumps(measure_memory(**json.loads(sys.argv[1]))))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(arguments)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the memory measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def per_added_row(memory, doubled):
    """Memory a row beyond the table, from two fresh processes' layers of
    `C` and `2C` rows, each measured after training until full and
    evicting: how much the resident memory less the table grew per row
    added. A step's temporaries (batch-sized, the same at both) cancel out,
    as does whatever a process holds at start. With it, the same figure
    computed from the structures."""
    def beyond(measured):
        return measured["resident_after"] - measured["resident_before"] - measured["table_bytes"]

    def computed(measured):
        return measured["computed_bytes_per_row"] * measured["capacity"]

    added = doubled["capacity"] - memory["capacity"]
    return {
        "capacity": doubled["capacity"], "evicting": doubled["evicting"],
        "resident_bytes_per_row": doubled["resident_bytes_per_row"],
        "resident_training_bytes": doubled["resident_training_bytes"],
        "resident_added_bytes_per_row": (beyond(doubled) - beyond(memory)) / added,
        "computed_added_bytes_per_row": (computed(doubled) - computed(memory)) / added,
    }


def _figures(layer):
    """The layer's last training step's figures: name -> float."""
    prefix = f"{layer.name}_"
    return {m.name[len(prefix):]: float(m.result()) for m in layer.metrics}


def measure_dynamic(capacity, width, key_space, exponent, repeats, max_warm_batches,
                    steady_steps, rng, batch, length, fresh_process=True):
    """Training step, forward pass and memory of `DynamicEmbedding` against
    `Embedding` -> pooling and `EmbeddingBag` on ids already mapped to rows.

    Args:
        capacity, width: the layers' rows and dims.
        key_space, exponent: keys are Zipf(`exponent`) over `key_space`.
        repeats: interleaved rounds, each timing one training step of every
            candidate on a batch of its own (the same batches for all).
        max_warm_batches: the most batches of warm-up to fill the table.
        steady_steps: training steps of `DynamicEmbedding` alone, on fresh
            batches, each timed, after the warm-up: their mean counts the
            steps that rebuild the map (see `keras_embed.layers.key_map`).
        rng: the NumPy generator of the keys (and of the memory process's
            seed).
        batch, length: B bags of L keys.
        fresh_process: measure memory in a fresh process (else in this one:
            for tests).
    """
    import keras
    import tensorflow as tf

    import keras_embed
    from keras_embed.optimizers import LazyAdam

    memory_arguments = dict(capacity=capacity, width=width, key_space=key_space,
                            exponent=exponent, seed=int(rng.integers(2**31)),
                            batch=batch, length=length, max_batches=max_warm_batches)
    measure = measure_memory_in_fresh_process if fresh_process else measure_memory
    memory = measure(**memory_arguments)
    memory["doubled"] = per_added_row(memory, measure(**{**memory_arguments, "capacity": 2 * capacity}))

    def model(layers, dtype):
        built = keras.Sequential([keras.Input((length,), dtype=dtype), *layers,
                                  keras.layers.Dense(1)])
        built.compile(optimizer=LazyAdam(), loss="mse")
        return built

    dynamic = keras_embed.DynamicEmbedding(capacity, width, combiner="mean")
    embedding = keras_embed.Embedding(capacity, width)
    pooling = keras.layers.GlobalAveragePooling1D()
    bag = keras_embed.EmbeddingBag(capacity, width, combiner="mean")
    models = {DYNAMIC: model([dynamic], "int64"), EMBEDDING: model([embedding, pooling], "int32"),
              BAG: model([bag], "int32")}
    targets = tf.constant(rng.random((batch, 1)), tf.float32)

    def next_keys():
        return zipf_keys(rng, exponent, key_space, batch, length)

    # The dynamic table: fresh batches until it is full and evicting.
    started = time.perf_counter()
    warm_batches, evicted_steps = 0, 0
    while warm_batches < max_warm_batches and evicted_steps < STEADY_STEPS:
        models[DYNAMIC].train_on_batch(next_keys(), targets)
        warm_batches += 1
        evicted_steps += _figures(dynamic)["evicted"] > 0
    warm_seconds = time.perf_counter() - started
    steady, rebuilds = [], 0
    for _ in range(steady_steps):
        keys = next_keys()
        removed = int(dynamic._key_map.removed.numpy())
        start = time.perf_counter()
        models[DYNAMIC].train_on_batch(keys, targets)
        steady.append(time.perf_counter() - start)
        rebuilds += int(dynamic._key_map.removed.numpy()) < removed
    keys = [next_keys() for _ in range(EXTRA_BATCHES + repeats)]
    distinct, rows = np.unique(np.stack(keys), return_inverse=True)
    rows = rows.reshape(len(keys), batch, length)
    folded = len(distinct) > capacity
    if folded:
        rows = rows % capacity
    key_tensors = [tf.constant(k) for k in keys]
    row_tensors = [tf.constant(r, tf.int32) for r in rows]
    inputs = {DYNAMIC: key_tensors, EMBEDDING: row_tensors, BAG: row_tensors}
    for name, built in models.items():
        for step in range(EXTRA_BATCHES):
            built.train_on_batch(inputs[name][step], targets)
    step_figures = []

    def training_step(name):
        batches = iter(inputs[name][EXTRA_BATCHES:])
        built = models[name]
        if name != DYNAMIC:
            return lambda: built.train_on_batch(next(batches), targets)

        def step():
            logs = built.train_on_batch(next(batches), targets, return_dict=True)
            step_figures.append(logs)
        return step

    train_seconds = interleaved({name: training_step(name) for name in models}, repeats)
    figures = {name: float(np.median([logs[f"{dynamic.name}_{name}"] for logs in step_figures]))
               for name in ("admitted", "evicted", "missed_share", "rows_held")}
    forwards = {
        DYNAMIC: tf.function(lambda k: dynamic(k, training=False), autograph=False),
        EMBEDDING: tf.function(lambda k: pooling(embedding(k)), autograph=False),
        BAG: tf.function(lambda k: bag(k), autograph=False),
    }

    def forward(name):
        batches = inputs[name][EXTRA_BATCHES:]
        position = [0]

        def call():
            forwards[name](batches[position[0] % len(batches)])
            position[0] += 1
        return call

    calls = {name: forward(name) for name in forwards}
    for call in calls.values():  # traces
        call()
    start = time.perf_counter()
    calls[EMBEDDING]()
    per_sample = max(1, int(0.01 / (time.perf_counter() - start)))  # ~10 ms a sample
    forward_seconds = interleaved(calls, repeats, per_sample)
    rows_held_after = int(_figures(dynamic)["rows_held"])
    del models, forwards, calls
    gc.collect()
    keras.backend.clear_session()
    return {
        "capacity": capacity, "width": width, "batch": batch, "length": length,
        "key_space": key_space, "zipf_exponent": exponent,
        "warm_batches": warm_batches, "warm_seconds": warm_seconds,
        "timed_batches": repeats,
        "distinct_keys_in_timed_batches": int(len(distinct)),
        "distinct_keys_per_batch": float(np.mean([len(np.unique(k)) for k in keys])),
        "rows_folded": bool(folded),
        "step_figures": figures, "rows_held_after": rows_held_after,
        # DynamicEmbedding alone, one step after another (map rebuilds in).
        "steady_steps": steady_steps, "steady_map_rebuilds": rebuilds, "steady_step_s": steady,
        "steady_mean_s": float(np.mean(steady)) if steady else float("nan"),
        "steady_median_s": float(np.median(steady)) if steady else float("nan"),
        "steady_max_s": float(np.max(steady)) if steady else float("nan"),
        "train_median_s": train_seconds, "forward_median_s": forward_seconds,
        "step_ratio": train_seconds[DYNAMIC] / train_seconds[EMBEDDING],
        "forward_ratio": forward_seconds[DYNAMIC] / forward_seconds[EMBEDDING],
        "memory": memory,
    }


def floors(dynamic_results):
    """The project's floors on the `dynamic` section's results."""
    checks = []
    for result in dynamic_results:
        at = f"capacity={result['capacity']:,} D={result['width']}"
        step, forward = result["step_ratio"], result["forward_ratio"]
        checks.append({"floor": f"dynamic {at}: training step <= {STEP_FLOOR}x "
                                "Embedding -> GlobalAveragePooling1D's (LazyAdam)",
                       "value": step, "met": step <= STEP_FLOOR})
        checks.append({"floor": f"dynamic {at}: forward pass <= {FORWARD_FLOOR}x "
                                "Embedding -> GlobalAveragePooling1D's",
                       "value": forward, "met": forward <= FORWARD_FLOOR})
        memory = result["memory"]
        for value, how in ((memory["doubled"]["resident_added_bytes_per_row"],
                            "measured (resident memory a row added, 2x rows against 1x)"),
                           (memory["computed_bytes_per_row"], "computed")):
            checks.append({"floor": f"dynamic {at}: memory beyond the table, {how}, "
                                    f"<= {BYTES_PER_ROW_FLOOR} bytes a row",
                           "value": value, "met": value <= BYTES_PER_ROW_FLOOR})
    return checks


def format_dynamic_tables(results):
    """The `dynamic` section's results as Markdown tables ("" without it)."""
    dynamic = results.get("dynamic", [])
    if not dynamic:
        return ""
    first = dynamic[0]
    lines = [
        f"DynamicEmbedding (combiner mean), B={first['batch']} bags of L={first['length']} "
        f"keys, Zipf ({first['zipf_exponent']}) over {first['key_space']:,} keys, a fresh "
        "batch each training step (LazyAdam); the other two on the same keys mapped to "
        "rows first. Median ms:",
        "",
        "| capacity | D | | " + " | ".join(CANDIDATES) + " | DynamicEmbedding vs Embedding |",
        "|---:|---:|---|" + "---:|" * (len(CANDIDATES) + 1),
    ]
    for r in dynamic:
        for kind, key, ratio in (("training step", "train_median_s", "step_ratio"),
                                 ("forward", "forward_median_s", "forward_ratio")):
            times = " | ".join(f"{r[key][name] * 1e3:.2f}" for name in CANDIDATES)
            lines.append(f"| {r['capacity']:,} | {r['width']} | {kind} | {times} "
                         f"| {r[ratio]:.2f}x |")
    lines += [
        "",
        "DynamicEmbedding's training steps: each timed step (median) admits keys and evicts "
        "rows; then steps one after another (map rebuilds included), ms:",
        "",
        "| capacity | distinct keys a batch | admitted | evicted | missed | rows held "
        "| warm-up batches | steps in a row | map rebuilds | mean | median | max |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in dynamic:
        f = r["step_figures"]
        lines.append(
            f"| {r['capacity']:,} | {r['distinct_keys_per_batch']:,.0f} "
            f"| {f['admitted']:,.0f} | {f['evicted']:,.0f} | {f['missed_share']:.1%} "
            f"| {f['rows_held']:,.0f} | {r['warm_batches']} | {r['steady_steps']} "
            f"| {r['steady_map_rebuilds']} | {r['steady_mean_s'] * 1e3:.1f} "
            f"| {r['steady_median_s'] * 1e3:.1f} | {r['steady_max_s'] * 1e3:.1f} |")
    lines += [
        "",
        "DynamicEmbedding's memory beyond its table (and an optimizer's slots), in a fresh "
        "process: resident memory after building it, and after training it until full "
        "and evicting, less the table, bytes a row; what training added (its steps' "
        "temporaries, batch-sized, kept for the next step), MiB; how much what "
        "TensorFlow's allocator holds grew while training, bytes a row; computed from its "
        "structures (hash-table buckets of 12 bytes; keys, counts, clock and fresh-row "
        "flags of 8 + 4 + 4 + 1 bytes a row; a count-min sketch adds 4 x width x 4 bytes "
        "with min_count > 1):",
        "",
        "| capacity | resident, built | resident, built + trained | training's temporaries "
        "| growth while training | computed | buckets | computed, min_count > 1 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in dynamic:
        m = r["memory"]
        lines.append(
            f"| {r['capacity']:,} | {m['resident_built_bytes_per_row']:.1f} "
            f"| {m['resident_bytes_per_row']:.1f} "
            f"| {m['resident_training_bytes'] / 2**20:.1f} MiB "
            f"| {m['allocator_growth_bytes_per_row']:.1f} "
            f"| {m['computed_bytes_per_row']:.1f} | {m['buckets']:,} "
            f"| {m['computed_bytes_per_row_with_sketch']:.1f} |")
    lines += [
        "",
        "The same after training, in another fresh process, at twice the rows; and how much "
        "the resident memory less the table grew per row added (a step's temporaries, the "
        "same at both, cancel out), measured and computed, bytes:",
        "",
        "| capacity | resident, built + trained | training's temporaries "
        "| a row added, measured | a row added, computed |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in dynamic:
        d = r["memory"]["doubled"]
        lines.append(
            f"| {d['capacity']:,} | {d['resident_bytes_per_row']:.1f} "
            f"| {d['resident_training_bytes'] / 2**20:.1f} MiB "
            f"| {d['resident_added_bytes_per_row']:.1f} | {d['computed_added_bytes_per_row']:.1f} |")
    return "\n".join(lines)
