"""Adagrad and RowWiseAdagrad against keras.optimizers.Adagrad and by hand."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_embed.optimizers import Adagrad
from keras_embed.optimizers import RowWiseAdagrad
from row_cases import VOCABULARY, WIDTH, apply_dense, apply_sparse, random_steps, with_repeats


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"initial_accumulator_value": 0.5, "epsilon": 1e-3},
        {"weight_decay": 0.05},
        {"learning_rate": keras.optimizers.schedules.ExponentialDecay(0.1, 2, 0.5)},
        {"clipnorm": 0.5},
        {"global_clipnorm": 0.5},
        {"clipvalue": 0.1},
    ],
    ids=lambda options: ",".join(options) or "defaults",
)
def test_dense_gradients_give_keras_adagrads_numbers_exactly(rng, options):
    # Keras's operations in Keras's order: every bit agrees (no tolerance).
    options = {"learning_rate": 0.1, **options}
    start = [rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=3).astype("float32")]
    ours = [tf.Variable(v) for v in start]
    theirs = [tf.Variable(v) for v in start]
    mine, keras_adagrad = Adagrad(**options), keras.optimizers.Adagrad(**options)
    for _ in range(4):
        grads = [rng.normal(size=v.shape).astype("float32") for v in start]
        mine.apply_gradients(zip([tf.constant(g) for g in grads], ours))
        keras_adagrad.apply_gradients(zip([tf.constant(g) for g in grads], theirs))
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(
        mine.variables[2].numpy(), keras_adagrad.variables[2].numpy()
    )


@pytest.mark.parametrize("options", [{}, {"initial_accumulator_value": 0.01, "epsilon": 1e-4}])
def test_sparse_gradients_give_the_dense_updates_numbers(rng, options):
    # A row with no gradient does not move under the dense update, so the
    # sparse update is the dense one. The same float32 operations on the same
    # summed rows: bit for bit (tolerance 0), repeated ids included.
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    steps = with_repeats(random_steps(rng, 6, never=(0,)))
    sparse_table, dense_table = tf.Variable(start), tf.Variable(start)
    sparse, reference = Adagrad(0.1, **options), keras.optimizers.Adagrad(0.1, **options)
    apply_sparse(sparse, sparse_table, steps)
    apply_dense(reference, dense_table, steps)
    np.testing.assert_array_equal(sparse_table.numpy(), dense_table.numpy())
    np.testing.assert_array_equal(sparse.variables[2].numpy(), reference.variables[2].numpy())
    # Row 0 had no gradient: it and its accumulator did not change.
    np.testing.assert_array_equal(sparse_table.numpy()[0], start[0])
    assert not np.array_equal(sparse_table.numpy(), start)


def test_keras_own_sparse_path_squares_each_repeat_and_we_do_not():
    # Keras's Adagrad given a slices with id 2 twice adds 1**2 + 1**2 to the
    # accumulator; the dense gradient (and ours) adds (1 + 1)**2.
    gradient = tf.IndexedSlices(tf.ones((2, 1)), tf.constant([2, 2]), tf.constant([4, 1]))
    theirs, ours = tf.Variable(tf.zeros((4, 1))), tf.Variable(tf.zeros((4, 1)))
    keras_adagrad = keras.optimizers.Adagrad(0.1, initial_accumulator_value=0.0)
    mine = Adagrad(0.1, initial_accumulator_value=0.0)
    keras_adagrad.apply_gradients([(gradient, theirs)])
    mine.apply_gradients([(gradient, ours)])
    assert keras_adagrad.variables[2].numpy()[2, 0] == 2.0
    assert mine.variables[2].numpy()[2, 0] == 4.0


def test_first_step_by_hand():
    # w = [1, 2]; id 0 twice with [0.5, -1]: g = [1, -2]; lr 0.1, acc0 0.1.
    # acc = [1.1, 4.1]; w = [1 - 0.1 / sqrt(1.1 + 1e-7), 2 + 0.2 / sqrt(4.1 + 1e-7)].
    table = tf.Variable([[1.0, 2.0], [5.0, 5.0]])
    gradient = tf.IndexedSlices(tf.constant([[0.5, -1.0], [0.5, -1.0]]),
                                tf.constant([0, 0]), tf.constant([2, 2]))
    optimizer = Adagrad(0.1)
    optimizer.apply_gradients([(gradient, table)])
    expected = [1 - 0.1 / np.sqrt(1.1 + 1e-7), 2 + 0.2 / np.sqrt(4.1 + 1e-7)]
    # float32 against float64 by hand: a few roundings of values near 1 to 4,
    # none near 0 (atol=0).
    np.testing.assert_allclose(table.numpy()[0], expected, rtol=1e-6, atol=0)
    np.testing.assert_allclose(optimizer.variables[2].numpy()[0], [1.1, 4.1], rtol=1e-6, atol=0)
    np.testing.assert_array_equal(table.numpy()[1], [5.0, 5.0])


# Row-wise Adagrad.


def reference_rowwise(table, steps, learning_rate, initial=0.0, epsilon=1e-8):
    """FBGEMM's row-wise Adagrad by hand in float64; returns table and slot."""
    table = np.array(table, "float64")
    accumulator = np.full(len(table), initial, "float64")
    for ids, rows in steps:
        summed = {}
        for row_id, row in zip(ids.tolist(), np.asarray(rows, "float64")):
            summed[row_id] = summed.get(row_id, 0.0) + row
        for row_id, grad in summed.items():
            accumulator[row_id] += np.mean(grad**2)
            table[row_id] -= learning_rate * grad / (np.sqrt(accumulator[row_id]) + epsilon)
    return table, accumulator


