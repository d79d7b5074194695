"""EmbeddingProjector and write_projector, read back by a real TensorBoard
(its projector plugin, over HTTP on 127.0.0.1) and by TensorFlow."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_embed
from keras_embed.callbacks import EmbeddingProjector, write_projector

VOCABULARY = ["", "[UNK]", "good", "bad", "film", "tab\there"]


def _model():
    vectorize = keras.layers.TextVectorization(vocabulary=VOCABULARY[2:5])
    model = keras.Sequential([
        keras.Input((3,), dtype="int32"),
        keras_embed.Embedding(5, 4, name="words"),
        keras.layers.Dense(2, name="mix"),
    ])
    inputs = keras.Input((3,), dtype="int32")
    tags = keras.layers.Embedding(6, 3, name="tags")(inputs)
    flat = keras.layers.Flatten()(tags)
    outer = keras.Model(inputs, [model(inputs), flat])
    return vectorize, model, outer


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port, route, **query):
    url = (f"http://127.0.0.1:{port}/data/plugin/projector/{route}?"
           + urllib.parse.urlencode(query))
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


@contextlib.contextmanager
def tensorboard(log_dir, wait_s=90):
    """A TensorBoard serving `log_dir` on 127.0.0.1; yields its port."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(log_dir),
         "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        deadline = time.monotonic() + wait_s
        while True:
            if process.poll() is not None:
                pytest.fail("tensorboard exited: " + process.stderr.read().decode()[-2000:])
            try:
                _get(port, "runs")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"tensorboard did not answer within {wait_s} s")
                time.sleep(0.25)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()


def test_tensorboard_projector_serves_the_tables(tmp_path):
    pytest.importorskip("tensorboard", reason="pip install 'keras-embed[projector]'")
    vectorize, inner, outer = _model()
    words = inner.get_layer("words")
    tags = outer.get_layer("tags")
    rng = np.random.default_rng(0)
    words.embeddings.assign(rng.normal(size=(5, 4)).astype("float32"))
    tags.embeddings.assign(rng.normal(size=(6, 3)).astype("float32"))
    names = write_projector(tmp_path, outer, vocabulary={
        "words": vectorize, "tags": VOCABULARY}, step=3)
    assert names == ["tags", "words"]
    with tensorboard(tmp_path) as port:
        assert json.loads(_get(port, "runs")) == ["."]
        info = json.loads(_get(port, "info", run="."))
        assert [e["tensorName"] for e in info["embeddings"]] == ["tags", "words"]
        for layer in (words, tags):
            data = _get(port, "tensor", run=".", name=layer.name)
            served = np.frombuffer(data, "float32").reshape(layer.embeddings.shape)
            np.testing.assert_array_equal(served, layer.embeddings.numpy())
        labels = _get(port, "metadata", run=".", name="words").decode().splitlines()
        assert labels == ["(empty)", "[UNK]", "good", "bad", "film"]
        labels = _get(port, "metadata", run=".", name="tags").decode().splitlines()
        assert labels == ["(empty)", "[UNK]", "good", "bad", "film", "tab here"]


def test_callback_every_n_epochs_keeps_the_latest(tmp_path):
    model = keras.Sequential([keras.Input((2,), dtype="int32"),
                              keras_embed.Embedding(7, 3, name="emb"),
                              keras.layers.GlobalAveragePooling1D(),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.5), "mse")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(self.model.get_layer("emb").embeddings.numpy().copy())

    projector = EmbeddingProjector(tmp_path, every_n_epochs=2)
    model.fit(np.array([[1, 2], [3, 4]]), np.array([[1.0], [-1.0]]), epochs=5,
              verbose=0, callbacks=[projector, Record()])
    assert projector.written == 4
    checkpoint = tf.train.latest_checkpoint(str(tmp_path))
    assert os.path.basename(checkpoint) == "embeddings.ckpt-4"
    assert not [n for n in os.listdir(tmp_path) if n.startswith("embeddings.ckpt-2")]
    table = tf.train.load_checkpoint(checkpoint).get_tensor("emb")
    np.testing.assert_array_equal(table, seen[3])  # After the 4th epoch,
    assert not np.array_equal(table, seen[4])      # not the 5th.


