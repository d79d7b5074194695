"""`keras-embed convert` and `inspect` on Keras 2 SavedModel directories
(the fixtures tf-keras wrote in tests/fixtures/keras2_saved_model/)."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_embed
from conftest import FIXTURES
from keras_embed.tools import cli

HERE = os.path.join(FIXTURES, "keras2_saved_model")


def main(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def inputs(name):
    data = np.load(os.path.join(HERE, name + ".npz"))
    x = [data[f"x{i}"] for i in range(4) if f"x{i}" in data.files]
    return (x if len(x) > 1 else x[0]), data["expected"]


# The converted model's predictions against tf-keras's, which another machine
# stored: its LSTM, GRU, Conv1D and Dense run on this CPU's kernels, a few
# float32 ulps of the outputs' scale (at most 1.59) away. rtol=1e-5 is about 80
# ulps of each value, atol=1e-6 about 8 ulps of the largest, for outputs near 0
# (`shared` has one of 3.9e-4, 3.9e-5 off relatively on one CPU). As in
# tests/saving/keras2/test_saved_model.py.


@pytest.mark.cross_kernel
def test_convert_imdb_to_keras_as_a_user_runs_it(tmp_path):
    source, out = os.path.join(HERE, "imdb"), str(tmp_path / "imdb.keras")
    result = subprocess.run(
        [sys.executable, "-m", "keras_embed", "convert", source, out],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Read {source} (a Keras 2 SavedModel directory, 1 embedding layer)"
    assert lines[1] == "  embedding  Embedding (Keras 2) -> keras_embed.Embedding"
    assert lines[2] == ("  compiled: optimizer Adam (learning_rate=0.01, step 1), "
                        "loss 'binary_crossentropy'")
    assert lines[3].startswith(f"Wrote {out} (") and len(lines) == 4
    model = keras.models.load_model(out)
    x, expected = inputs("imdb")
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)  # above
    assert type(model.layers[0]) is keras_embed.Embedding
    assert model.layers[0].input_length == 10
    assert int(model.optimizer.iterations.numpy()) == 1


@pytest.mark.cross_kernel
@pytest.mark.parametrize("name, extension", [("recommender", ".h5"), ("shared", ".keras")])
def test_convert_to_stock(name, extension, tmp_path, capsys):
    source, out = os.path.join(HERE, name), str(tmp_path / f"{name}{extension}")
    code, stdout, err = main(capsys, "convert", source, out, "--to", "stock")
    assert (code, err) == (0, "")
    lines = stdout.splitlines()
    assert lines[0].startswith(f"Read {source} (a Keras 2 SavedModel directory")
    assert all("-> keras.layers.Embedding" in line for line in lines[1:-2]
               if "Embedding" in line)
    assert lines[-1].startswith(f"Wrote {out} (")
    model = keras.models.load_model(out)
    x, expected = inputs(name)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)  # above
    kinds = {type(layer) for layer in model.layers
             if isinstance(layer, (keras.layers.Embedding, keras_embed.Embedding))}
    assert kinds == {keras.layers.Embedding}
    if name == "shared":
        assert "  not compiled (no training configuration)" in lines


def test_convert_a_model_with_a_custom_layer_says_to_use_the_function(tmp_path, capsys):
    source = os.path.join(HERE, "custom")
    code, out, err = main(capsys, "convert", source, str(tmp_path / "out.keras"))
    assert (code, out) == (1, "")
    assert err == (
        f"keras-embed convert: error: {source}: the model uses 'ScaleLayer', a class that is "
        "not part of Keras (a custom layer, loss or metric of yours). Pass it as "
        "keras_embed.load_keras2_model(path, custom_objects={'ScaleLayer': ScaleLayer}); "
        "keras-embed convert cannot import your code.\n"
    )
    assert not os.path.exists(tmp_path / "out.keras")


def test_convert_a_directory_that_is_not_a_keras2_model(tmp_path, capsys):
    import tensorflow as tf

    module = tf.Module()
    module.v = tf.Variable(2.0)
    tf.saved_model.save(module, str(tmp_path / "module"))
    code, out, err = main(capsys, "convert", str(tmp_path / "module"),
                          str(tmp_path / "out.keras"))
    assert (code, out) == (1, "")
    assert err.startswith(f"keras-embed convert: error: {tmp_path / 'module'}: a SavedModel "
                          "of a TensorFlow object that is not a Keras model (a tf.Module")
    assert err.count("\n") == 1


def test_inspect_a_directory(capsys):
    code, out, err = main(capsys, "inspect", os.path.join(HERE, "recommender"))
    assert (code, err) == (0, "")
    rows = out.splitlines()
    assert rows[1].split()[:4] == ["user_embedding", "Embedding", "(Keras", "2)"]
    assert rows[-1] == "2 embedding layers, 250 params, 0.0010 MB"


def test_a_directory_is_read_once(tmp_path, capsys, monkeypatch):
    # Checking the directory and rebuilding its model parsed it twice
    # (saved_model.pb and keras_metadata.pb): it is read once and handed on.
    from keras_embed.saving.keras2 import directory as keras2_directory

    reads = []
    real_read = keras2_directory.read
    monkeypatch.setattr(keras2_directory, "read", lambda path: reads.append(path) or real_read(path))
    source = os.path.join(HERE, "recommender")
    code, out, _ = main(capsys, "convert", source, str(tmp_path / "m.keras"))
    assert code == 0, out
    assert reads == [source]
