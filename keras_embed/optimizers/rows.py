"""Row-sparse pieces shared by our optimizers: a gradient of rows
(`tf.IndexedSlices`) summed per id, mapped, and the rows of a variable read
without reading the whole variable.

Example:

>>> import tensorflow as tf
>>> from keras_embed.optimizers.rows import summed_duplicates
>>> slices = tf.IndexedSlices(tf.constant([[1.0], [2.0]]), tf.constant([4, 4]))
>>> summed_duplicates(slices).values.numpy().tolist()
[[3.0]]
"""

import keras
import tensorflow as tf


def summed_duplicates(slices):
    """Returns `slices` with one row per id: the sum of that id's rows.

    Example:

    >>> import tensorflow as tf
    >>> slices = tf.IndexedSlices(tf.constant([[1.0], [2.0], [4.0]]),
    ...                           tf.constant([3, 0, 3]))
    >>> summed = summed_duplicates(slices)
    >>> summed.indices.numpy().tolist(), summed.values.numpy().tolist()
    ([3, 0], [[5.0], [2.0]])

    Args:
        slices: a `tf.IndexedSlices` of shape `(n, *row_shape)`.

    Returns:
        A `tf.IndexedSlices` whose ids are `slices.indices` without repeats,
        in order of first appearance.
    """
    ids, positions = tf.unique(slices.indices)
    values = tf.math.unsorted_segment_sum(
        slices.values, positions, tf.shape(ids)[0]
    )
    return tf.IndexedSlices(values, ids, slices.dense_shape)


def map_values(function, gradient):
    """`function(gradient)` for a tensor, or applied to a slices' values."""
    if gradient is None:
        return None
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(
            function(gradient.values), gradient.indices, gradient.dense_shape
        )
    return function(gradient)


def gather_rows(variable, rows):
    """Rows of a variable, read without reading the whole variable."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return tf.gather(variable, rows)
