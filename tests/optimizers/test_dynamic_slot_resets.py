"""Every optimizer of ours resets the slots of a row `DynamicEmbedding`
gives to a new key, in the same step: the new key's slots are those of a
key trained once from nothing, never the old key's."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_embed import DynamicEmbedding
from keras_embed import optimizers

OPTIMIZERS = {
    "LazyAdam": lambda: optimizers.LazyAdam(0.1),
    "LazyAdam-amsgrad": lambda: optimizers.LazyAdam(0.1, amsgrad=True),
    "Adagrad": lambda: optimizers.Adagrad(0.1, initial_accumulator_value=0.5),
    "RowWiseAdagrad": lambda: optimizers.RowWiseAdagrad(0.1, initial_accumulator_value=0.5),
    "Ftrl": lambda: optimizers.Ftrl(0.1, initial_accumulator_value=0.2, l1_regularization_strength=0.01),
    "SGD-momentum": lambda: optimizers.SGD(0.1, momentum=0.9),
}
UPSTREAM = np.array([[1.0, -2.0, 0.5]], np.float32)  # d(loss)/d(vector)


def slots_after(steps, make_optimizer):
    """Trains a one-row table on each key of `steps` in turn; returns the
    row-0 values of every slot of the table after the last step."""
    layer = DynamicEmbedding(1, 3, embeddings_initializer=keras.initializers.Constant(0.3), seed=0)
    optimizer = make_optimizer()

    @tf.function
    def step(keys):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(keys, training=True) * UPSTREAM)
        optimizer.apply([tape.gradient(loss, layer.embeddings)], [layer.embeddings])

    layer.build()
    optimizer.build([layer.embeddings])
    for key in steps:
        step(tf.constant([key], tf.int64))
    slots = [v for v in optimizer.variables if tuple(v.shape[:1]) == (2,)]
    assert slots, "the optimizer has no slot for the table"
    return [np.asarray(slot)[0] for slot in slots], layer.embeddings.numpy()[0]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_new_key_starts_from_fresh_slots(name):
    # Key 7 trains three steps; key 8 then takes its row.
    taken_over, row = slots_after([7, 7, 7, 8], OPTIMIZERS[name])
    fresh, _ = slots_after([8], OPTIMIZERS[name])
    for got, expected in zip(taken_over, fresh):
        np.testing.assert_array_equal(got, expected)
    # And the old key's slots were not fresh: the test can tell.
    kept, _ = slots_after([7, 7, 7, 7], OPTIMIZERS[name])
    assert any(not np.array_equal(a, b) for a, b in zip(kept, fresh))
    assert np.all(np.isfinite(row))


def test_a_stock_optimizer_trains_the_layer_but_keeps_the_old_slots():
    taken_over, _ = slots_after([7, 7, 7, 8], lambda: keras.optimizers.Adam(0.1))
    fresh, _ = slots_after([8], lambda: keras.optimizers.Adam(0.1))
    assert not np.array_equal(taken_over[0], fresh[0])  # documented in recommenders.md


def test_under_gradient_accumulation_the_row_is_reset_at_its_next_update():
    def momentum_after(key_batches):
        keys = keras.Input((1,), dtype="int64")
        layer = DynamicEmbedding(1, 2, combiner="sum", embeddings_initializer=keras.initializers.Constant(0.3))
        model = keras.Model(keys, layer(keys))
        model.compile(optimizers.LazyAdam(0.1, gradient_accumulation_steps=2), "mse")
        for batch in key_batches:
            model.fit(np.array(batch), np.ones((2, 2)), batch_size=1, shuffle=False, verbose=0)
        return [np.asarray(v)[0] for v in model.optimizer.variables if tuple(v.shape) == (2, 2)]

    # Key 2 takes key 1's row at the first of two accumulated steps.
    for got, expected in zip(momentum_after([[[1], [1]], [[2], [2]]]), momentum_after([[[2], [2]]])):
        np.testing.assert_array_equal(got, expected)


def test_one_table_for_two_inputs_is_one_step():
    layer = DynamicEmbedding(2, 2, seed=0)

    @tf.function
    def step(a, b):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(a, training=True)) + 10 * tf.reduce_sum(layer(b, training=True))
        return tape.gradient(loss, layer.embeddings)

    gradient = step(tf.constant([[1, 2]], tf.int64), tf.constant([[3]], tf.int64))
    # Key 3 finds no row: both are key 1's and key 2's in this step, so it
    # takes the OOV row 2, and the clock advanced once.
    assert layer.lookup([1, 2, 3]).tolist() == [0, 1, -1]
    assert int(layer._step.numpy()) == 1
    assert sorted(zip(gradient.indices.numpy().tolist(), gradient.values.numpy()[:, 0].tolist())) == [
        (0, 1.0), (1, 1.0), (2, 10.0)]
