"""Keras 2 SavedModel directories, read by keras_embed.load_keras2_model.

The fixtures are written by real tf-keras (tests/fixtures/keras2_saved_model/
make_fixtures.py); each .npz beside them holds what tf-keras predicted and,
for the trained ones, its optimizer's state.
"""

import os
import shutil
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_embed
from conftest import FIXTURES
from keras_embed.saving.keras2 import checkpoint as keras2_checkpoint, directory as keras2_directory, optimizer as keras2_optimizer
from keras_embed.saving.keras2 import saved_model as keras2_saved_model

HERE = os.path.join(FIXTURES, "keras2_saved_model")
NAMES = ("imdb", "recommender", "shared", "custom")


class ScaleLayer(keras.layers.Layer):
    """The fixtures' custom layer, in Keras 3."""

    def __init__(self, initial=1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial = initial

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale", shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.initial),
        )

    def call(self, inputs):
        return inputs * self.scale

    def get_config(self):
        return {**super().get_config(), "initial": self.initial}


CUSTOM = {"ScaleLayer": ScaleLayer}
_CACHE = {}


def fixture(name):
    data = np.load(os.path.join(HERE, name + ".npz"))
    inputs = [data[f"x{i}"] for i in range(4) if f"x{i}" in data.files]
    return os.path.join(HERE, name), data, inputs


def loaded(name, to="keras_embed"):
    """The model, loaded once per test session (the fixtures are read only)."""
    if (name, to) not in _CACHE:
        _CACHE[name, to] = keras_embed.load_keras2_model(
            os.path.join(HERE, name), custom_objects=CUSTOM, to=to)
    return _CACHE[name, to]


def embeddings(model):
    return [layer for layer in model.layers
            if isinstance(layer, (keras.layers.Embedding, keras_embed.Embedding))]


# Whole-model predictions against tf-keras's, which another machine stored:
# Keras 3's Dense, LSTM, GRU and Conv1D on this CPU's kernels (oneDNN or
# Eigen, picked per CPU) are a few float32 ulps of the outputs' scale from
# them (2.4e-7 at 1.59, the largest output, in `shared`). So rtol=1e-5 (about
# 80 ulps of each value) and atol=1e-6 (about 8 ulps of the largest output),
# which covers the outputs near 0 (one of 3.9e-4 in `shared`, 3.9e-5 off
# relatively on one CPU). The embedding's own output is compared exactly.


@pytest.mark.cross_kernel
@pytest.mark.parametrize("name", NAMES)
def test_predictions_are_keras2s(name):
    path, data, inputs = fixture(name)
    model = loaded(name)
    predicted = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
    np.testing.assert_allclose(predicted, data["expected"], rtol=1e-5, atol=1e-6)  # see above
    layer = embeddings(model)[0]
    assert type(layer) is keras_embed.Embedding
    # The Embedding's own output, bit for bit.
    np.testing.assert_array_equal(np.asarray(layer(inputs[0])), data["embedded"])


@pytest.mark.cross_kernel
@pytest.mark.parametrize("name", ["imdb", "shared"])
def test_to_stock_gives_stock_embeddings_and_the_same_predictions(name):
    path, data, inputs = fixture(name)
    with pytest.warns(keras_embed.saving.migration.MigrationWarning) if name == "imdb" else (
            _nothing()):
        model = loaded(name, to="stock")
    assert {type(layer) for layer in embeddings(model)} == {keras.layers.Embedding}
    predicted = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
    np.testing.assert_allclose(predicted, data["expected"], rtol=1e-5, atol=1e-6)  # see above


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False


def test_an_embeddings_keras2_batch_input_shape_is_kept_as_written():
    # Keras 2 wrote `batch_input_shape` (batch dim included) into each layer's
    # config; Keras 3's legacy reader renames it `input_shape`, keeping the
    # batch dim, which our rule for `input_shape` (no batch dim) must not read.
    model = loaded("recommender")
    for name in ("user_embedding", "item_embedding"):
        assert model.get_layer(name).get_config()["batch_input_shape"] == (None, None)
    # And where it shapes the model: a Keras 2 Sequential led by
    # Embedding(input_shape=(6,)), through the .h5 path's same adaptations.
    from keras_embed.saving.keras2 import configs as keras2_configs

    layer_config = {"class_name": "Embedding", "config": {
        "name": "words", "input_dim": 50, "output_dim": 4, "batch_input_shape": [None, 6]}}
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": [
        layer_config, {"class_name": "Flatten", "config": {"name": "f"}}]}}
    from keras.src.legacy.saving import saving_utils  # Keras 3's reader of Keras 2 configs

    sequential = saving_utils.model_from_config(config, custom_objects=keras2_configs.custom_objects())
    assert sequential.input_shape == (None, 6) and sequential.output_shape == (None, 24)
    assert sequential.layers[0].get_config()["batch_input_shape"] == (None, 6)


