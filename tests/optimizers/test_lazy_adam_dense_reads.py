"""LazyAdam warns once when it writes rows of a table that its layer reads
densely (stock `keras.layers.Embedding`): each such read then copies the
whole table, and `keras_embed.swap` gives the model a layer that reads rows."""

import warnings

import keras
import numpy as np

import keras_embed
from keras_embed.optimizers import LazyAdam


def _model(embedding):
    model = keras.Sequential([
        keras.Input(shape=(4,), dtype="int32"),
        embedding,
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1),
    ], name="model")
    model.compile(LazyAdam(0.01), "mse")
    return model


def _fit_warnings(model, times=2):
    ids, y = np.random.default_rng(0).integers(50, size=(8, 4)), np.zeros((8, 1))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(times):
            model.fit(ids, y, verbose=0)
    return [str(w.message) for w in record if "reads it densely" in str(w.message)]


def test_lazy_adam_warns_once_for_the_stock_layer():
    messages = _fit_warnings(_model(keras.layers.Embedding(50, 3, name="stock_words")))
    assert messages == [
        "LazyAdam updates rows of 'model/stock_words/embeddings', but its layer reads it "
        "densely: after row updates TensorFlow copies the whole table on each such "
        "read, so a step costs as much as the table is large, not the batch. "
        "keras_embed.Embedding reads only the rows it looks up: "
        "`model = keras_embed.swap(model)` switches the model's "
        "keras.layers.Embedding layers to it."
    ]


def test_lazy_adam_does_not_warn_for_our_layer():
    assert _fit_warnings(_model(keras_embed.Embedding(50, 3, name="words"))) == []
