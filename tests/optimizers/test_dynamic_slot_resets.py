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
