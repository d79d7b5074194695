"""Our optimizers skip a step whose gradient is not finite, as
`keras.optimizers.LossScaleOptimizer` does: under `jit_compile=True` a bad id
gets NaN rows, and one step would otherwise make every weight NaN."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_embed
from keras_embed.optimizers import LazyAdam


def _classifier(optimizer, jit_compile):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input(shape=(2,), dtype="int32"),
        keras_embed.Embedding(10, 3, name="words"),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer, "mse", jit_compile=jit_compile)
    return model


BAD = np.array([[1, 2], [3, 11]])  # 11 >= input_dim: NaN rows under XLA.
GOOD = np.array([[1, 2], [3, 4]])
Y = np.ones((2, 1))


def test_stock_adam_under_xla_makes_every_weight_nan():
    """What a stock optimizer does with the NaN: the model is lost."""
    model = _classifier(keras.optimizers.Adam(0.1), jit_compile=True)
    model.fit(BAD, Y, verbose=0)
    dense = model.layers[-1]
    assert np.isnan(dense.kernel.numpy()).all() and np.isnan(dense.bias.numpy()).all()
    assert np.isnan(model.predict(GOOD, verbose=0)).all()


@pytest.mark.parametrize("make", [
    lambda: LazyAdam(0.1),
    lambda: keras_embed.optimizers.Adagrad(0.1),
    lambda: keras_embed.optimizers.RowWiseAdagrad(0.1),
    lambda: keras_embed.optimizers.Ftrl(0.1),
    lambda: keras_embed.optimizers.SGD(0.1, momentum=0.9),
], ids=["LazyAdam", "Adagrad", "RowWiseAdagrad", "Ftrl", "SGD"])
def test_our_optimizers_under_xla_skip_the_step_and_keep_the_weights(make):
    model = _classifier(make(), jit_compile=True)
    assert model.jit_compile is True
    model.fit(GOOD, Y, verbose=0)  # Builds the optimizer; one real step.
    before = [w.numpy() for w in model.weights]
    history = model.fit(BAD, Y, verbose=0)
    assert np.isnan(history.history["loss"][0])  # The loss still shows it.
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, new.numpy())
    assert int(model.optimizer.iterations) == 1  # The skipped step is not counted.
    model.fit(GOOD, Y, verbose=0)  # Training goes on from there.
    assert int(model.optimizer.iterations) == 2
    assert np.isfinite(model.predict(GOOD, verbose=0)).all()
    assert not np.array_equal(before[-1], model.weights[-1].numpy())


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_guard_applies_finite_gradients_and_skips_others(mode):
    from keras_embed.optimizers.finite_steps import all_finite

    variable = keras.Variable(np.ones((4, 2), "float32"))
    optimizer = LazyAdam(0.5)
    optimizer.build([variable])

    def step(values):
        optimizer.apply([tf.IndexedSlices(values, tf.constant([1, 3]), tf.constant([4, 2]))],
                        [variable])

    if mode != "eager":
        step = tf.function(step, jit_compile=mode == "xla")
    step(tf.constant([[np.inf, 0.0], [1.0, 1.0]]))
    np.testing.assert_array_equal(variable.numpy(), np.ones((4, 2)))
    assert int(optimizer.iterations) == 0
    step(tf.constant([[1.0, 1.0], [1.0, 1.0]]))
    # Adam's first step moves each looked-up value by -lr (g / (|g| + eps')).
    # By hand, without eps' (3e-6 relative) and in every mode's own kernels:
    # rtol=1e-5; the values are 1 and 0.5, none near 0 (atol=0).
    expected = np.ones((4, 2), "float32")
    expected[[1, 3]] -= 0.5
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=0)
    assert int(optimizer.iterations) == 1
    assert bool(all_finite([tf.constant([1.0]), None, tf.IndexedSlices(
        tf.constant([[2.0]]), tf.constant([0]))]))
    assert not bool(all_finite([tf.constant([1.0, np.nan])]))
