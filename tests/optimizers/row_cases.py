"""Helpers shared by the tests of the row-sparse optimizers (not a test file)."""

import keras
import numpy as np
import tensorflow as tf

VOCABULARY, WIDTH = 12, 3


def random_steps(rng, count, ids_per_step=5, always=(), never=(), vocabulary=VOCABULARY):
    """Sparse gradients: ids (with repeats) and rows, for `count` steps."""
    allowed = [i for i in range(vocabulary) if i not in never]
    steps = []
    for _ in range(count):
        ids = np.concatenate([
            np.asarray(always, "int32"),
            rng.choice(allowed, size=ids_per_step).astype("int32"),
        ])
        steps.append((ids, rng.normal(size=(len(ids), WIDTH)).astype("float32")))
    return steps


def with_repeats(steps):
    """`steps` where each id of each step comes twice (distinct rows)."""
    return [
        (np.concatenate([ids, ids]), np.concatenate([rows, rows[::-1] * 0.5]))
        for ids, rows in steps
    ]


def dense(ids, rows, shape=(VOCABULARY, WIDTH)):
    """The dense gradient of a step: the rows summed per id, in float32,
    in the order they come (as TensorFlow densifies a `tf.IndexedSlices`)."""
    gradient = np.zeros(shape, "float32")
    for row_id, row in zip(ids, rows):
        gradient[row_id] += row
    return gradient


def apply_sparse(optimizer, table, steps):
    """Applies each step to `table` as a `tf.IndexedSlices`."""
    for ids, rows in steps:
        gradient = tf.IndexedSlices(
            tf.constant(rows), tf.constant(ids), tf.constant(table.shape)
        )
        optimizer.apply_gradients([(gradient, table)])


def apply_dense(optimizer, table, steps):
    """Applies each step to `table` as its dense gradient."""
    for ids, rows in steps:
        gradient = tf.constant(dense(ids, rows, tuple(table.shape)))
        optimizer.apply_gradients([(gradient, table)])


def pooled_model(layer, optimizer, **compile_kwargs):
    model = keras.Sequential([
        keras.Input((4,), dtype="int32"),
        layer,
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1, kernel_initializer="ones"),
    ])
    model.compile(optimizer, "mse", **compile_kwargs)
    return model
