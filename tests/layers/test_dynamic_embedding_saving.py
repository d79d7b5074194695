"""`DynamicEmbedding` saved and loaded: resuming is bit for bit, with new
keys admitted after the reload; exported models serve with the map frozen."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_embed import DynamicEmbedding
from keras_embed import optimizers

OPTIMIZERS = {
    "LazyAdam": lambda: optimizers.LazyAdam(0.01),
    "Adagrad": lambda: optimizers.Adagrad(0.1),
    "RowWiseAdagrad": lambda: optimizers.RowWiseAdagrad(0.1),
    "Ftrl": lambda: optimizers.Ftrl(0.1, l1_regularization_strength=0.01),
    "SGD-momentum": lambda: optimizers.SGD(0.1, momentum=0.9),
    "keras.Adam": lambda: keras.optimizers.Adam(0.01),
}


def recommender(optimizer, **settings):
    keys = keras.Input((6,), dtype="int64", name="items")
    layer = DynamicEmbedding(output_dim=4, combiner="mean", seed=5, name="items_table", **settings)
    model = keras.Model(keys, keras.layers.Dense(1, kernel_initializer="ones")(layer(keys)))
    model.compile(optimizer, "mse")
    return model


def batches(seed, count, key_space=60):
    rng = np.random.default_rng(seed)
    keys = rng.integers(-(2**50), 2**50, size=key_space)
    ranks = (rng.zipf(1.3, size=(count, 8, 6)) - 1) % key_space
    return keys[ranks], rng.normal(size=(count, 8, 1)).astype("float32")


def train(model, data):
    for keys, labels in zip(*data):
        model.train_on_batch(keys, labels)


def state(model):
    optimizer_state = [np.asarray(v) for v in model.optimizer.variables]
    return [np.asarray(w) for w in model.weights] + optimizer_state


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_resuming_from_a_keras_file_is_bit_for_bit(name, tmp_path):
    settings = dict(capacity=12, eviction="lfu", ttl_steps=5, min_count=2, sketch_width=4096)
    first, second = batches(0, 6), batches(1, 6)
    never_stopped = recommender(OPTIMIZERS[name](), **settings)
    train(never_stopped, first)
    path = os.path.join(tmp_path, "model.keras")
    never_stopped.save(path)
    train(never_stopped, second)

    resumed = keras.models.load_model(path)
    admitted_before = resumed.get_layer("items_table").vocabulary()["key"]
    train(resumed, second)
    admitted_after = resumed.get_layer("items_table").vocabulary()["key"]
    assert set(admitted_after) - set(admitted_before), "no key was admitted after the reload"
    for expected, got in zip(state(never_stopped), state(resumed)):
        np.testing.assert_array_equal(got, expected)


def test_weights_files_round_trip_the_map(tmp_path):
    model = recommender(optimizers.LazyAdam(), capacity=10)
    train(model, batches(2, 4))
    path = os.path.join(tmp_path, "model.weights.h5")
    model.save_weights(path)
    again = recommender(optimizers.LazyAdam(), capacity=10)
    again.load_weights(path)
    ours, theirs = (m.get_layer("items_table") for m in (model, again))
    for field in ("key", "row", "count", "last_seen"):
        np.testing.assert_array_equal(theirs.vocabulary()[field], ours.vocabulary()[field])
    keys = batches(3, 1)[0][0]
    np.testing.assert_array_equal(again.predict(keys, verbose=0), model.predict(keys, verbose=0))


def test_string_keys_round_trip(tmp_path):
    keys = keras.Input((3,), dtype="string")
    layer = DynamicEmbedding(4, 2, key_dtype="string", combiner="sum", seed=0, name="words")
    model = keras.Model(keys, layer(keys))
    words = tf.constant([["cat", "dog", "eel"], ["cat", "fox", "gnu"]])
    layer(words, training=True)
    path = os.path.join(tmp_path, "words.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(words, verbose=0), model.predict(words, verbose=0))
    np.testing.assert_array_equal(
        loaded.get_layer("words").lookup(np.array(["fox", "cat", "ant"])), layer.lookup(np.array(["fox", "cat", "ant"]))
    )


def test_a_file_of_another_capacity_or_key_dtype_is_refused(tmp_path):
    model = recommender(optimizers.LazyAdam(), capacity=10)
    train(model, batches(2, 1))
    path = os.path.join(tmp_path, "model.weights.h5")
    model.save_weights(path)
    with pytest.raises(ValueError) as caught:
        recommender(optimizers.LazyAdam(), capacity=11).load_weights(path)
    # Keras lists the layers it could not load, each with its error.
    assert (
        "DynamicEmbedding layer 'items_table': the file's `embeddings` has shape (11, 4), but "
        "this layer's (capacity=11, output_dim=4, 1 OOV rows) is (12, 4). Load it into a layer "
        "of the file's capacity and sizes."
    ) in str(caught.value)

    strings = keras.Input((6,), dtype="string")
    layer = DynamicEmbedding(10, 4, key_dtype="string", combiner="mean", name="items_table")
    other = keras.Model(strings, keras.layers.Dense(1)(layer(strings)))
    with pytest.raises(ValueError) as caught:
        other.load_weights(path)
    assert "DynamicEmbedding layer 'items_table' has key_dtype='string', but the file was " \
        "saved by a layer with key_dtype='int64'." in str(caught.value)


def test_clone_to_json_and_from_config_build_an_empty_map():
    model = recommender(optimizers.LazyAdam(), capacity=10, eviction="lfu", ttl_steps=3)
    train(model, batches(2, 2))
    for copy in (keras.models.clone_model(model), keras.models.model_from_json(model.to_json())):
        layer = copy.get_layer("items_table")
        assert layer.get_config() == model.get_layer("items_table").get_config()
        assert layer.vocabulary()["key"].size == 0


def test_an_export_serves_lookups_with_the_map_frozen(tmp_path):
    model = recommender(optimizers.LazyAdam(), capacity=10)
    train(model, batches(2, 3))
    layer = model.get_layer("items_table")
    before = [v.numpy().copy() for v in layer.weights]
    path = os.path.join(tmp_path, "served")
    model.export(path, verbose=False)
    keys = batches(4, 1)[0][0]  # held keys and new ones
    expected = model.predict(keys, verbose=0)
    served = tf.saved_model.load(path)
    np.testing.assert_array_equal(served.serve(tf.constant(keys)).numpy(), expected)
    served.serve(tf.constant(keys + 1))  # new keys: not admitted
    np.testing.assert_array_equal(served.serve(tf.constant(keys)).numpy(), expected)
    wrapped = keras.layers.TFSMLayer(path, call_endpoint="serve")
    np.testing.assert_array_equal(np.asarray(wrapped(keys)), expected)
    for was, variable in zip(before, layer.weights):
        np.testing.assert_array_equal(variable.numpy(), was)


def test_keras_legacy_h5_and_set_weights_bring_the_map_with_the_variables(tmp_path):
    model = recommender(optimizers.LazyAdam(), capacity=10)
    train(model, batches(2, 3))
    layer = model.get_layer("items_table")
    keys = batches(4, 1)[0][0]
    path = os.path.join(tmp_path, "model.h5")
    model.save(path)  # Keras's legacy format assigns variable by variable.
    loaded = keras.models.load_model(path, compile=False).get_layer("items_table")
    np.testing.assert_array_equal(loaded.lookup(held_keys(layer)), layer.lookup(held_keys(layer)))

    other = recommender(optimizers.LazyAdam(), capacity=10)
    other.set_weights(model.get_weights())
    np.testing.assert_array_equal(other.predict(keys, verbose=0), model.predict(keys, verbose=0))
    np.testing.assert_array_equal(other.get_layer("items_table").vocabulary()["key"], layer.vocabulary()["key"])


def held_keys(layer):
    return layer.vocabulary()["key"]