def test_imdb_keeps_input_length_mask_and_the_adam_state():
    path, data, inputs = fixture("imdb")
    model = loaded("imdb")
    layer = embeddings(model)[0]
    assert (layer.input_dim, layer.output_dim) == (60, 8)
    assert layer.input_length == 10 and layer.mask_zero is True
    assert model.loss == "binary_crossentropy"
    optimizer = model.optimizer
    assert type(optimizer) is keras.optimizers.Adam
    config = optimizer.get_config()
    assert config["learning_rate"] == pytest.approx(0.01)
    assert (config["beta_1"], config["beta_2"], config["epsilon"]) == (0.9, 0.999, 1e-7)
    assert int(optimizer.iterations.numpy()) == int(data["iterations"]) == 1
    _check_slots(model, data, {"_momentums": optimizer._momentums,
                               "_velocities": optimizer._velocities})


def test_recommender_keeps_sgd_momentum_and_its_state():
    path, data, inputs = fixture("recommender")
    model = loaded("recommender")
    assert [layer.name for layer in embeddings(model)] == [
        "user_embedding", "item_embedding"]
    assert model.loss == "mse"
    config = model.optimizer.get_config()
    assert type(model.optimizer) is keras.optimizers.SGD
    assert config["learning_rate"] == pytest.approx(0.05)
    assert config["momentum"] == pytest.approx(0.9)
    assert int(model.optimizer.iterations.numpy()) == 1
    _check_slots(model, data, {"momentums": model.optimizer.momentums})


def test_custom_layer_in_a_nested_model_regularizer_constraint_and_rmsprop_state():
    path, data, inputs = fixture("custom")
    model = loaded("custom")
    layer = model.get_layer("regularized")
    config = layer.get_config()
    assert config["embeddings_regularizer"]["config"]["l2"] == pytest.approx(0.01)
    assert config["embeddings_constraint"]["class_name"] == "MaxNorm"
    assert config["embeddings_constraint"]["config"]["max_value"] == 1.5
    head = model.get_layer("head")  # A nested Sequential.
    assert type(head) is keras.Sequential
    assert type(head.get_layer("scale")) is ScaleLayer
    assert head.get_layer("scale").initial == 2.0
    assert type(model.optimizer) is keras.optimizers.RMSprop
    _check_slots(model, data, {"_velocities": model.optimizer._velocities})
    # The regularizer counts in the loss, as it did in Keras 2.
    assert len(model.losses) == 1


def test_shared_embedding_bidirectional_gru_and_conv1d():
    path, data, inputs = fixture("shared")
    model = loaded("shared")
    assert len(embeddings(model)) == 1  # One layer, used twice.
    gru = model.get_layer("bi_gru")
    assert len(gru.weights) == 6
    assert not model.compiled  # Saved without a training configuration.
    # Its weights are the checkpoint's, in the Keras 2 wrapper's order.
    prefix = os.path.join(path, "variables", "variables")
    reader = tf.train.load_checkpoint(prefix)
    (kernel,) = [k for k, shape in tf.train.list_variables(prefix)
                 if shape == [3, 6, 4]]
    np.testing.assert_array_equal(model.get_layer("conv").kernel.numpy(),
                                  reader.get_tensor(kernel))


def _check_slots(model, data, slots):
    """Each slot is the Keras 2 optimizer's for the same variable (named as
    Keras 2 named it)."""
    optimizer = model.optimizer
    checked = 0
    for name, values in slots.items():
        for variable in model.trainable_variables:
            # Keras 3's path has the models' names first ("custom/head/...").
            parts = variable.path.split("/")
            keys = [f"slot/{name}/{'/'.join(parts[i:])}:0" for i in range(len(parts))]
            (key,) = [key for key in keys if key in data.files][:1]
            expected = data[key]
            slot = values[optimizer._get_variable_index(variable)]
            np.testing.assert_array_equal(slot.numpy(), expected)
            assert np.any(expected != 0)
            checked += 1
    assert checked == sum(1 for key in data.files if key.startswith("slot/"))


def test_training_resumes_after_loading(tmp_path):
    path, data, inputs = fixture("imdb")
    model = keras_embed.load_keras2_model(path)
    before = model.get_layer("embedding").embeddings.numpy().copy()
    model.train_on_batch(inputs[0], np.ones((6, 1), "float32"))
    assert int(model.optimizer.iterations.numpy()) == 2
    assert np.any(model.get_layer("embedding").embeddings.numpy() != before)
    model.save(tmp_path / "imdb.keras")
    again = keras.models.load_model(tmp_path / "imdb.keras")
    assert int(again.optimizer.iterations.numpy()) == 2


