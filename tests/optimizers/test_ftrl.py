"""Ftrl against keras.optimizers.Ftrl and by hand, and where the two differ."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_embed.optimizers import Ftrl
from row_cases import VOCABULARY, WIDTH, apply_dense, apply_sparse, random_steps, with_repeats

OPTIONS = [
    {},
    {"l1_regularization_strength": 0.05, "l2_regularization_strength": 0.1},
    {"beta": 0.5, "learning_rate_power": -0.3, "initial_accumulator_value": 0.5},
    {"learning_rate_power": 0.0},
]


def _name(options):
    return ",".join(options) or "defaults"


@pytest.mark.parametrize(
    "options",
    OPTIONS + [
        {"l2_shrinkage_regularization_strength": 0.1},
        {"weight_decay": 0.05},
        {"clipnorm": 0.5},
        {"learning_rate": keras.optimizers.schedules.ExponentialDecay(0.1, 2, 0.5)},
    ],
    ids=_name,
)
def test_dense_gradients_give_keras_ftrls_numbers_exactly(rng, options):
    options = {"learning_rate": 0.1, **options}
    start = [rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=3).astype("float32")]
    ours = [tf.Variable(v) for v in start]
    theirs = [tf.Variable(v) for v in start]
    mine, keras_ftrl = Ftrl(**options), keras.optimizers.Ftrl(**options)
    for _ in range(4):
        grads = [rng.normal(size=v.shape).astype("float32") for v in start]
        mine.apply_gradients(zip([tf.constant(g) for g in grads], ours))
        keras_ftrl.apply_gradients(zip([tf.constant(g) for g in grads], theirs))
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(mine.variables, keras_ftrl.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("options", OPTIONS, ids=_name)
def test_sparse_gradients_give_the_dense_updates_numbers_once_every_row_was_updated(rng, options):
    # Keras's dense FTRL sets every row to its closed form on its first step
    # (a row with no gradient yet becomes 0). After that, a step with no
    # gradient leaves a row unchanged (same `linear`, same `quadratic`), so
    # once the first step has touched every row the sparse update gives the
    # dense update's numbers: the same float32 operations on the same summed
    # rows, repeated ids included. Tolerance: `Pow` (Eigen) rounds an element
    # differently by 1 ulp depending on whether it falls in a SIMD packet or
    # in the scalar tail, which depends on the tensor's length (the table's or
    # the rows'); over 7 steps that stays within a few float32 ulps.
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    first = (np.arange(VOCABULARY, dtype="int32"),
             rng.normal(size=(VOCABULARY, WIDTH)).astype("float32"))
    steps = [first] + with_repeats(random_steps(rng, 6))
    sparse_table, dense_table = tf.Variable(start), tf.Variable(start)
    sparse, reference = Ftrl(0.1, **options), keras.optimizers.Ftrl(0.1, **options)
    apply_sparse(sparse, sparse_table, steps)
    apply_dense(reference, dense_table, steps)
    np.testing.assert_allclose(sparse_table.numpy(), dense_table.numpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(sparse.variables, reference.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_where_it_differs_from_the_dense_update(rng):
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    steps = random_steps(rng, 3, always=(1,), never=(0,))
    # 1. A row never looked up: dense FTRL zeroes it on the first step; ours
    #    keeps its initial value.
    sparse_table, dense_table = tf.Variable(start), tf.Variable(start)
    apply_sparse(Ftrl(0.1), sparse_table, steps)
    apply_dense(keras.optimizers.Ftrl(0.1), dense_table, steps)
    np.testing.assert_array_equal(dense_table.numpy()[0], np.zeros(WIDTH))
    np.testing.assert_array_equal(sparse_table.numpy()[0], start[0])
    # Row 1, looked up on every step, agrees (to `Pow`'s ulp, see above).
    np.testing.assert_allclose(sparse_table.numpy()[1], dense_table.numpy()[1], rtol=1e-5, atol=1e-6)
    # 2. With shrinkage, dense FTRL moves a row absent from a step; ours not.
    options = {"l2_shrinkage_regularization_strength": 0.5}
    everything = (np.arange(VOCABULARY, dtype="int32"), np.ones((VOCABULARY, WIDTH), "float32"))
    only_row_1 = (np.array([1], "int32"), np.ones((1, WIDTH), "float32"))
    sparse_table, dense_table = tf.Variable(start), tf.Variable(start)
    apply_sparse(Ftrl(0.1, **options), sparse_table, [everything, only_row_1])
    apply_dense(keras.optimizers.Ftrl(0.1, **options), dense_table, [everything, only_row_1])
    after_first = tf.Variable(start)
    apply_sparse(Ftrl(0.1, **options), after_first, [everything])
    np.testing.assert_array_equal(sparse_table.numpy()[2], after_first.numpy()[2])
    assert not np.allclose(dense_table.numpy()[2], after_first.numpy()[2], rtol=1e-3)
    np.testing.assert_allclose(sparse_table.numpy()[1], dense_table.numpy()[1], rtol=1e-5, atol=1e-6)


def test_first_step_by_hand():
    # w = 0.5, g = 2 (id 0 twice, 1 each), lr = 0.1, p = -0.5, acc0 = 0.1,
    # l1 = 0.05, l2 = 0.1: new_acc = 4.1,
    # linear = 2 - (sqrt(4.1) - sqrt(0.1)) / 0.1 * 0.5,
    # quadratic = sqrt(4.1) / 0.1 + 0.2, w = (clip(linear) - linear) / quadratic.
    table = tf.Variable([[0.5], [3.0]])
    gradient = tf.IndexedSlices(tf.constant([[1.0], [1.0]]), tf.constant([0, 0]), tf.constant([2, 1]))
    optimizer = Ftrl(0.1, l1_regularization_strength=0.05, l2_regularization_strength=0.1)
    optimizer.apply_gradients([(gradient, table)])
    linear = 2 - (np.sqrt(4.1) - np.sqrt(0.1)) / 0.1 * 0.5
    quadratic = np.sqrt(4.1) / 0.1 + 0.2
    expected = (np.clip(linear, -0.05, 0.05) - linear) / quadratic
    # float32 against float64 by hand: the weight (0.32) and the linear slot
    # (-6.5) go through sqrt, a difference and a division (rtol=1e-5); row 1's
    # linear slot, not looked up, stays exactly 0 (atol=0).
    np.testing.assert_allclose(table.numpy()[0, 0], expected, rtol=1e-5, atol=0)
    accumulator, linear_slot = optimizer.variables[2:]
    np.testing.assert_allclose(accumulator.numpy()[:, 0], [4.1, 0.1], rtol=1e-6, atol=0)
    np.testing.assert_allclose(linear_slot.numpy()[:, 0], [linear, 0.0], rtol=1e-5, atol=0)
    assert table.numpy()[1, 0] == 3.0


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"learning_rate_power": 0.5},
         "Ftrl: `learning_rate_power` must be <= 0. Received: learning_rate_power=0.5."),
        ({"initial_accumulator_value": -1.0},
         "Ftrl: `initial_accumulator_value` must be >= 0. Received: initial_accumulator_value=-1.0."),
        ({"l1_regularization_strength": -0.1},
         "Ftrl: `l1_regularization_strength` must be >= 0. Received: l1_regularization_strength=-0.1."),
        ({"l2_shrinkage_regularization_strength": -2},
         "Ftrl: `l2_shrinkage_regularization_strength` must be >= 0. "
         "Received: l2_shrinkage_regularization_strength=-2."),
    ],
)
def test_bad_arguments_are_refused_with_clear_messages(arguments, message):
    with pytest.raises(ValueError) as error:
        Ftrl(**arguments)
    assert str(error.value) == message
