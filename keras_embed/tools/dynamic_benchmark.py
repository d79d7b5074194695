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
  row; TensorFlow's allocator's own count where it keeps one; and the figure
  computed from the layer's structures: hash-table buckets (12 bytes each)
  plus `row_keys`, `counts` and `last_seen` (8 + 4 + 4 bytes a row), plus
  the count-min sketch's `4 * width * 4` bytes with `min_count > 1`. The
  table is initialized with zeros there, so that drawing it leaves no
  temporaries behind to be counted as the layer's.
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


def computed_bytes_per_row(capacity, min_count=1, sketch_width=None):
    """Bytes a row of `DynamicEmbedding` holds beyond its table row, from its
    structures: `(buckets, bytes per row)`."""
    buckets = 2 ** math.ceil(math.log2(capacity / MAX_LOAD + 1))
    total = buckets * BUCKET_BYTES + capacity * (8 + 4 + 4)
    if min_count > 1:
        width = sketch_width or max(1024, capacity // 4)
        total += 4 * width * 4
    return buckets, total / capacity


def _resident_bytes():
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_memory(capacity, width, key_space, exponent, seed, batch, length,
                   max_batches):
    """Memory of a `DynamicEmbedding` beyond its table, measured in this
    process: built, then trained (its own calls with `training=True`, no
    optimizer) on fresh batches until full and evicting."""
    import tensorflow as tf

    import keras_embed

    rng = np.random.default_rng(seed)
    gc.collect()
    before = _resident_bytes()
    current_before, _ = allocated()
    layer = keras_embed.DynamicEmbedding(capacity, width, combiner="mean",
                                         embeddings_initializer="zeros")
    layer.build((batch, length))
    built = _resident_bytes()
    admit = tf.function(lambda keys: layer(keys, training=True), autograph=False)
    batches, evicted_steps = 0, 0
    while batches < max_batches and evicted_steps < STEADY_STEPS:
        admit(tf.constant(zipf_keys(rng, exponent, key_space, batch, length)))
        batches += 1
        evicted_steps += _figures(layer)["evicted"] > 0
    gc.collect()
    after = _resident_bytes()
    current_after, _ = allocated()
    table_bytes = layer.embeddings.shape[0] * width * 4
    buckets, computed = computed_bytes_per_row(capacity)
    held_buckets = int(layer._key_map.table.export()[0].shape[0])
    _, with_sketch = computed_bytes_per_row(capacity, min_count=2)
    return {
        "capacity": capacity, "width": width, "fill_batches": batches,
        "rows_held": int(_figures(layer)["rows_held"]),
        "evicting": evicted_steps > 0, "table_bytes": table_bytes,
        "resident_before": before, "resident_built": built, "resident_after": after,
        "resident_bytes_per_row": (after - before - table_bytes) / capacity,
        "resident_built_bytes_per_row": (built - before - table_bytes) / capacity,
        "allocator_bytes_per_row":
            (current_after - current_before - table_bytes) / capacity,
        "buckets": buckets, "buckets_held": held_buckets,
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


def _figures(layer):
    """The layer's last training step's figures: name -> float."""
    prefix = f"{layer.name}_"
    return {m.name[len(prefix):]: float(m.result()) for m in layer.metrics}


def measure_dynamic(capacity, width, key_space, exponent, repeats, max_warm_batches,
                    rng, batch, length, fresh_process=True):
    """Training step, forward pass and memory of `DynamicEmbedding` against
    `Embedding` -> pooling and `EmbeddingBag` on ids already mapped to rows.

    Args:
        capacity, width: the layers' rows and dims.
        key_space, exponent: keys are Zipf(`exponent`) over `key_space`.
        repeats: interleaved rounds, each timing one training step of every
            candidate on a batch of its own (the same batches for all).
        max_warm_batches: the most batches of warm-up to fill the table.
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
    if fresh_process:
        memory = measure_memory_in_fresh_process(**memory_arguments)
    else:
        memory = measure_memory(**memory_arguments)

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
    rows_before_forward = int(_figures(dynamic)["rows_held"])
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
        "step_figures": figures, "rows_held_after": rows_before_forward,
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
        for key, how in (("resident_bytes_per_row", "measured (resident memory)"),
                         ("computed_bytes_per_row", "computed")):
            value = result["memory"][key]
            checks.append({"floor": f"dynamic {at}: memory beyond the table, {how}, "
                                    f"<= {BYTES_PER_ROW_FLOOR} bytes a row",
                           "value": value, "met": value <= BYTES_PER_ROW_FLOOR})
    return checks


def format_dynamic_tables(results):
    """The `dynamic` section's results as Markdown tables."""
    dynamic = results.get("dynamic", [])
    if not dynamic:
        return ""
    first = dynamic[0]
    lines = [
        f"DynamicEmbedding, B={first['batch']} bags of L={first['length']} keys, Zipf "
        f"({first['zipf_exponent']}) over {first['key_space']:,} keys; the others on the "
        "keys mapped to rows first. Median ms (training: one fresh batch a step, LazyAdam):",
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
        "Each timed training step of DynamicEmbedding (median): keys admitted, rows evicted, "
        "share of lookups that found no row; warm-up batches until full and evicting:",
        "",
        "| capacity | distinct keys a batch | admitted | evicted | missed | rows held "
        "| warm-up batches |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in dynamic:
        f = r["step_figures"]
        lines.append(f"| {r['capacity']:,} | {r['distinct_keys_per_batch']:,.0f} "
                     f"| {f['admitted']:,.0f} | {f['evicted']:,.0f} | {f['missed_share']:.1%} "
                     f"| {f['rows_held']:,.0f} | {r['warm_batches']} |")
    lines += [
        "",
        "DynamicEmbedding's memory beyond its table (and any optimizer's slots), bytes a "
        "row: resident memory of a fresh process, before and after building and filling "
        "it, less the table; TensorFlow's allocator's count; computed from its structures "
        "(hash-table buckets of 12 bytes, and 8 + 4 + 4 bytes a row of keys, counts and "
        "clock):",
        "",
        "| capacity | resident memory | of which building | allocator | computed "
        "| buckets | computed, min_count > 1 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in dynamic:
        m = r["memory"]
        lines.append(f"| {r['capacity']:,} | {m['resident_bytes_per_row']:.1f} "
                     f"| {m['resident_built_bytes_per_row']:.1f} "
                     f"| {m['allocator_bytes_per_row']:.1f} | {m['computed_bytes_per_row']:.1f} "
                     f"| {m['buckets_held']:,} | {m['computed_bytes_per_row_with_sketch']:.1f} |")
    return "\n".join(lines)
