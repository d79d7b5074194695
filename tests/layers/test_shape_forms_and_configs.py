"""Every shape form stock's `Sequential.build` takes; `batch_input_shape` /
`input_shape` round-tripped through every format; `load_own_variables` on an
unbuilt layer raises as stock's does."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_embed
from keras_embed import Embedding


@pytest.mark.parametrize(
    "shape",
    [tf.TensorShape([None, 3]), (None, np.int64(3)), [None, np.int32(3)], (None, 3)],
    ids=["TensorShape", "np.int64", "np.int32-list", "tuple"],
)
def test_sequential_build_takes_every_shape_form_stock_takes(shape):
    stock = keras.Sequential([keras.layers.Embedding(10, 4)])
    stock.build(shape)
    ours = keras.Sequential([Embedding(10, 4)])
    ours.build(shape)
    assert ours.input_shape == stock.input_shape == (None, 3)
    assert ours.inputs[0].dtype == "int32"
    assert ours.output_shape == stock.output_shape == (None, 3, 4)


def _input_shape_of(layer):
    return keras.Sequential([layer]).input_shape


def _round_trips(layer):
    """The layer as each format brings it back."""
    yield "get_config", Embedding.from_config(layer.get_config())
    yield "serialize", keras.layers.deserialize(keras.layers.serialize(layer))
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    yield "json", keras.saving.deserialize_keras_object(config)


@pytest.mark.parametrize(
    "kwargs, expected",
    [({"batch_input_shape": (None, 4)}, (None, 4)),
     ({"batch_input_shape": [8, 4]}, (8, 4)),
     ({"input_shape": (6,)}, (None, 6)),
     ({"input_shape": [6]}, (None, 6)),
     ({"input_length": 5}, (None, 5)),
     ({}, (None, None))],
)
def test_the_input_shape_survives_every_layer_round_trip(kwargs, expected):
    layer = Embedding(10, 2, **kwargs)
    assert _input_shape_of(layer) == expected
    for route, copy in _round_trips(layer):
        assert _input_shape_of(copy) == expected, route


def test_input_shape_means_the_same_in_the_constructor_and_from_config():
    config = {**Embedding(10, 2).get_config(), "input_shape": [6]}
    assert _input_shape_of(Embedding.from_config(config)) == (None, 6)
    assert _input_shape_of(Embedding(10, 2, input_shape=[6])) == (None, 6)
    config = {**Embedding(10, 2).get_config(), "batch_input_shape": [None, 6]}
    assert _input_shape_of(Embedding.from_config(config)) == (None, 6)


def test_config_keys_are_stock_when_no_shape_is_given():
    assert "batch_input_shape" not in Embedding(10, 2).get_config()
    assert "batch_input_shape" not in Embedding(10, 2, input_length=3).get_config()


def test_the_input_shape_survives_keras_files_json_and_clone(tmp_path):
    model = keras.Sequential([Embedding(10, 2, batch_input_shape=(None, 4), name="e")])
    path = tmp_path / "m.keras"
    model.save(path)
    copies = {
        "keras": keras.models.load_model(path),
        "to_json": keras.models.model_from_json(model.to_json()),
        "clone_model": keras.models.clone_model(model),
        "layer clone": keras.models.clone_model(
            model, clone_function=lambda layer: layer.__class__.from_config(layer.get_config())
        ),
        "Sequential of the layer config": keras.Sequential(
            [Embedding.from_config(model.layers[0].get_config())]
        ),
    }
    for route, copy in copies.items():
        assert copy.input_shape == (None, 4), route


def test_load_own_variables_on_an_unbuilt_layer_raises_as_stock():
    store = {"0": np.zeros((10, 2), "float32")}
    with pytest.raises(ValueError) as stock_error:
        keras.layers.Embedding(10, 2, name="e").load_own_variables(store)
    with pytest.raises(ValueError) as our_error:
        Embedding(10, 2, name="e").load_own_variables(store)
    assert str(our_error.value) == str(stock_error.value)
    assert "Layer 'e' was never built" in str(our_error.value)
    Embedding(10, 2).load_own_variables({})  # Nothing saved: nothing to say.