def test_a_missing_custom_class_is_one_clear_error():
    with pytest.raises(ValueError, match=r"uses 'ScaleLayer', a class that is "
                       r"not part of Keras.*custom_objects=\{'ScaleLayer'"):
        keras_embed.load_keras2_model(os.path.join(HERE, "custom"))


def test_to_is_checked():
    with pytest.raises(ValueError, match="to must be 'keras_embed' or 'stock', not 'tf'"):
        keras_embed.load_keras2_model(os.path.join(HERE, "imdb"), to="tf")


def test_load_model_names_the_function_and_the_command():
    path = os.path.join(HERE, "imdb")
    with pytest.raises(ValueError) as caught:
        keras.models.load_model(path)
    message = str(caught.value)
    assert message.startswith("File format not supported")  # Keras's own.
    assert f"keras_embed.load_keras2_model('{path}')" in message
    assert f"keras-embed convert {path} model.keras" in message


def test_keras_metadata_is_read_as_tensorflow_reads_it():
    saved_metadata_pb2 = pytest.importorskip(
        "tensorflow.python.keras.protobuf.saved_metadata_pb2")
    with open(os.path.join(HERE, "shared", "keras_metadata.pb"), "rb") as file:
        data = file.read()
    message = saved_metadata_pb2.SavedMetadata()
    message.ParseFromString(data)
    ours = keras2_directory.parse_saved_metadata(data)
    theirs = [{"node_id": n.node_id, "node_path": n.node_path,
               "identifier": n.identifier, "metadata": n.metadata}
              for n in message.nodes]
    assert ours == theirs and len(ours) > 5
    with pytest.raises(ValueError, match="runs past the end"):
        keras2_directory.parse_saved_metadata(data[:-7])


def test_the_optimizer_order_worked_out_without_traces_is_the_traced_one():
    # recommender was saved with its traces, so its checkpoint lists Keras 2's
    # trainable variables; the order worked out from the layers must agree.
    path = os.path.join(HERE, "recommender")
    model = loaded("recommender")
    directory = keras2_directory.read(path)
    checkpoint = keras2_checkpoint.Checkpoint(directory.checkpoint, path)
    pairs = {}
    for layer in model.layers:  # As assign_weights pairs them.
        node = checkpoint.resolve(keras2_checkpoint._layer_records(
            directory, ("root",)).get(layer.name, ("root", "none")))
        if node is not None and layer.weights:
            for variable, value in keras2_checkpoint._pair_layer(layer, node, checkpoint):
                pairs[id(variable)] = value
    listed = checkpoint.variable_list(checkpoint.children[0]["trainable_variables"])
    worked_out = [pairs[id(v)] for v in keras2_optimizer._in_keras2_order(
        model, checkpoint, 0, pairs)]
    assert worked_out == listed and len(listed) == 2


# The directories that are not Keras 2 models, each with its message.

def _copy(tmp_path, name="imdb"):
    target = tmp_path / name
    shutil.copytree(os.path.join(HERE, name), target)
    return target


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def _without(name):
    def make(tmp_path):
        target = _copy(tmp_path)
        path = target / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        return target
    return make


def _truncated(name):
    def make(tmp_path):
        target = _copy(tmp_path)
        _truncate(target / name)
        return target
    return make


def _other_variables(tmp_path):
    target = _copy(tmp_path)
    shutil.rmtree(target / "variables")
    shutil.copytree(os.path.join(HERE, "recommender", "variables"),
                    target / "variables")
    return target


def _tf_module(tmp_path):
    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(tmp_path / "module"))
    return tmp_path / "module"


def _keras3_export(tmp_path):
    model = keras.Sequential([keras.Input((3,), dtype="int32"),
                              keras.layers.Embedding(5, 2)])
    model.export(str(tmp_path / "exported"), verbose=False)
    return tmp_path / "exported"


