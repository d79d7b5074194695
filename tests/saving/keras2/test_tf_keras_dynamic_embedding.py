"""Keras 2 models holding tf-keras's own DynamicEmbedding
(`tf_keras.layers.experimental.DynamicEmbedding`) convert to
`keras_embed.DynamicEmbedding`: every key of its vocabulary holds the row
tf-keras gave it, and the layer's vectors are tf-keras's bit for bit (a
gather); the model's predictions, through Flatten -> Dense, within float32
matmul rounding (rtol=1e-6, atol=1e-6).

tf-keras writes the models at test time
(tests/fixtures/write_keras2_dynamic_embedding.py, in a subprocess), as
`.h5` and as SavedModel directories, where it can: it fails writing a string
vocabulary to `.h5` (leaving the file cut short), and its
`update_embeddings` fails on integer keys (their vocabulary stays the
initial one).
"""

import json
import os
import shutil
import warnings

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_embed
from conftest import write_with_tf_keras
from keras_embed.saving import migration, saved_models
from keras_embed.saving.keras2 import dynamic_embedding as keras2_dynamic
from keras_embed.saving.keras2.directory import Keras2SavedModelError
from keras_embed.saving.migration import MigrationWarning
from keras_embed.tools import cli

pytestmark = pytest.mark.cross_kernel

CONVERTED = [("int64_keys", "h5"), ("int64_keys", "directory"), ("string_keys", "directory"),
             ("random_vocabulary_two_oov_rows", "h5"), ("random_vocabulary_two_oov_rows", "directory"),
             ("vocabulary_past_input_dim", "h5"), ("vocabulary_past_input_dim", "directory"),
             ("nested", "directory")]
# What each model's note says beyond what every one says.
NOTE_PARTS = {
    "int64_keys": ["holding its 6 keys", "3 keys tf-keras counted without giving them a row are dropped"],
    "string_keys": ["holding its 5 keys", "1 keys tf-keras counted without"],
    "random_vocabulary_two_oov_rows": [
        "holding its 4 keys", "4 repeated keys of its vocabulary hold their first row",
        "1 OOV rows tf-keras never read (num_oov_indices=2) are dropped"],
    "vocabulary_past_input_dim": ["holding its 4 keys", "2 keys past input_dim=4"],
    "nested": ["holding its 6 keys"],
}
EVERY_NOTE = ("training now admits new keys at every step, taking the least counted key's row when "
              "full (tf-keras changed its vocabulary only when UpdateEmbeddingCallback ran)")
H5_STRINGS = ("layer 'words' (tf-keras DynamicEmbedding): the file holds no vocabulary_table_keys, "
              "vocabulary_table_values, vocabulary: tf-keras cannot write a string vocabulary to .h5 and "
              "stops there; save the model as a SavedModel directory (save_format='tf') and convert that")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = write_with_tf_keras("write_keras2_dynamic_embedding.py", tmp_path_factory.mktemp("keras2_dynamic"))
    with open(out / "models.json") as file:
        return out, json.load(file)["models"]


def _keys(data):
    keys = data["x0"]
    return tf.constant(keys) if keys.dtype.kind == "U" else keys


def _layer(model):
    return next(layer for _, layer, _ in migration.all_layers(model)
                if isinstance(layer, keras_embed.DynamicEmbedding))


def test_what_tf_keras_writes_and_where_it_fails(written):
    _, models = written
    for name, record in models.items():
        if name == "string_keys":
            assert record["update_embeddings"] == "ok"
            assert record["h5"]["refused"] == "TypeError: Object dtype dtype('O') has no native HDF5 equivalent"
            assert record["h5"]["left"] == "string_keys.h5"  # Cut short: converting it is refused below.
        else:
            # tf-keras 2.21 pads the new vocabulary with the string "UNK".
            assert record["update_embeddings"].startswith("InvalidArgumentError: cannot compute ConcatV2")
            assert record["h5"] == name + ".h5"
        assert record["directory"] == name


@pytest.mark.parametrize("name,form", CONVERTED)
def test_converts_with_tf_keras_rows_and_predictions(written, name, form, tmp_path):
    out, models = written
    source = str(out / models[name][form])
    converted = str(tmp_path / "converted.keras")
    lines = saved_models.convert(source, converted)
    path = "inner/ids" if name == "nested" else _layer_name(name)
    assert f"  {path}  DynamicEmbedding (Keras 2) -> keras_embed.DynamicEmbedding" in lines
    (note,) = [line for line in lines if line.startswith("  note:")]
    assert EVERY_NOTE in note and all(part in note for part in NOTE_PARTS[name]), note
    data = np.load(out / (name + ".npz"))
    model = keras.models.load_model(converted)
    layer = _layer(model)
    keys = _keys(data)
    # A gather: tf-keras's vectors, bit for bit; OOV keys get its OOV row.
    np.testing.assert_array_equal(layer(keys).numpy(), data["vectors"])
    np.testing.assert_allclose(model.predict(keys, verbose=0), data["expected"], rtol=1e-6, atol=1e-6)
    capacity = layer.capacity
    vocabulary = data["vocabulary"]
    assert capacity == {"random_vocabulary_two_oov_rows": 8, "vocabulary_past_input_dim": 4}.get(
        name, len(vocabulary))
    table, counts = layer.embeddings.numpy(), layer._counts.numpy()
    counts_of = dict(zip(data["table_keys"].tolist(), data["table_counts"].tolist()))
    rows = layer.lookup(vocabulary)
    for position, key in enumerate(vocabulary.tolist()):
        first = vocabulary.tolist().index(key)
        if first >= capacity:
            assert rows[position] == -1  # Past input_dim: tf-keras's OOV row, or its failure.
            continue
        np.testing.assert_array_equal(table[rows[position]], data["embeddings"][first])
        assert counts[rows[position]] == counts_of.get(key, 0)
    assert layer.vocabulary()["key"].size == len(set(vocabulary[:capacity].tolist()))
    np.testing.assert_array_equal(table[capacity], data["embeddings"][capacity])
    unknown = [key for key in np.unique(data["x0"]).tolist() if key not in vocabulary.tolist()]
    assert unknown and (layer.lookup(np.array(unknown)) == -1).all()
    # Adam's slots of the table follow its rows; the step count carries.
    optimizer = model.optimizer
    m = optimizer._momentums[optimizer._get_variable_index(layer.embeddings)].numpy()
    held = layer.vocabulary()
    firsts = [vocabulary.tolist().index(key) for key in _fingerprinted(vocabulary, held, layer)]
    np.testing.assert_array_equal(m[held["row"]], data["adam_m"][firsts])
    np.testing.assert_array_equal(m[capacity], data["adam_m"][capacity])
    assert int(optimizer.iterations.numpy()) == 3


