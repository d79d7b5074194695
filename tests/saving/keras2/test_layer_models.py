"""Keras 2 models with wrappers, nested models and adapted preprocessing
layers convert with tf-keras's predictions, or are refused in one line that
names the layer and what to do.

tf-keras writes the models at test time
(tests/fixtures/write_keras2_layer_models.py, in a subprocess), as `.h5`
and as SavedModel directories, where it can: it refuses to write an adapted
`TextVectorization`, `StringLookup` or `IntegerLookup` to `.h5` (their
vocabulary is not a variable), so those exist as directories only.
"""

import json
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import FIXTURES
from conftest import write_with_tf_keras
from keras_embed.saving import saved_models
from keras_embed.tools import cli

sys.path.insert(0, FIXTURES)
import write_keras2_layer_models as writer  # noqa: E402

pytestmark = pytest.mark.cross_kernel

# Refused, with the phrase the one-line error must hold.
REFUSED = {
    "text_vectorization_tf_idf_column": (
        "layer 'text_vectorization' (TextVectorization, output_mode='tf_idf'): for a column "
        "of strings, shape (batch, 1), Keras 3 works its output shape out with one axis "
        "more than it returns"),
}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = write_with_tf_keras("write_keras2_layer_models.py", tmp_path_factory.mktemp("keras2_layers"))
    with open(out / "models.json") as file:
        return out, json.load(file)["models"]


def _inputs(data):
    """The inputs as tf-keras took them (strings as tensors: Keras 3 takes
    no NumPy array of str)."""
    inputs = [data[key] for key in sorted(k for k in data.files if k.startswith("x"))]
    inputs = [tf.constant(x) if x.dtype.kind == "U" else x for x in inputs]
    return inputs if len(inputs) > 1 else inputs[0]


@pytest.mark.parametrize("form", ["h5", "directory"])
@pytest.mark.parametrize("name", list(writer.MODELS))
def test_converts_with_keras2s_predictions_or_is_refused(written, name, form, tmp_path):
    out, models = written
    source = models[name][form]
    if isinstance(source, dict):
        pytest.skip(f"tf-keras does not write this model as {form}: {source['refused']}")
    converted = str(tmp_path / "converted.keras")
    if name in REFUSED:
        with pytest.raises(saved_models.SavedModelError) as caught:
            saved_models.convert(str(out / source), converted)
        message = str(caught.value)
        assert REFUSED[name] in message and "\n" not in message
        assert not os.path.exists(converted)
        return
    lines = saved_models.convert(str(out / source), converted)
    assert not [line for line in lines if line.startswith("  note:")], lines
    data = np.load(out / (name + ".npz"))
    model = keras.models.load_model(converted)
    # tf-keras's kernels against Keras 3's (an LSTM, GRUs, Dense layers;
    # seen equal here): a few float32 ulps of outputs about 1.
    np.testing.assert_allclose(model.predict(_inputs(data), verbose=0), data["expected"],
                               rtol=1e-5, atol=1e-6)


def test_the_command_line_refuses_in_one_line(written, tmp_path, capsys):
    out, models = written
    source = str(out / models["text_vectorization_tf_idf_column"]["directory"])
    code = cli.main(["convert", source, str(tmp_path / "m.keras")])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith(f"keras-embed convert: error: {source}: ")
    assert REFUSED["text_vectorization_tf_idf_column"] in line