def test_vocabulary_for_every_table_of_its_size(tmp_path):
    a = keras.layers.Embedding(3, 2, name="a")
    b = keras_embed.Embedding(3, 2, name="b")
    c = keras_embed.Embedding(4, 2, name="c")
    for layer in (a, b, c):
        layer.build()
    write_projector(tmp_path, [a, b, c], vocabulary=["x", "y", "z"])
    config = (tmp_path / "projector_config.pbtxt").read_text()
    assert config.count("metadata_path") == 2 and "metadata-c.tsv" not in config
    assert (tmp_path / "metadata-b.tsv").read_text() == "x\ny\nz\n"


def test_errors_name_the_layer(tmp_path):
    layer = keras_embed.Embedding(3, 2, name="e")
    with pytest.raises(ValueError, match=r"Embedding layer 'e' is not built yet"):
        write_projector(tmp_path, [layer])
    layer.build()
    with pytest.raises(ValueError, match=r"no embedding layer named 'f'\. "
                       r"Embedding layers: \['e'\]"):
        write_projector(tmp_path, [layer], layers=["f"])
    with pytest.raises(ValueError, match=r"the vocabulary has 2 tokens, but no "
                       r"table has as many rows \(\{'e': 3\}\)"):
        write_projector(tmp_path, [layer], vocabulary=["a", "b"])
    with pytest.raises(ValueError, match=r"the vocabulary for 'e' has 2 tokens, "
                       r"but the layer's table has 3 rows"):
        write_projector(tmp_path, [layer], vocabulary={"e": ["a", "b"]})
    with pytest.raises(ValueError, match=r"found no embedding layer"):
        write_projector(tmp_path, keras.Sequential([keras.layers.Dense(1)]))
    twin = keras.layers.Embedding(3, 2, name="e")
    twin.build()
    with pytest.raises(ValueError, match=r"two embedding layers are named 'e'"):
        write_projector(tmp_path, [layer, twin])
    quantized = keras_embed.Embedding(3, 2, name="q")
    quantized.build()
    quantized.quantize("int8")
    with pytest.raises(ValueError, match=r"'q' is quantized \(int8\): its table "
                       r"holds integer codes"):
        write_projector(tmp_path, [quantized])
    with pytest.raises(ValueError, match=r"`every_n_epochs` must be a positive "
                       r"integer\. Received: 0"):
        EmbeddingProjector(tmp_path, every_n_epochs=0)


def _bag_model():
    """An EmbeddingBag alone in a model, trained by fit."""
    model = keras.Sequential([keras.Input((3,), dtype="int32"),
                              keras_embed.EmbeddingBag(6, 2, mask_zero=True, name="genres"),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.5), "mse")
    return model


def test_callback_writes_a_bag_table_alone(tmp_path):
    pytest.importorskip("tensorboard", reason="pip install 'keras-embed[projector]'")
    model = _bag_model()
    projector = EmbeddingProjector(tmp_path, vocabulary=VOCABULARY)
    model.fit(np.array([[1, 2, 0], [3, 4, 5]]), np.array([[1.0], [-1.0]]),
              epochs=1, verbose=0, callbacks=[projector])
    assert projector.written == 1
    bag = model.get_layer("genres")
    with tensorboard(tmp_path) as port:
        info = json.loads(_get(port, "info", run="."))
        assert [e["tensorName"] for e in info["embeddings"]] == ["genres"]
        data = _get(port, "tensor", run=".", name="genres")
        served = np.frombuffer(data, "float32").reshape(6, 2)
        np.testing.assert_array_equal(served, bag.embeddings.numpy())
        labels = _get(port, "metadata", run=".", name="genres").decode().splitlines()
        assert labels == ["(empty)", "[UNK]", "good", "bad", "film", "tab here"]


