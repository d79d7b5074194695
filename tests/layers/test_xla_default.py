"""Keras's `jit_compile="auto"` does not pick XLA for a model holding our
layer, so the id check raises before any update, on every device."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_embed


def _classifier(embedding, **compile_args):
    model = keras.Sequential(
        [embedding, keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)]
    )
    model.compile("sgd", "mse", **compile_args)
    return model


@pytest.fixture
def pretend_gpu(monkeypatch):
    """Keras resolves "auto" to XLA only where a non-CPU device is listed."""
    stock = tf.config.list_physical_devices

    def list_physical_devices(device_type=None):
        if device_type in (None, "GPU"):
            gpu = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")
            return [*stock(device_type), gpu] if device_type is None else [gpu]
        return stock(device_type)

    monkeypatch.setattr(tf.config, "list_physical_devices", list_physical_devices)


def test_auto_resolves_to_xla_for_stock_layers_where_a_gpu_is_listed(pretend_gpu):
    # The set-up works: the same model with stock's layer gets XLA.
    model = _classifier(keras.layers.Embedding(10, 3))
    assert model.jit_compile is True


def test_auto_does_not_compile_a_model_with_our_layer(pretend_gpu):
    model = _classifier(keras_embed.Embedding(10, 3, name="words"))
    assert model.jit_compile is False


@pytest.mark.parametrize("method", ["fit", "predict", "evaluate"])
def test_auto_raises_the_id_error_and_leaves_weights_unchanged(pretend_gpu, method):
    model = _classifier(keras_embed.Embedding(10, 3, name="words"))
    ids, y = np.array([[1, 2], [3, 11]]), np.zeros((2, 1))
    before = [w.numpy() for w in model.weights]
    args = {"predict": (ids,), "fit": (ids, y), "evaluate": (ids, y)}[method]
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        getattr(model, method)(*args, verbose=0)
    assert str(error.value).splitlines()[0] == (
        "Embedding layer 'words' received id 11, which is outside the valid "
        "range [0, input_dim) = [0, 10)."
    )
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, new.numpy())


def test_explicit_jit_compile_true_is_kept_without_a_warning(pretend_gpu):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = _classifier(keras_embed.Embedding(10, 3), jit_compile=True)
    assert model.jit_compile is True
    out = model.predict(np.array([[1, 2], [3, 11]]), verbose=0)
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()  # NaN rows under XLA


def test_auto_does_not_compile_a_model_with_our_bag_layer(pretend_gpu):
    model = keras.Sequential([keras_embed.EmbeddingBag(10, 3), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    assert model.jit_compile is False