ERRORS = {
    "missing": (lambda tmp_path: tmp_path / "nothing", "no such file or directory"),
    "empty directory": (lambda tmp_path: tmp_path, "not a SavedModel directory "
                        r"\(it has no saved_model.pb\)"),
    "no saved_model.pb": (_without("saved_model.pb"), "a partial copy of a "
                          "SavedModel directory: saved_model.pb is missing"),
    "no keras_metadata.pb": (_without("keras_metadata.pb"), "a Keras 2 SavedModel "
                             "without its keras_metadata.pb.*TFSMLayer"),
    "no variables": (_without("variables"), "a partial copy.*"
                     "variables/variables.index is missing"),
    "damaged saved_model.pb": (_truncated("saved_model.pb"),
                               "saved_model.pb is damaged"),
    "damaged keras_metadata.pb": (_truncated("keras_metadata.pb"),
                                  "keras_metadata.pb is damaged"),
    "damaged variables": (_truncated("variables/variables.data-00000-of-00001"),
                          "variables/ checkpoint is damaged or incomplete"),
    "other variables": (_other_variables, "the variables/ checkpoint does not "
                        "match the model in keras_metadata.pb: .*'embedding'"),
    "tf.Module": (_tf_module, r"not a Keras model \(a tf.Module.*"
                  r"tf.saved_model.load\(path\).*TFSMLayer"),
    "Keras 3 export": (_keras3_export, r"exported by Keras 3 \(model.export\(\)\)"
                       ".*TFSMLayer"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_directories_that_are_not_keras2_models(case, tmp_path):
    make, message = ERRORS[case]
    path = make(tmp_path)
    with pytest.raises(keras2_directory.Keras2SavedModelError,
                       match=f"^{str(path)}: .*{message}"):
        keras2_saved_model.read_model(path)


@pytest.mark.cross_kernel
def test_a_legacy_adam_keeps_its_slots_by_the_checkpoint_s_slot_names():
    path, data, inputs = fixture("legacy_adam")
    model = keras_embed.load_keras2_model(path)
    np.testing.assert_allclose(model.predict(inputs[0], verbose=0), data["expected"],
                               rtol=1e-5, atol=1e-6)  # as test_predictions_are_keras2s
    optimizer = model.optimizer
    assert type(optimizer) is keras.optimizers.Adam
    assert optimizer.get_config()["learning_rate"] == pytest.approx(0.02)
    assert int(optimizer.iterations.numpy()) == 1
    _check_slots(model, data, {"m": optimizer._momentums, "v": optimizer._velocities})


def test_an_optimizer_state_that_cannot_be_mapped_is_said_dropped(tmp_path):
    # The legacy Adam's checkpoint (slots m and v), under a training config
    # naming Adagrad, which keeps accumulators only.
    target = _copy(tmp_path, "legacy_adam")
    records = keras2_directory.parse_saved_metadata(
        (target / "keras_metadata.pb").read_bytes())
    with pytest.warns(keras_embed.saving.migration.MigrationWarning,
                      match="optimizer's state \\(slots, step count\\) was dropped: Keras 3's "
                      "Adagrad keeps nothing like the legacy optimizer's 'm'; training "
                      "resumes with a fresh optimizer"):
        model = _load_with_optimizer(target, records, "Adagrad")
    assert type(model.optimizer) is keras.optimizers.Adagrad
    assert int(model.optimizer.iterations.numpy()) == 0


def _load_with_optimizer(target, records, name):
    """Writes keras_metadata.pb again with the root's optimizer renamed."""
    import json

    root = json.loads(records[0]["metadata"])
    root["training_config"]["optimizer_config"]["class_name"] = name
    root["training_config"]["optimizer_config"]["config"]["name"] = name
    records[0]["metadata"] = json.dumps(root)
    (target / "keras_metadata.pb").write_bytes(b"".join(
        _field(1, b"".join([_varint_field(2, r["node_id"]), _field(3, r["node_path"].encode()),
                            _field(4, r["identifier"].encode()), _field(5, r["metadata"].encode())]))
        for r in records))
    return keras_embed.load_keras2_model(target)


def _varint(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _varint_field(number, value):
    return _varint(number << 3) + _varint(value)


def _field(number, data):
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def test_a_lambda_s_bytecode_is_loaded_only_outside_safe_mode():
    path, data, inputs = fixture("with_lambda")
    with pytest.raises(ValueError, match=r"a Lambda layer whose function Keras 2 saved as "
                       r"Python bytecode, which safe mode does not load .* pass "
                       r"safe_mode=False to keras_embed.load_keras2_model"):
        keras_embed.load_keras2_model(path)


@pytest.mark.cross_kernel
@pytest.mark.skipif(sys.version_info[:2] != (3, 11),
                    reason="tf-keras saved the lambda as Python 3.11 bytecode")
def test_a_lambda_loads_with_safe_mode_off():
    path, data, inputs = fixture("with_lambda")
    model = keras_embed.load_keras2_model(path, safe_mode=False)
    np.testing.assert_allclose(model.predict(inputs[0], verbose=0), data["expected"],
                               rtol=1e-5, atol=1e-6)  # as test_predictions_are_keras2s