def test_bag_table_is_written_beside_an_embedding(tmp_path):
    inputs = keras.Input((3,), dtype="int32")
    words = keras_embed.Embedding(5, 2, name="words")(inputs)
    genres = keras_embed.EmbeddingBag(6, 2, name="genres")(inputs)
    model = keras.Model(inputs, [keras.layers.Flatten()(words), genres])
    assert write_projector(tmp_path, model) == ["words", "genres"]
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path)))
    for name in ("words", "genres"):
        np.testing.assert_array_equal(reader.get_tensor(name),
                                      model.get_layer(name).embeddings.numpy())
    config = (tmp_path / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "genres"' in config


def test_bag_errors_name_the_bag(tmp_path):
    bag = keras_embed.EmbeddingBag(3, 2, name="b")
    with pytest.raises(ValueError, match=r"EmbeddingBag layer 'b' is not built yet"):
        write_projector(tmp_path, [bag])


def test_a_table_inside_a_wrapper_counts():
    # The projector's walk missed an Embedding inside a wrapper: it is now
    # the one `swap` and `keras-embed inspect` use.
    from keras_embed.callbacks import embedding_layers

    ids = keras.Input((2, 3), dtype="int32")
    slots = keras.layers.TimeDistributed(keras_embed.Embedding(10, 2, name="words"), name="per_slot")
    model = keras.Model(ids, slots(ids))
    assert [layer.name for layer in embedding_layers(model)] == ["words"]


def test_a_dynamic_table_writes_the_rows_its_keys_hold(tmp_path):
    # ttl_steps frees keys 1 and 2 (seen in the first step only), capacity
    # leaves rows unused, and the OOV row follows: none of them is written.
    inputs = keras.Input((2,), dtype="int64")
    users = keras_embed.DynamicEmbedding(8, 3, ttl_steps=2, seed=0, name="users")
    words = keras_embed.DynamicEmbedding(4, 3, key_dtype="string", seed=0, name="words")
    tags = keras_embed.Embedding(5, 3, name="tags")
    tag_ids = keras.Input((2,), dtype="int32")
    text = keras.Input((2,), dtype="string")
    pooled = [keras.layers.GlobalAveragePooling1D()(layer(x))
              for layer, x in ((users, inputs), (words, text), (tags, tag_ids))]
    model = keras.Model([inputs, text, tag_ids], keras.layers.Dense(1)(keras.layers.Concatenate()(pooled)))
    model.compile(keras_embed.optimizers.LazyAdam(0.1), "mse")
    keys = np.array([[1, 2], [2**40, -7], [2**40, 5], [-7, 5]])
    strings = np.array([["cat", "dog"], ["dog", "eel"], ["cat", "cat"], ["eel", "dog"]])
    projector = EmbeddingProjector(tmp_path, vocabulary=["a", "b", "c", "d", "e"])
    batches = tf.data.Dataset.from_tensor_slices(
        ((keys, strings, np.ones((4, 2), "int32")), np.ones((4, 1)))).batch(1)
    model.fit(batches, epochs=1, shuffle=False, verbose=0, callbacks=[projector])
    held = users.vocabulary()
    assert sorted(held["key"].tolist()) == sorted([2**40, -7, 5])  # 1 and 2 freed
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path)))
    np.testing.assert_array_equal(reader.get_tensor("users"), users.embeddings.numpy()[held["row"]])
    metadata = (tmp_path / "metadata-users.tsv").read_text().splitlines()
    assert metadata == [str(key) for key in held["key"]]
    # String keys are labelled by their fingerprints, as vocabulary() gives them.
    held_words = words.vocabulary()
    fingerprints = tf.bitcast(tf.fingerprint(tf.constant(["cat", "dog", "eel"])), tf.int64).numpy()
    assert sorted(held_words["key"].tolist()) == sorted(fingerprints.tolist())
    np.testing.assert_array_equal(reader.get_tensor("words"), words.embeddings.numpy()[held_words["row"]])
    metadata = (tmp_path / "metadata-words.tsv").read_text().splitlines()
    assert metadata == [str(key) for key in held_words["key"]]
    # Other tables are written whole, labelled by the vocabulary given.
    np.testing.assert_array_equal(reader.get_tensor("tags"), tags.embeddings.numpy())
    assert (tmp_path / "metadata-tags.tsv").read_text() == "a\nb\nc\nd\ne\n"
    config = (tmp_path / "projector_config.pbtxt").read_text()
    assert config.count("metadata_path") == 3
    with pytest.raises(ValueError, match=r"a vocabulary is given for 'users', a DynamicEmbedding: "
                       r"its rows are labelled by the keys"):
        write_projector(tmp_path, model, vocabulary={"users": ["x"]})


def test_a_dynamic_table_holding_no_key_yet_is_written_empty(tmp_path):
    users = keras_embed.DynamicEmbedding(4, 3, name="users")
    users.build()
    assert write_projector(tmp_path, [users]) == ["users"]
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path)))
    assert reader.get_tensor("users").shape == (0, 3)
    assert (tmp_path / "metadata-users.tsv").read_text() == ""
