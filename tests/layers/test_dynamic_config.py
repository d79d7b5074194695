"""Every bad input to `DynamicEmbedding` gets an error naming the layer, the
value received and what is valid."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_embed import DynamicEmbedding

PREFIX = "DynamicEmbedding layer 'users': "


@pytest.mark.parametrize("arguments, message", [
    (dict(capacity=0), "`capacity` must be an integer >= 1. Received: capacity=0 (of type int)."),
    (dict(capacity=2.5), "`capacity` must be an integer >= 1. Received: capacity=2.5 (of type float)."),
    (dict(output_dim=-1), "`output_dim` must be an integer >= 1. Received: output_dim=-1 (of type int)."),
    (dict(min_count=0), "`min_count` must be an integer >= 1. Received: min_count=0 (of type int)."),
    (dict(ttl_steps=0), "`ttl_steps` must be an integer >= 1. Received: ttl_steps=0 (of type int)."),
    (dict(eviction="fifo"), "`eviction` must be 'lru' or 'lfu'. Received: eviction='fifo'."),
    (dict(oov="random"), "`oov` must be one of 'learned', 'zeros', 'buckets'. Received: oov='random'."),
    (dict(num_oov_buckets=3), "`num_oov_buckets` goes with oov='buckets'. Received: num_oov_buckets=3 with oov='learned'."),
    (dict(oov="buckets"), "`num_oov_buckets` must be an integer >= 1. Received: num_oov_buckets=None (of type NoneType)."),
    (dict(key_dtype="float32"), "`key_dtype` must be 'int64' or 'string'. Received: key_dtype='float32'."),
    (dict(combiner="median"), "`combiner` must be None or one of 'sum', 'mean', 'sqrtn', 'max'. Received: combiner='median'."),
    (dict(mask_key="pad"), "`mask_key` must be a key of key_dtype='int64'. Received: mask_key='pad' (of type str)."),
    (dict(capacity=2**31), "`capacity` + OOV rows must be below 2**31. Received: capacity=2147483648 with 1 OOV rows."),
    (dict(embeddings_initializer="orthogonal"), "`embeddings_initializer` must draw each row on its own"),
])
def test_bad_arguments(arguments, message):
    settings = {**dict(capacity=10, output_dim=4, name="users"), **arguments}
    with pytest.raises(ValueError) as caught:
        DynamicEmbedding(**settings)
    assert str(caught.value).startswith(PREFIX + message)


def test_a_bad_config_from_a_file_names_the_field():
    config = DynamicEmbedding(10, 4, name="users").get_config()
    config["eviction"] = "mru"
    with pytest.raises(ValueError) as caught:
        DynamicEmbedding.from_config(config)
    assert str(caught.value) == PREFIX + "`eviction` must be 'lru' or 'lfu'. Received: eviction='mru'."


@pytest.mark.parametrize("key_dtype, keys, message", [
    ("int64", np.array([[1.5, 2.0]]), "its keys must be integers. Received: keys of dtype float64."),
    ("int64", tf.constant([["a"]]), "its keys must be integers. Received: keys of dtype string."),
    ("string", np.array([[3, 4]]), "its keys must be strings. Received: keys of dtype int64."),
])
def test_keys_of_the_wrong_dtype(key_dtype, keys, message):
    layer = DynamicEmbedding(10, 4, key_dtype=key_dtype, name="users")
    for training in (False, True):
        with pytest.raises(TypeError) as caught:
            layer(keys, training=training)
        assert str(caught.value) == f"{PREFIX[:-2]} was built for key_dtype={key_dtype!r}: {message}"


def test_keys_of_the_wrong_dtype_in_a_model():
    inputs = keras.Input((2,), dtype="float32")
    with pytest.raises(TypeError) as caught:
        keras.Model(inputs, DynamicEmbedding(10, 4, name="users")(inputs)).predict(np.ones((1, 2)), verbose=0)
    assert "DynamicEmbedding layer 'users' was built for key_dtype='int64': its keys must be integers. " \
        "Received: keys of dtype float32." in str(caught.value)


def test_weights_need_a_weighing_combiner():
    layer = DynamicEmbedding(10, 4, combiner="max", name="users")
    with pytest.raises(ValueError) as caught:
        layer(np.array([[1, 2]]), np.array([[1.0, 2.0]]))
    assert str(caught.value) == PREFIX + (
        "per-key weights need a combiner 'sum', 'mean' or 'sqrtn'. Received: weights with combiner='max'."
    )


def test_weights_of_another_shape():
    layer = DynamicEmbedding(10, 4, combiner="sum", name="users")
    with pytest.raises(ValueError) as caught:
        layer(np.array([[1, 2]]), np.array([[1.0, 2.0, 3.0]]))
    assert str(caught.value) == PREFIX + (
        "per-key weights must have the keys' shape. Received: weights of shape (1, 3) for keys of shape (1, 2)."
    )


def test_a_single_key_is_not_a_bag():
    layer = DynamicEmbedding(10, 4, combiner="sum", name="users")
    with pytest.raises(ValueError) as caught:
        layer(np.array(3))
    assert str(caught.value).startswith(PREFIX[:-2] + " with a combiner received a single key (shape ())")


def test_mirrored_strategy_is_refused_in_one_line():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        layer = DynamicEmbedding(10, 4, name="users")
        with pytest.raises(ValueError) as caught:
            layer.build()
    assert str(caught.value) == (
        "DynamicEmbedding layer 'users' cannot be built under MirroredStrategy: its key map "
        "lives on one device. Build and train the model without a distribution strategy (or "
        "under tf.distribute.OneDeviceStrategy)."
    )


def test_one_device_strategy_trains():
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        inputs = keras.Input((3,), dtype="int64")
        model = keras.Model(inputs, DynamicEmbedding(4, 2, combiner="sum", name="users")(inputs))
        model.compile("sgd", "mse")
    model.fit(np.array([[1, 2, 3]]), np.ones((1, 2)), verbose=0)
    assert model.get_layer("users").vocabulary()["key"].tolist() == [1, 2, 3]
