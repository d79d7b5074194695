"""How `keras_embed.EmbeddingBag` combines the rows of a bag into one.

`"sum"`: `sum(w * v)`; `"mean"`: `sum(w * v) / sum(w)`; `"sqrtn"`:
`sum(w * v) / sqrt(sum(w ** 2))`; `"max"`: the largest value of each column
(no weights). An empty bag gives zeros. The gradient reaches the rows only
through sums, products and maxima, so the table's gradient stays the
`tf.IndexedSlices` of the lookup, for `"max"` too.
"""

import tensorflow as tf

COMBINERS = ("sum", "mean", "sqrtn", "max")


def along_last_axis(combiner, rows, ids, weights, mask_zero, xla):
    """Combines dense bags: `rows` `(*, L, D)` of `ids` `(*, L)` -> `(*, D)`.

    Args:
        combiner: one of `COMBINERS`.
        rows: the table's rows at `ids`.
        ids: the ids, to find padding (0) if `mask_zero`.
        weights: `(*, L)` weights in the rows' dtype, or `None` (ones).
        mask_zero: whether id 0 is padding, left out of its bag.
        xla: under XLA, whose max drops NaN, the NaN rows of bad ids are
            put back in the bags' maxima.
    """
    if mask_zero:
        present = tf.not_equal(ids, 0)
        empty = tf.logical_not(tf.reduce_any(present, axis=-1))
        mask = tf.cast(present, rows.dtype)
        weights = mask if weights is None else weights * mask
    else:  # Without padding, bags are empty only if the length is 0.
        present = None
        empty = tf.equal(tf.shape(ids)[-1], 0)
    if combiner == "max":
        if present is not None:
            rows = tf.where(present[..., None], rows, _lowest(rows.dtype))
        top = tf.reduce_max(rows, axis=-2)  # Empty: the lowest value.
        top = tf.where(empty[..., None], tf.zeros_like(top), top)
        if xla:  # XLA's max drops NaN: put back the bad ids' NaN.
            nan = tf.reduce_any(tf.math.is_nan(rows), axis=-2)
            top = tf.where(nan, tf.constant(float("nan"), top.dtype), top)
        return top
    if weights is None:
        total = tf.reduce_sum(rows, axis=-2)
        if combiner == "sum":
            return total
        # No weights, no padding: every bag holds `length` ids.
        length = tf.cast(tf.shape(ids)[-1], rows.dtype)
        scale = length if combiner == "mean" else tf.sqrt(length)
        return tf.math.divide_no_nan(total, scale)
    total = tf.reduce_sum(rows * weights[..., None], axis=-2)
    if combiner == "sum":
        return total
    denominator = _denominator(combiner, weights, -1)
    # An empty bag: 0 / 1.
    denominator = tf.where(empty, tf.ones_like(denominator), denominator)
    return total / denominator[..., None]


def by_segments(combiner, rows, bag_of, bags, weights, present, ordered, xla):
    """Combines listed bags: `rows` `(n, D)` -> `(bags, D)`.

    Row `i` is in bag `bag_of[i]`, with weight `weights[i]` (or 1), if
    `present[i]` (or always). Where `bag_of` never decreases (`ordered`: a
    bool, or a boolean tensor checked when the graph runs), bags are summed
    by sorted segment sums, else (and under XLA, which needs a static output
    size) by unsorted ones.

    >>> rows = tf.constant([[1.0], [3.0], [5.0]])
    >>> by_segments("mean", rows, tf.constant([0, 0, 2]), 3, None, None, True, False)
    <tf.Tensor: shape=(3, 1), dtype=float32, numpy=
    array([[2.],
           [0.],
           [5.]], dtype=float32)>
    """
    if present is not None:
        mask = tf.cast(present, rows.dtype)
        weights = mask if weights is None else weights * mask

    def per_bag(values, op="sum"):
        unsorted = getattr(tf.math, f"unsorted_segment_{op}")
        if xla or ordered is False:
            return unsorted(values, bag_of, bags)
        segment = getattr(tf.math, f"segment_{op}")

        def by_segments():
            # Sizes of max(bag_of) + 1 rows: the last bags may be empty.
            done = segment(values, bag_of)
            missing = tf.cast(bags, tf.int32) - tf.shape(done)[0]
            padding = [[0, missing]] + [[0, 0]] * (values.shape.rank - 1)
            return tf.pad(done, padding)

        if ordered is True:
            return by_segments()
        return tf.cond(ordered, by_segments, lambda: unsorted(values, bag_of, bags))

    ones = tf.ones_like(rows[:, 0]) if present is None else tf.cast(present, rows.dtype)
    counts = per_bag(ones)
    if combiner == "max":
        if present is not None:
            rows = tf.where(present[:, None], rows, _lowest(rows.dtype))
        # Empty bags get 0 or the dtype's lowest value here; zeros below.
        top = per_bag(rows, "max")
        top = tf.where(counts[:, None] > 0, top, tf.zeros_like(top))
        if xla:  # XLA's max drops NaN: put back the bad ids' NaN.
            nan = per_bag(tf.cast(tf.math.is_nan(rows), rows.dtype)) > 0
            top = tf.where(nan, tf.constant(float("nan"), top.dtype), top)
        return top
    if weights is None:
        total = per_bag(rows)
        if combiner == "sum":
            return total
        scale = counts if combiner == "mean" else tf.sqrt(counts)
        return tf.math.divide_no_nan(total, scale[:, None])
    total = per_bag(rows * weights[:, None])
    if combiner == "sum":
        return total
    squared = combiner == "sqrtn"
    denominator = per_bag(weights * weights if squared else weights)
    if squared:
        denominator = tf.sqrt(denominator)
    denominator = tf.where(counts > 0, denominator, tf.ones_like(denominator))
    return total / denominator[:, None]


def unweighted(combiner, totals, bag_of, bags):
    """What `by_segments` makes of unweighted bags ("sum", "mean" or
    "sqrtn") from their sums `totals` `(bags, D)`, the bag of each row being
    `bag_of`: the sums divided by each bag's size ("mean") or its square
    root ("sqrtn"); an empty bag gives zeros.

    >>> unweighted("mean", tf.constant([[4.0], [0.0]]), tf.constant([0, 0]), 2)
    <tf.Tensor: shape=(2, 1), dtype=float32, numpy=
    array([[2.],
           [0.]], dtype=float32)>
    """
    if combiner == "sum":
        return totals
    counts = tf.math.unsorted_segment_sum(tf.ones(tf.shape(bag_of), totals.dtype), bag_of, bags)
    scale = counts if combiner == "mean" else tf.sqrt(counts)
    return tf.math.divide_no_nan(totals, scale[:, None])


def _denominator(combiner, weights, axis):
    """`sum(w)` for "mean", `sqrt(sum(w ** 2))` for "sqrtn"."""
    if combiner == "mean":
        return tf.reduce_sum(weights, axis=axis)
    return tf.sqrt(tf.reduce_sum(weights * weights, axis=axis))


def _lowest(dtype):
    return tf.constant(dtype.min, dtype)
