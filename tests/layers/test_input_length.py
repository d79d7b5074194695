"""Keras 2's `input_length` rules, as the tutorials written for it read."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.layers import Dense, Flatten

from keras_embed import Embedding


def test_sequential_add_builds_at_once_from_input_length():
    model = keras.Sequential()
    model.add(Embedding(1000, 64, input_length=10))
    assert model.built
    assert model.input_shape == (None, 10)
    assert model.output_shape == (None, 10, 64)


def test_sequential_without_input_length_takes_sequences_of_any_length():
    model = keras.Sequential([Embedding(1000, 64)])
    assert model.input_shape == (None, None)
    assert model.output_shape == (None, None, 64)
    assert model.predict(np.ones((2, 7), "int32"), verbose=0).shape == (2, 7, 64)


def test_flatten_dense_summary_before_fit():
    model = keras.Sequential(
        [Embedding(1000, 64, input_length=10), Flatten(), Dense(1, activation="sigmoid")]
    )
    assert [layer.output.shape for layer in model.layers] == [
        (None, 10, 64), (None, 640), (None, 1)
    ]
    assert [layer.count_params() for layer in model.layers] == [64_000, 0, 641]
    lines = []
    model.summary(print_fn=lambda line, **kwargs: lines.append(line))
    text = "\n".join(lines)
    for figure in ["(None, 10, 64)", "64,000", "641", "Total params: 64,641"]:
        assert figure in text


def test_sequential_input_is_integer():
    model = keras.Sequential([Embedding(10, 2, input_length=3)])
    assert model.inputs[0].dtype == "int32"


def test_ids_above_float32_precision_look_up_the_right_row():
    # float32 holds every integer only up to 2**24; 2**24 + 1 rounds to 2**24.
    vocab = 2**24 + 2
    layer = Embedding(vocab, 1, embeddings_initializer="zeros")
    model = keras.Sequential([layer])
    table = np.zeros((vocab, 1), "float32")
    table[2**24], table[2**24 + 1] = 1.0, 2.0
    layer.embeddings.assign(table)
    out = model.predict(np.array([[2**24 + 1, 2**24]]), verbose=0)
    np.testing.assert_array_equal(out[..., 0], [[2.0, 1.0]])


def test_sequential_led_by_an_input_is_left_as_given():
    model = keras.Sequential([keras.Input((5,), dtype="int64"), Embedding(10, 2)])
    assert model.inputs[0].dtype == "int64"
    assert len(model.layers) == 1


def test_stock_layers_leading_a_sequential_are_unaffected():
    model = keras.Sequential([Dense(3)])
    assert not model.built


def test_keras2_input_shape_arguments():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = keras.Sequential([Embedding(10, 2, input_shape=(6,))])
    assert model.input_shape == (None, 6)
    model = keras.Sequential([Embedding(10, 2, batch_input_shape=(None, 4))])
    assert model.input_shape == (None, 4)


def test_tuple_input_length_for_rank_3_ids():
    model = keras.Sequential([Embedding(30, 2, input_length=(3, 4)), Flatten(), Dense(1)])
    assert model.input_shape == (None, 3, 4)
    assert model.layers[0].output.shape == (None, 3, 4, 2)
    assert model.layers[1].output.shape == (None, 24)


def test_functional_input_of_unknown_length_takes_input_length():
    ids = keras.Input(shape=(None,), dtype="int32")
    x = Embedding(100, 8, input_length=12)(ids)
    assert x.shape == (None, 12, 8)
    model = keras.Model(ids, Dense(1)(Flatten()(x)))
    assert model.output_shape == (None, 1)
    assert model.predict(np.ones((2, 12), "int32"), verbose=0).shape == (2, 1)


def test_tuple_with_none_entries_fills_what_it_knows():
    layer = Embedding(5, 3, input_length=(None, 4))
    assert layer.compute_output_shape((None, 7, None)) == (None, 7, 4, 3)


def test_input_length_is_kept_and_configured_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer = Embedding(10, 2, input_length=5)
    assert layer.input_length == 5
    assert layer.get_config()["input_length"] == 5
    assert Embedding(10, 2, input_length=[2, None]).input_length == (2, None)


def test_disagreeing_length_is_an_error_when_building():
    ids = keras.Input(shape=(11,), dtype="int32")
    with pytest.raises(
        ValueError,
        match=r"Embedding layer 'words' has input_length=10, but received an input "
        r"of shape \(None, 11\): axis 1 has length 11, expected 10\.",
    ):
        Embedding(20, 2, input_length=10, name="words")(ids)


def test_disagreeing_length_is_an_error_when_called():
    layer = Embedding(20, 2, input_length=10, name="words")
    with pytest.raises(ValueError, match=r"input_length=10.*axis 1 has length 9, expected 10"):
        layer(np.ones((2, 9), "int32"))
    model = keras.Sequential([Embedding(20, 2, input_length=10)])
    with pytest.raises(ValueError, match=r"input_length=10.*axis 1 has length 4, expected 10"):
        model.predict(np.ones((2, 4), "int32"), verbose=0)


def test_disagreeing_length_is_an_error_in_a_graph_of_unknown_length():
    layer = Embedding(20, 2, input_length=10)
    lookup = tf.function(layer, input_signature=[tf.TensorSpec((None, None), tf.int32)])
    assert lookup(tf.ones((1, 10), tf.int32)).shape == (1, 10, 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[1,9\].*\[\?,10\]"):
        lookup(tf.ones((1, 9), tf.int32))


def test_rank_that_disagrees_with_input_length_is_an_error():
    with pytest.raises(
        ValueError,
        match=r"Embedding layer 'e' has input_length=\(3, 4\), which describes inputs of "
        r"rank 3 \(batch, 3, 4\), but received an input of shape \(2, 3\) \(rank 2\)\.",
    ):
        Embedding(10, 2, input_length=(3, 4), name="e")(np.ones((2, 3), "int32"))
    with pytest.raises(ValueError, match=r"input_length=5, which describes inputs of rank 2"):
        Embedding(10, 2, input_length=5)(np.ones((2, 5, 1), "int32"))


@pytest.mark.parametrize("value", [0, -1, 2.5, "10", True, (), (3, 0), (3, "a"), [None, -2]])
def test_invalid_input_length_is_rejected(value):
    with pytest.raises(ValueError, match=r"`input_length` must be a positive integer.*Received: input_length="):
        Embedding(10, 2, input_length=value)


def test_explicit_build_replaces_the_automatic_input():
    # Keras 3 lets `build` give a Sequential its input shape; the automatic
    # (None, None) input of ours gives way to it, still integer.
    model = keras.Sequential([Embedding(10, 4)])
    model.build((None, 3))
    assert model.input_shape == (None, 3) and model.inputs[0].dtype == "int32"
    assert model.output_shape == (None, 3, 4)


def test_explicit_build_that_disagrees_with_input_length_is_an_error():
    model = keras.Sequential([Embedding(10, 4, input_length=5)])
    with pytest.raises(ValueError, match=r"input_length=5, but received an input of shape \(None, 3\): axis 1 has length 3, expected 5"):
        model.build((None, 3))
