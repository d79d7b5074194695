"""Every saved format round-trips, with no `custom_objects`, and files written
by stock Keras 3 and by tf-keras (Keras 2) load into our layer."""

import json
import os
import pickle
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_embed
from conftest import FIXTURES


def _text_model():
    """A small model using every setting the layer has."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras_embed.Embedding(
                40, 6,
                embeddings_initializer=keras.initializers.RandomNormal(stddev=0.3, seed=4),
                embeddings_regularizer=keras.regularizers.L2(0.001),
                embeddings_constraint=keras.constraints.MaxNorm(3.0),
                mask_zero=True,
                input_length=5,
                name="words",
            ),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2),
        ]
    )
    model.compile(optimizer="adam", loss=keras.losses.MeanSquaredError())
    return model


IDS = np.array([[3, 9, 1, 0, 0], [39, 2, 7, 5, 1]], "int32")


def test_keras_file_loads_in_a_fresh_process_without_custom_objects(tmp_path):
    model = _text_model()
    path = str(tmp_path / "model.keras")
    model.save(path)
    np.save(tmp_path / "expected.npy", model.predict(IDS, verbose=0))
    script = textwrap.dedent(
        f"""
        import json, keras, numpy as np
        import keras_embed
        model = keras.models.load_model({path!r})
        layer = model.get_layer("words")
        assert type(layer) is keras_embed.Embedding, type(layer)
        ids = np.array({IDS.tolist()}, "int32")
        np.testing.assert_array_equal(model.predict(ids, verbose=0), np.load({str(tmp_path / "expected.npy")!r}))
        print(json.dumps({{"config": layer.get_config(), "input": [model.input_shape, model.inputs[0].dtype]}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    original = json.loads(json.dumps(model.get_layer("words").get_config()))
    assert loaded["config"] == original
    assert loaded["config"]["mask_zero"] is True
    assert loaded["config"]["input_length"] == 5
    assert loaded["config"]["embeddings_constraint"]["class_name"] == "MaxNorm"
    assert loaded["input"] == [[None, 5], "int32"]


def test_keras_file_names_our_registered_class(tmp_path):
    path = str(tmp_path / "model.keras")
    _text_model().save(path)
    import zipfile

    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    (layer,) = [l for l in config["config"]["layers"] if l["class_name"] == "Embedding"]
    assert layer["registered_name"] == "keras_embed>Embedding"


@pytest.mark.parametrize("policy_name", ["mixed_float16", "mixed_bfloat16"])
def test_keras_file_keeps_the_dtype_policy(tmp_path, policy_name):
    layer = keras_embed.Embedding(40, 2, dtype=policy_name)
    model = keras.Sequential([layer])
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras").layers[0]
    assert loaded.dtype_policy.name == policy_name
    assert loaded.embeddings.dtype == "float32"
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(IDS[:, :3])), keras.ops.convert_to_numpy(layer(IDS[:, :3]))
    )


def test_legacy_h5_round_trip(tmp_path):
    model = _text_model()
    model.save(tmp_path / "model.h5")
    loaded = keras.models.load_model(tmp_path / "model.h5")
    assert type(loaded.get_layer("words")) is keras_embed.Embedding
    assert loaded.get_layer("words").input_length == 5
    np.testing.assert_array_equal(loaded.predict(IDS, verbose=0), model.predict(IDS, verbose=0))


@pytest.mark.parametrize("direction", ["stock to ours", "ours to stock"])
def test_weights_files_interchange_with_stock(tmp_path, rng, direction):
    def build(layer_class):
        return keras.Sequential([keras.Input((None,), dtype="int32"), layer_class(40, 4), keras.layers.Dense(1)])

    source_class, target_class = (
        (keras.layers.Embedding, keras_embed.Embedding)
        if direction == "stock to ours"
        else (keras_embed.Embedding, keras.layers.Embedding)
    )
    source, target = build(source_class), build(target_class)
    source.layers[0].embeddings.assign(rng.normal(size=(40, 4)).astype("float32"))
    source.save_weights(tmp_path / "m.weights.h5")
    target.load_weights(tmp_path / "m.weights.h5")
    np.testing.assert_array_equal(target.layers[0].embeddings.numpy(), source.layers[0].embeddings.numpy())
    np.testing.assert_array_equal(target.predict(IDS, verbose=0), source.predict(IDS, verbose=0))


def test_export_serves_integer_ids(tmp_path):
    model = _text_model()
    model.export(str(tmp_path / "served"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "served"))
    (spec,) = served.serve.input_signature
    assert spec.dtype == tf.int32 and spec.shape.as_list() == [None, 5]
    np.testing.assert_array_equal(served.serve(tf.constant(IDS)), model.predict(IDS, verbose=0))
    layer = keras.layers.TFSMLayer(str(tmp_path / "served"), call_endpoint="serve")
    np.testing.assert_array_equal(layer(tf.constant(IDS)), model.predict(IDS, verbose=0))


def test_clone_model_json_and_pickle_round_trip():
    model = _text_model()
    expected = model.predict(IDS, verbose=0)

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    from_json = keras.models.model_from_json(model.to_json())
    from_json.set_weights(model.get_weights())
    unpickled = pickle.loads(pickle.dumps(model))

    for copy in (clone, from_json, unpickled):
        layer = copy.get_layer("words")
        assert type(layer) is keras_embed.Embedding
        assert (layer.input_length, layer.mask_zero) == (5, True)
        np.testing.assert_array_equal(copy.predict(IDS, verbose=0), expected)


# Files written by tf-keras 2.21 (Keras 2): see tests/fixtures/README.md.

KERAS2_FILES = [
    ("keras2_sequential_input_length", 6),
    ("keras2_sequential_mask_zero_lstm", 7),
    ("keras2_functional_tuple_length", (3, 4)),
    ("keras2_functional_regularized", None),
]


class _Keras2LSTM(keras.layers.LSTM):
    """Keras 3's own LSTM rejects the `time_major` key Keras 2 wrote in every
    LSTM config; that is stock Keras 3's gap, not the embedding's."""

    def __init__(self, *args, time_major=False, **kwargs):
        super().__init__(*args, **kwargs)


@pytest.mark.cross_kernel
@pytest.mark.parametrize("name, input_length", KERAS2_FILES)
def test_keras2_h5_loads_into_our_layer(name, input_length):
    data = np.load(os.path.join(FIXTURES, f"{name}.npz"))
    model = keras.models.load_model(
        os.path.join(FIXTURES, f"{name}.h5"),
        custom_objects={"Embedding": keras_embed.Embedding, "LSTM": _Keras2LSTM},
        compile=False,
    )
    (layer,) = [l for l in model.layers if isinstance(l, keras_embed.Embedding)]
    assert layer.input_length == input_length
    np.testing.assert_array_equal(layer.embeddings.numpy(), data["embedding_weights"])
    # The embedding's own output is bit-identical to Keras 2's (a lookup).
    # The whole model's is not: Keras 3's Dense and LSTM sum in another order
    # than tf-keras's, and on this CPU's kernels, not those of the machine
    # that stored `expected` (1 ulp apart here, 5.96e-8 at 0.63). Outputs
    # are at most 0.96 and the terms inside them (weights about 0.4,
    # activations up to 1) about as large: rtol=1e-5 is about 80 ulps of each
    # output, atol=1e-6 8 to 16 ulps of those terms, for outputs near 0.
    np.testing.assert_array_equal(layer(data["ids"]).numpy(), data["embedded"])
    np.testing.assert_allclose(model.predict(data["ids"], verbose=0), data["expected"],
                               rtol=1e-5, atol=1e-6)


def test_keras2_h5_keeps_regularizer_constraint_and_name():
    model = keras.models.load_model(
        os.path.join(FIXTURES, "keras2_functional_regularized.h5"),
        custom_objects={"Embedding": keras_embed.Embedding},
        compile=False,
    )
    layer = model.get_layer("word_embedding")
    assert isinstance(layer.embeddings_regularizer, keras.regularizers.L2)
    assert isinstance(layer.embeddings_constraint, keras.constraints.MaxNorm)
    assert layer.embeddings_constraint.max_value == 2.0


@pytest.mark.cross_kernel
def test_keras2_h5_resaves_as_keras_file(tmp_path):
    data = np.load(os.path.join(FIXTURES, "keras2_sequential_input_length.npz"))
    model = keras.models.load_model(
        os.path.join(FIXTURES, "keras2_sequential_input_length.h5"),
        custom_objects={"Embedding": keras_embed.Embedding},
        compile=False,
    )
    model.save(tmp_path / "migrated.keras")
    migrated = keras.models.load_model(tmp_path / "migrated.keras")
    assert migrated.layers[0].input_length == 6
    # Saved and loaded in this process: the same kernels, bit for bit.
    np.testing.assert_array_equal(migrated.predict(data["ids"], verbose=0), model.predict(data["ids"], verbose=0))
    # tf-keras's, from another machine: as in test_keras2_h5_loads_into_our_layer.
    np.testing.assert_allclose(migrated.predict(data["ids"], verbose=0), data["expected"],
                               rtol=1e-5, atol=1e-6)