def test_rowwise_first_step_by_hand():
    # g = [3, 4]: mean(g**2) = 12.5; w -= 0.1 * g / (sqrt(12.5) + 1e-8).
    table = tf.Variable([[1.0, 1.0], [0.0, 0.0]])
    gradient = tf.IndexedSlices(tf.constant([[3.0, 4.0]]), tf.constant([0]), tf.constant([2, 2]))
    optimizer = RowWiseAdagrad(0.1)
    optimizer.apply_gradients([(gradient, table)])
    root = np.sqrt(12.5) + 1e-8
    # float32 against float64 by hand: a few roundings of values near 0.9.
    np.testing.assert_allclose(table.numpy()[0], [1 - 0.3 / root, 1 - 0.4 / root], rtol=1e-6, atol=0)
    np.testing.assert_array_equal(optimizer.variables[2].numpy(), [12.5, 0.0])


@pytest.mark.parametrize("options", [{}, {"initial_accumulator_value": 0.1, "epsilon": 1e-3}])
def test_rowwise_matches_the_formula_over_several_steps(rng, options):
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    steps = with_repeats(random_steps(rng, 6, never=(0,)))
    table = tf.Variable(start)
    optimizer = RowWiseAdagrad(0.1, **options)
    apply_sparse(optimizer, table, steps)
    expected, accumulator = reference_rowwise(
        start, steps, 0.1, options.get("initial_accumulator_value", 0.0),
        options.get("epsilon", 1e-8),
    )
    # float32 against float64 over 6 steps: a few float32 roundings per step.
    np.testing.assert_allclose(table.numpy(), expected, rtol=1e-5, atol=1e-6)
    # The accumulators: sums of row means of squares, 0 (or the initial value)
    # exactly for the rows never looked up, so no atol.
    np.testing.assert_allclose(optimizer.variables[2].numpy(), accumulator, rtol=1e-5, atol=0)
    np.testing.assert_array_equal(table.numpy()[0], start[0])


def test_rowwise_dense_and_sparse_gradients_agree(rng):
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    steps = random_steps(rng, 5)
    sparse_table, dense_table = tf.Variable(start), tf.Variable(start)
    sparse, dense = RowWiseAdagrad(0.1), RowWiseAdagrad(0.1)
    apply_sparse(sparse, sparse_table, steps)
    apply_dense(dense, dense_table, steps)
    # The dense path reduces over the table, the sparse over the rows: the
    # same sums in the same order, bit for bit.
    np.testing.assert_array_equal(sparse_table.numpy(), dense_table.numpy())
    np.testing.assert_array_equal(sparse.variables[2].numpy(), dense.variables[2].numpy())


def test_rowwise_holds_one_float_per_row_and_per_bias_value(rng):
    table, bias = tf.Variable(tf.zeros((1000, 64))), tf.Variable(tf.zeros(5))
    optimizer = RowWiseAdagrad(0.1)
    optimizer.build([table, bias])
    accumulators = optimizer.variables[2:]
    assert [tuple(v.shape) for v in accumulators] == [(1000,), (5,)]
    assert sum(int(np.prod(v.shape)) * 4 for v in accumulators) == 4 * 1000 + 4 * 5
    # A 1-D variable: one row per value, so the update is element-wise:
    # Adagrad's with epsilon outside the root.
    gradient = rng.normal(size=5).astype("float32")
    optimizer.apply_gradients([(tf.constant(gradient), bias)])
    # float32 against float64 by hand: every value is about -0.1 * sign(g).
    np.testing.assert_allclose(
        bias.numpy(), -0.1 * gradient / (np.abs(gradient) + 1e-8), rtol=1e-6, atol=0
    )


@pytest.mark.parametrize(
    "cls, arguments, message",
    [
        (Adagrad, {"initial_accumulator_value": -0.1},
         "Adagrad: `initial_accumulator_value` must be >= 0. Received: initial_accumulator_value=-0.1."),
        (Adagrad, {"epsilon": -1.0}, "Adagrad: `epsilon` must be >= 0. Received: epsilon=-1.0."),
        (RowWiseAdagrad, {"initial_accumulator_value": -1},
         "RowWiseAdagrad: `initial_accumulator_value` must be >= 0. Received: initial_accumulator_value=-1."),
    ],
)
def test_bad_arguments_are_refused_with_clear_messages(cls, arguments, message):
    with pytest.raises(ValueError) as error:
        cls(**arguments)
    assert str(error.value) == message
