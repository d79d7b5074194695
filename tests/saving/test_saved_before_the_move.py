"""A `.keras` file written by keras_embed before the package moved into wings
(tests/fixtures/make_keras_embed_v0_1_fixture.py, at commit 1c366b0) loads with
no `custom_objects`: the same table and LazyAdam state, bit for bit, the same
predictions to float32 precision, and it trains on."""

import os
import zipfile
import json

import keras
import numpy as np
import pytest

import keras_embed
from conftest import FIXTURES

NAME = "keras_embed_v0_1_lazy_adam"


def _load():
    return keras.models.load_model(os.path.join(FIXTURES, NAME + ".keras"))


def test_the_file_names_the_old_module_paths():
    # What makes this fixture worth keeping: the config says where the classes were.
    with zipfile.ZipFile(os.path.join(FIXTURES, NAME + ".keras")) as archive:
        config = json.loads(archive.read("config.json"))
    layer = next(c for c in config["config"]["layers"] if c["class_name"] == "Embedding")
    assert (layer["module"], layer["registered_name"]) == ("keras_embed.embedding", "keras_embed>Embedding")
    assert config["compile_config"]["optimizer"]["registered_name"] == "keras_embed>LazyAdam"


@pytest.mark.cross_kernel
def test_loads_with_identical_predictions_and_optimizer_state():
    saved = np.load(os.path.join(FIXTURES, NAME + ".npz"))
    model = _load()
    assert type(model.get_layer("words")) is keras_embed.Embedding
    assert type(model.optimizer) is keras_embed.optimizers.LazyAdam
    # Saved and read back: the table and every optimizer variable, bit for bit.
    np.testing.assert_array_equal(model.get_layer("words").embeddings.numpy(), saved["table"])
    # The predictions go through a mean and a Dense(1) on this CPU's kernels,
    # not those of the machine that wrote the .npz: one float32 ulp apart
    # (3.7e-9 at 0.046) on another CPU. Outputs are at most 0.13: rtol covers
    # a few ulps of each, atol 1e-7 (about 7 ulps of the largest) those near 0.
    np.testing.assert_allclose(model.predict(saved["ids"], verbose=0), saved["expected"],
                               rtol=1e-5, atol=1e-7)
    state = {"optimizer/" + v.path: v.numpy() for v in model.optimizer.variables}
    expected = {key: saved[key] for key in saved.files if key.startswith("optimizer/")}
    assert sorted(state) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(state[key], expected[key], err_msg=key)
    assert int(model.optimizer.iterations.numpy()) == 3


def test_trains_on_from_the_saved_state():
    saved = np.load(os.path.join(FIXTURES, NAME + ".npz"))
    model = _load()
    momentum = next(v for v in model.optimizer.variables if v.path.endswith("words_embeddings_momentum"))
    ids = saved["ids"][1:2]  # one sequence: only its rows move
    before_table = model.get_layer("words").embeddings.numpy()
    before_momentum = momentum.numpy()
    model.train_on_batch(ids, np.ones((1, 1), "float32"))
    assert int(model.optimizer.iterations.numpy()) == 4
    changed = np.flatnonzero(np.any(model.get_layer("words").embeddings.numpy() != before_table, axis=1))
    looked_up = np.unique(ids[ids != 0])
    assert changed.tolist() == looked_up.tolist()
    untouched = np.setdiff1d(np.arange(30), looked_up)
    np.testing.assert_array_equal(momentum.numpy()[untouched], before_momentum[untouched])
