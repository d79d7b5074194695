"""swap and unswap keep every preprocessing layer working: the copy predicts
what the original predicts, and so does the copy after a .keras round trip."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_embed


@keras.saving.register_keras_serializable(package="keras_embed_tests")
def lower_no_digits(text):
    return tf.strings.regex_replace(tf.strings.lower(text), "[0-9]", "")


TEXTS = ["The cat sat 2 times", "a DOG ran", "the dog sat"]
WORDS = [["cat", "dog"], ["sat", "zebra"]]


def _text_model(embedding, **vectorizer_args):
    vectorize = keras.layers.TextVectorization(
        max_tokens=20, output_sequence_length=5, **vectorizer_args)
    vectorize.adapt(TEXTS)
    inputs = keras.Input(shape=(), dtype="string")
    x = embedding(20, 3, name="words")(vectorize(inputs))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling1D()(x)), tf.constant(TEXTS)


def _lookup_model(embedding, lookup, data):
    lookup.adapt(data)
    inputs = keras.Input(shape=(2,), dtype=data.dtype)
    x = embedding(lookup.vocabulary_size(), 3, name="words")(lookup(inputs))
    return keras.Model(inputs, x), data


def _hashing_model(embedding):
    inputs = keras.Input(shape=(2,), dtype="string")
    x = embedding(8, 3, name="words")(keras.layers.Hashing(8, salt=3)(inputs))
    return keras.Model(inputs, x), tf.constant(WORDS)


def _numeric_model(embedding, numeric):
    data = np.array([[0.5, 3.0], [2.0, 8.0], [1.0, 1.0]], "float32")
    numeric.adapt(data)
    inputs = keras.Input(shape=(2,))
    ids = keras.layers.Discretization(bin_boundaries=[1.0, 2.5])(inputs) \
        if isinstance(numeric, keras.layers.Normalization) else numeric(inputs)
    x = embedding(4, 3, name="words")(ids)
    if isinstance(numeric, keras.layers.Normalization):
        x = keras.layers.Add()([x, keras.layers.Reshape((2, 1))(numeric(inputs))])
    return keras.Model(inputs, x), data


MODELS = {
    "TextVectorization": lambda e: _text_model(e),
    "TextVectorization custom standardize": lambda e: _text_model(e, standardize=lower_no_digits),
    "TextVectorization ngrams": lambda e: _text_model(e, ngrams=2),
    "StringLookup": lambda e: _lookup_model(e, keras.layers.StringLookup(), tf.constant(WORDS)),
    "IntegerLookup": lambda e: _lookup_model(
        e, keras.layers.IntegerLookup(), tf.constant([[7, 42], [42, 9]], "int64")),
    "Hashing": _hashing_model,
    "Normalization": lambda e: _numeric_model(e, keras.layers.Normalization()),
    "Discretization": lambda e: _numeric_model(
        e, keras.layers.Discretization(num_bins=4, epsilon=0.01)),
}


@pytest.mark.parametrize("name", MODELS)
def test_swap_and_unswap_keep_preprocessing_working(name, tmp_path):
    model, data = MODELS[name](keras.layers.Embedding)
    expected = model.predict(data, verbose=0)
    swapped = keras_embed.swap(model)
    assert type(swapped.get_layer("words")) is keras_embed.Embedding
    np.testing.assert_array_equal(swapped.predict(data, verbose=0), expected)
    path = tmp_path / "swapped.keras"
    swapped.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(data, verbose=0), expected)
    back = keras_embed.unswap(swapped)
    assert type(back.get_layer("words")) is keras.layers.Embedding
    np.testing.assert_array_equal(back.predict(data, verbose=0), expected)
    # The original is unchanged and still works.
    np.testing.assert_array_equal(model.predict(data, verbose=0), expected)