def _layer_name(name):
    return "words" if name == "string_keys" else "ids"


def _fingerprinted(vocabulary, held, layer):
    """The vocabulary's keys in the order of `held`'s rows."""
    if layer.key_dtype != "string":
        return held["key"].tolist()
    prints = keras2_dynamic._keys(vocabulary.astype(object)).tolist()
    return [vocabulary.tolist()[prints.index(key)] for key in held["key"].tolist()]


def test_load_keras2_model_warns_and_training_admits_keys(written):
    out, _ = written
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = keras_embed.load_keras2_model(str(out / "string_keys"))
    (note,) = [str(w.message) for w in caught if w.category is MigrationWarning]
    assert "layer 'words' (tf-keras DynamicEmbedding) is a keras_embed.DynamicEmbedding" in note
    layer = model.get_layer("words")
    assert (layer.capacity, layer.key_dtype, layer.oov, layer.eviction) == (5, "string", "learned", "lfu")
    assert layer.lookup(np.array(["new"])).tolist() == [-1]
    model.fit(tf.constant([["new", "e", "q"]]), np.ones((1, 1)), verbose=0)
    assert layer.lookup(np.array(["new"])).tolist() != [-1]  # Admitted in one step, into a full table.


def test_h5_file_tf_keras_cut_short_is_refused_in_one_line(written, tmp_path, capsys):
    out, models = written
    source = str(out / models["string_keys"]["h5"]["left"])
    with pytest.raises(saved_models.SavedModelError) as caught:
        saved_models.convert(source, str(tmp_path / "m.keras"))
    message = str(caught.value)
    assert H5_STRINGS in message and "save_format='tf'" in message and "\n" not in message
    assert cli.main(["convert", source, str(tmp_path / "m.keras")]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"keras-embed convert: error: {source}: ") and H5_STRINGS in line
    assert not os.path.exists(tmp_path / "m.keras")


def test_nested_layer_in_h5_is_refused(written, tmp_path):
    out, _ = written
    with pytest.raises(saved_models.SavedModelError) as caught:
        saved_models.convert(str(out / "nested.h5"), str(tmp_path / "m.keras"))
    assert ("layer 'ids' (tf-keras DynamicEmbedding): inside a nested model, it converts from a "
            "SavedModel directory only") in str(caught.value)


def _edited_h5(written, tmp_path, edit):
    out, _ = written
    path = str(tmp_path / "edited.h5")
    shutil.copy(out / "int64_keys.h5", path)
    with h5py.File(path, "r+") as file:
        config = json.loads(file.attrs["model_config"])
        edit(next(layer for layer in config["config"]["layers"]
                  if layer["class_name"] == "DynamicEmbedding")["config"])
        file.attrs["model_config"] = json.dumps(config)
    return path


def test_a_table_that_does_not_match_the_config_is_refused(written, tmp_path):
    path = _edited_h5(written, tmp_path, lambda config: config.update(input_dim=9))
    with pytest.raises(saved_models.SavedModelError) as caught:
        saved_models.convert(path, str(tmp_path / "m.keras"))
    assert ("layer 'ids' (tf-keras DynamicEmbedding): its table has shape (7, 3), where its config "
            "(input_dim=8 and its OOV rows, output_dim=3) needs at least (9, 3)") in str(caught.value)


def test_a_config_without_tf_keras_fields_names_custom_objects(written, tmp_path):
    path = _edited_h5(written, tmp_path, lambda config: config.pop("initial_vocabulary"))
    with pytest.raises(saved_models.SavedModelError) as caught:
        saved_models.convert(path, str(tmp_path / "m.keras"))
    assert ("layer 'ids' (DynamicEmbedding): its config lacks initial_vocabulary, so it is not "
            "tf-keras's DynamicEmbedding; if the class is yours, pass it in custom_objects") in str(caught.value)


def test_directory_errors_name_the_directory(written, monkeypatch):
    out, _ = written
    source = str(out / "int64_keys")
    monkeypatch.setattr(keras2_dynamic, "CHECKPOINT_PATHS", keras2_dynamic.CHECKPOINT_PATHS + (
        ("dynamic_lookup_layer", "counts"),))
    with pytest.raises(Keras2SavedModelError) as caught:
        keras_embed.load_keras2_model(source)
    assert str(caught.value) == (f"{source}: layer 'ids' (tf-keras DynamicEmbedding): its variables/ "
                                 "checkpoint holds no counts")
    monkeypatch.undo()

    def mismatched(layer, *values):
        raise ValueError("its table does not fit")

    monkeypatch.setattr(keras2_dynamic, "layer_state", mismatched)
    with pytest.raises(Keras2SavedModelError) as caught:
        keras_embed.load_keras2_model(source)
    assert str(caught.value) == f"{source}: its table does not fit"
