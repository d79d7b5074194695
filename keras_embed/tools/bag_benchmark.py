"""The bags-of-ids benchmark of `keras_embed.tools.benchmark`: every way to
reduce B bags of L ids to B vectors, forward and backward, side by side.

The ways: `keras_embed.EmbeddingBag` (combiner "mean", `mask_zero=True`),
`keras_embed.Embedding(mask_zero=True)` -> `GlobalAveragePooling1D`, a plain
`tf.reduce_mean(tf.gather(...))` (no padding taken out), and the fused
`tf.sparse.segment_mean` kernel (sparse gradient) on a table read densely,
fresh and after one row write (as `LazyAdam` leaves a table). Each gets the
gradient of `sum(outputs * upstream)` with respect to its own table (the same
values); the outputs are checked equal first.
"""

import gc

import numpy as np

BAG_CANDIDATES = (
    "EmbeddingBag", "Embedding -> GlobalAveragePooling1D", "reduce_mean(gather)",
    "tf.sparse.segment_mean", "tf.sparse.segment_mean, table written by rows",
)
# Not a way to reduce bags: the two passes every way that gives a sparse
# gradient makes (read the ids' rows, write the gradient's rows), and nothing
# else. No way can beat it; `bound_vs_pooling` is the most any can gain.
LOWER_BOUND = "bound: gather rows + write gradient rows"


def measure_bags(batch, length, width, rows, padding, repeats, rng):
    """Forward + backward of B bags of L ids each, every way, and the peak
    memory of one call (above what was allocated before it).

    With `padding` > 0, bag `b` ends in `round(padding * L)` zeros on
    average (lengths spread evenly), which `reduce_mean(gather)` cannot leave
    out: its figure is then the time of a different (wrong) answer.

    Each candidate has its own table (the same values): a dense read of a
    table once read or written by rows copies it, which only the candidate
    "table written by rows" is meant to pay.
    """
    import keras
    import tensorflow as tf

    import keras_embed
    from keras_embed.tools.measuring import allocated
    from keras_embed.tools.measuring import interleaved

    table = rng.normal(size=(rows, width)).astype("float32")
    ids = rng.integers(1, rows, size=(batch, length))
    if padding:  # Bag lengths spread evenly, from 1 up to L.
        lengths = np.round(np.linspace(1, 2 * (1 - padding) * length - 1, batch))
        ids[np.arange(length) >= np.clip(lengths, 1, length)[:, None]] = 0
    ids = tf.constant(ids, tf.int32)
    upstream = tf.constant(rng.normal(size=(batch, width)), tf.float32)
    # The fused kernel's input: the ids that are not padding, listed bag
    # after bag (as a tf.SparseTensor holds them), made outside the timing.
    kept = tf.reshape(ids, [-1]) != 0
    flat = tf.boolean_mask(tf.reshape(ids, [-1]), kept)
    bag_of = tf.boolean_mask(tf.repeat(tf.range(batch), length), kept)
    bag = keras_embed.EmbeddingBag(rows, width, mask_zero=True, weights=table)
    embedding = keras_embed.Embedding(rows, width, mask_zero=True, weights=table)
    pooling = keras.layers.GlobalAveragePooling1D()
    plain, fused, fused_rows = (tf.Variable(table) for _ in range(3))
    # One row written with a scatter, as LazyAdam writes: TensorFlow now
    # copies this table on every dense read.
    fused_rows.scatter_update(tf.IndexedSlices(table[:1], [0]))
    ways = {
        "EmbeddingBag": (lambda t: bag(ids), bag.embeddings.value),
        "Embedding -> GlobalAveragePooling1D": (
            lambda t: pooling(embedding(ids), mask=embedding.compute_mask(ids)),
            embedding.embeddings.value),
        "reduce_mean(gather)": (lambda t: tf.reduce_mean(tf.gather(t, ids), axis=1), plain),
        "tf.sparse.segment_mean": (
            lambda t: tf.sparse.segment_mean(t, flat, bag_of, batch, sparse_gradient=True),
            fused),
        "tf.sparse.segment_mean, table written by rows": (
            lambda t: tf.sparse.segment_mean(t, flat, bag_of, batch, sparse_gradient=True),
            fused_rows),
    }

    def forward_backward(forward, variable):
        @tf.function(autograph=False)
        def call():
            with tf.GradientTape() as tape:
                outputs = forward(variable)
                loss = tf.reduce_sum(outputs * upstream)
            gradient = tape.gradient(loss, variable)
            # Returned whole, so that no part of the work is pruned away.
            return outputs, gradient.values, gradient.indices
        return call

    functions = {name: forward_backward(*way) for name, way in ways.items()}
    bound_table = tf.Variable(table)
    kept_ids = tf.boolean_mask(ids, tf.not_equal(ids, 0))

    @tf.function(autograph=False)
    def bound():
        rows = tf.gather(bound_table, kept_ids)
        return rows, tf.gather(upstream, bag_of)  # a row per id, as the gradient

    first = functions["EmbeddingBag"]()[0].numpy()
    for name, function in functions.items():
        outputs, values, _ = function()
        assert values.shape[0] <= batch * length, name  # a sparse gradient
        if padding and name == "reduce_mean(gather)":
            continue
        np.testing.assert_allclose(outputs.numpy(), first, rtol=1e-4, atol=1e-6,
                                   err_msg=name)
    seconds = interleaved({**functions, LOWER_BOUND: bound}, repeats)
    peaks = {}
    for name, function in functions.items():
        gc.collect()
        current, _ = allocated(reset=True)
        result = function()
        peaks[name] = allocated()[1] - current
        del result
    del functions, ways
    gc.collect()
    keras.backend.clear_session()
    return {
        "batch": batch, "length": length, "width": width, "rows": rows,
        "padding": padding, "ids": int(np.count_nonzero(ids)), "median_s": seconds, "peak_bytes": peaks,
        "bag_vs_pooling": seconds["Embedding -> GlobalAveragePooling1D"]
        / seconds["EmbeddingBag"],
        "bag_vs_reduce_mean": seconds["reduce_mean(gather)"] / seconds["EmbeddingBag"],
        "bound_vs_pooling": seconds["Embedding -> GlobalAveragePooling1D"] / seconds[LOWER_BOUND],
        # What a (B, L, D) float32 tensor holds.
        "bld_bytes": batch * length * width * 4,
    }
