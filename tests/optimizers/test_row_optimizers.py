"""The row-sparse optimizers in training: fit, custom loops, mixed precision,
saving, configuration."""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import indexed_slices as indexed_slices_module

import keras_embed
from keras_embed.optimizers import Adagrad, Ftrl, RowWiseAdagrad, SGD
from keras_embed.optimizers.rows import RowSparseOptimizer
from row_cases import VOCABULARY, WIDTH, apply_sparse, pooled_model, random_steps

MAKERS = {
    "Adagrad": lambda: Adagrad(0.1, initial_accumulator_value=0.2),
    "RowWiseAdagrad": lambda: RowWiseAdagrad(0.1, epsilon=1e-6),
    "Ftrl": lambda: Ftrl(0.1, l1_regularization_strength=0.001, beta=0.1),
    "SGD": lambda: SGD(0.1),
    "SGD+momentum": lambda: SGD(0.1, momentum=0.9, nesterov=True),
}
NAMES = list(MAKERS)


@pytest.fixture
def densify_warnings(monkeypatch):
    """Makes TensorFlow warn on every IndexedSlices -> dense conversion (it
    warns only above 10**8 elements)."""
    monkeypatch.setattr(indexed_slices_module, "_LARGE_SPARSE_NUM_ELEMENTS", 1)

    def densified(record):
        return [w for w in record if "Converting sparse IndexedSlices" in str(w.message)]

    return densified


def recording(optimizer):
    """Makes `optimizer` record the type of each gradient of the table (the
    variable of shape (VOCABULARY, WIDTH)) that it updates with."""
    seen = set()
    update_step = optimizer.update_step

    def recorded(gradient, variable, learning_rate):
        if tuple(variable.shape) == (VOCABULARY, WIDTH):
            seen.add(type(gradient).__name__)
        return update_step(gradient, variable, learning_rate)

    optimizer.update_step = recorded
    return seen


@pytest.mark.parametrize("name", NAMES)
def test_fit_keeps_the_gradient_sparse_and_matches_a_custom_loop(rng, name, densify_warnings):
    ids = rng.integers(1, VOCABULARY - 1, size=(8, 4)).astype("int32")  # never 0 nor the last id
    targets = rng.normal(size=(8, 1)).astype("float32")
    tables = []
    for loop in ("fit", "tape"):
        keras.utils.set_random_seed(3)
        layer = keras_embed.Embedding(VOCABULARY, WIDTH)
        optimizer = MAKERS[name]()
        seen = recording(optimizer)
        model = pooled_model(layer, optimizer)
        start = layer.embeddings.numpy()
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            if loop == "fit":
                model.fit(ids, targets, batch_size=8, epochs=3, shuffle=False, verbose=0)
            else:
                optimizer.build(model.trainable_variables)  # marks the table first

                @tf.function
                def train_step():
                    with tf.GradientTape() as tape:
                        loss = tf.reduce_mean(keras.losses.mean_squared_error(targets, model(ids)))
                    grads = tape.gradient(loss, model.trainable_variables)
                    optimizer.apply_gradients(zip(grads, model.trainable_variables))

                for _ in range(3):
                    train_step()
        assert densify_warnings(record) == []
        assert seen == {"IndexedSlices"}
        table = layer.embeddings.numpy()
        used = np.unique(ids)
        assert np.all(np.any(table[used] != start[used], axis=1))
        np.testing.assert_array_equal(table[[0, VOCABULARY - 1]], start[[0, VOCABULARY - 1]])
        tables.append(table)
    # The same operations; fit's loss reduction may round differently.
    np.testing.assert_allclose(tables[0], tables[1], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_mixed_float16_fit_then_slots_save_and_load_in_a_keras_file(
    rng, name, policy, densify_warnings, tmp_path
):
    policy("mixed_float16")
    optimizer = MAKERS[name]()
    seen = recording(optimizer)
    layer = keras_embed.Embedding(VOCABULARY, WIDTH, name="table")
    model = pooled_model(layer, optimizer)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    start = layer.embeddings.numpy()
    ids = rng.integers(1, VOCABULARY, size=(16, 4))
    targets = rng.normal(size=(16, 1))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(ids, targets, batch_size=8, epochs=1, verbose=0)
    assert densify_warnings(record) == []
    assert seen == {"IndexedSlices"}
    table = layer.embeddings.numpy()
    assert table.dtype == np.float32
    assert all(v.dtype == "float32" for v in optimizer.variables[2:])
    assert np.all(np.isfinite(table))
    np.testing.assert_array_equal(table[0], start[0])
    assert np.all(np.any(table[np.unique(ids)] != start[np.unique(ids)], axis=1))
    # Saved and loaded: the same optimizer, configuration and slots...
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    inner = loaded.optimizer.inner_optimizer
    assert type(inner) is type(optimizer)
    assert inner.get_config() == optimizer.get_config()
    shapes = [tuple(v.shape) for v in optimizer.variables]
    assert [tuple(v.shape) for v in inner.variables] == shapes
    if name != "SGD":  # plain SGD has no slot
        assert len(shapes) > 2  # the iteration count, the learning rate, slots
    for a, b in zip(inner.variables, optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # ... so training goes on from the same state.
    model.fit(ids, targets, batch_size=16, epochs=1, shuffle=False, verbose=0)
    loaded.fit(ids, targets, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_loss_scale_factor_unscales_sparse_gradients_exactly(rng, name):
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    steps = random_steps(rng, 3)
    plain, scaled = tf.Variable(start), tf.Variable(start)
    apply_sparse(MAKERS[name](), plain, steps)
    optimizer = MAKERS[name]()
    optimizer.loss_scale_factor = 1024.0
    apply_sparse(optimizer, scaled, [(ids, rows * 1024) for ids, rows in steps])
    np.testing.assert_array_equal(scaled.numpy(), plain.numpy())  # powers of two


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip_and_registered_name(name):
    optimizer = MAKERS[name]()
    serialized = keras.optimizers.serialize(optimizer)
    cls = type(optimizer)
    assert serialized["registered_name"] == f"keras_embed>{cls.__name__}"
    restored = keras.optimizers.deserialize(serialized)
    assert type(restored) is cls
    assert restored.get_config() == optimizer.get_config()
    assert getattr(keras_embed.optimizers, cls.__name__) is cls
    assert isinstance(restored, RowSparseOptimizer)


@pytest.mark.parametrize(
    "name, keras_class",
    [("Adagrad", keras.optimizers.Adagrad), ("Ftrl", keras.optimizers.Ftrl),
     ("SGD+momentum", keras.optimizers.SGD)],
)
def test_keras_arguments_and_defaults(name, keras_class):
    ours = type(MAKERS[name]())().get_config()
    theirs = keras_class().get_config()
    ours.pop("name"), theirs.pop("name")
    assert ours == theirs
