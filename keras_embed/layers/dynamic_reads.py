"""How a training step of `keras_embed.DynamicEmbedding` reads its rows.

The step's map update is two halves (`row_admission.look_up`, then
`row_admission.admit`). The rows are read between them: after the lookup,
before the step takes and writes rows, so that the forward pass does not
wait for the second half. A key admitted now reads the fresh values its
row gets, and the gradient goes to the rows the keys hold after the step:
one slice per key looked up, as `Embedding`'s.
"""

import tensorflow as tf

from keras_embed.layers import row_admission


def train_step_vectors(layer, keys, bags=None):
    """The vectors of flat int64 `keys` (padding left out) in a training
    step of `layer`, which updates its map; with `bags` (`bag_of`, the bag
    of each key, and the number of bags), the sums of those bags instead.

    A layer called several times in one traced training step (one table
    for two inputs) makes one step of them: the clock advances once, and a
    later call never takes the rows an earlier one looked up.
    """
    graph = None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()
    earlier = layer._rows_by_graph.get(graph) if graph is not None else None
    found = row_admission.look_up(layer, keys, earlier)
    oov_rows = layer._oov_rows(found.unique)
    rows_after = []
    vectors = _read(layer, tf.where(found.holds, found.rows, oov_rows), found, rows_after, bags)
    rows = row_admission.admit(layer, found)
    rows_after.append(tf.gather(tf.where(rows < 0, oov_rows, rows), found.position))
    if graph is not None:
        layer._rows_by_graph[graph] = rows if earlier is None else tf.concat([earlier, rows], 0)
    return vectors


def _read(layer, index, found, rows_after, bags):
    """The vectors of `found.position`: `embeddings[index]` (zeros for -1)
    of the distinct keys, but `found.fresh` for the keys admitted now; or,
    with `bags`, the sums of the bags they make. Their gradient goes to the
    rows `rows_after[0]` (one per key, -1: none), set once the step gave
    rows, after this read."""
    table = layer._embeddings.value
    zeros = layer.oov == "zeros"
    distinct = tf.shape(index)[0]
    # Where each distinct key's vector is in [read rows, fresh, zeros].
    admitted = tf.shape(found.admitting)[0]
    fresh_at = tf.scatter_nd(found.admitting[:, None], tf.range(1, admitted + 1), tf.shape(index))
    source = tf.where(fresh_at > 0, distinct + fresh_at - 1, tf.range(distinct))
    if zeros:
        source = tf.where(tf.logical_and(index < 0, fresh_at == 0), distinct + admitted, source)
    source = tf.gather(source, found.position)
    bag_of, count = bags if bags is not None else (None, None)
    # A read of no rows has the gradient tape watch the table. The rows are
    # read through its handle: `tf.custom_gradient` would read a variable
    # used inside whole (and each write of a row would then copy the table).
    table.sparse_read(tf.zeros([0], tf.int32))

    @tf.custom_gradient
    def read(handle, index, fresh, source):
        rows = tf.raw_ops.ResourceGather(resource=handle, indices=tf.maximum(index, 0), dtype=table.dtype)
        rows = tf.concat([rows, fresh] + ([tf.zeros_like(rows[:1])] if zeros else []), 0)
        if bags is None:
            vectors = tf.gather(rows, source)
        else:  # In order, as `bag_reductions.by_segments` sums.
            vectors = tf.sparse.segment_sum(rows, source, bag_of, num_segments=count)

        def gradient(upstream):
            if bags is not None:  # Each key's share: its bag's.
                upstream = tf.gather(upstream, bag_of)
            rows = rows_after[0]
            if zeros:  # No row of the table is in their gradient.
                kept = tf.where(rows >= 0)[:, 0]
                upstream, rows = tf.gather(upstream, kept), tf.gather(rows, kept)
            shape = tf.constant(table.shape.as_list(), tf.int64)
            return tf.IndexedSlices(upstream, rows, shape), None, None, None

        return vectors, gradient

    return read(table.handle, index, found.fresh, source)
