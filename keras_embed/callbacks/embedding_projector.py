"""Embedding tables for TensorBoard's projector: a callback and a function.

Keras 3's `keras.callbacks.TensorBoard(embeddings_freq=...)` writes a
`.weights.h5` file that the projector cannot read, names only the first layer
with weights, and looks at stock `Embedding` layers only. Here each table (of
`keras_embed.Embedding`, `keras_embed.EmbeddingBag`,
`keras_embed.DynamicEmbedding` and `keras.layers.Embedding` layers) goes
into a TensorFlow checkpoint under its layer's name, with a
`projector_config.pbtxt` and, where a vocabulary is given, a metadata file
of tokens: what the projector plugin reads. A `DynamicEmbedding` gives only
the rows its keys hold (`layer.vocabulary()["row"]`), labelled by their keys
(a string key by its farmhash64 fingerprint, the `"key"` of
`layer.vocabulary()`). Open it with `tensorboard --logdir LOG_DIR`,
"Projector" tab (its run is `.`).

Example:

>>> import tempfile
>>> import keras, numpy as np
>>> from keras_embed import Embedding
>>> from keras_embed.callbacks import write_projector
>>> model = keras.Sequential([Embedding(4, 2, name="words")])
>>> _ = model(np.array([[1, 2]]))
>>> write_projector(tempfile.mkdtemp(), model, vocabulary=["", "a", "b", "c"])
['words']
"""

import os
import re

import keras
import tensorflow as tf

from keras_embed.layers.dynamic_embedding import DynamicEmbedding
from keras_embed.layers.embedding import Embedding
from keras_embed.layers.embedding_bag import EmbeddingBag
from keras_embed.saving import migration

CONFIG_FILE = "projector_config.pbtxt"
CHECKPOINT_PREFIX = "embeddings.ckpt"
# TensorFlow's checkpoint state file, which `tf.train.latest_checkpoint`
# (and so the projector plugin) reads.
STATE_FILE = "checkpoint"
# The layers whose table is written: each has `embeddings`; all but
# DynamicEmbedding have `input_dim` rows, each labelled by a vocabulary's token.
TABLE_LAYERS = (Embedding, EmbeddingBag, DynamicEmbedding, keras.layers.Embedding)


def embedding_layers(model):
    """The `keras_embed.Embedding`, `keras_embed.EmbeddingBag`,
    `keras_embed.DynamicEmbedding` and `keras.layers.Embedding` layers of
    `model`, nested models and wrappers included, in order, each once.

    Args:
        model: a Keras model, or a layer.
    """
    if not isinstance(model, keras.Model):
        return [model] if isinstance(model, TABLE_LAYERS) else []
    return [layer for _, layer in migration.embedding_layers(model, bags=True, dynamic=True)]


def write_projector(log_dir, model, vocabulary=None, layers=None, step=0):
    """Writes the embedding tables of `model` where TensorBoard's projector
    reads them.

    Writes `log_dir/embeddings.ckpt-STEP` (a checkpoint holding each table
    under its layer's name; older ones written here are removed),
    `log_dir/checkpoint`, `log_dir/projector_config.pbtxt` and one
    `metadata-LAYER.tsv` per layer with a vocabulary.

    A `keras_embed.DynamicEmbedding` has no fixed vocabulary: its tensor is
    the rows its keys hold, in the order of `layer.vocabulary()["row"]`
    (the OOV rows and rows no key holds are left out), and its metadata
    file always lists their keys, one a line (a string key as its
    farmhash64 fingerprint, a signed int64).

    Example:

    >>> import os, tempfile
    >>> import keras, numpy as np
    >>> from keras_embed.callbacks import write_projector
    >>> log_dir = tempfile.mkdtemp()
    >>> layer = keras.layers.Embedding(3, 2, name="tags")
    >>> layer.build()
    >>> write_projector(log_dir, [layer], vocabulary={"tags": ["x", "y", "z"]})
    ['tags']
    >>> sorted(os.listdir(log_dir))[:3]
    ['checkpoint', 'embeddings.ckpt-0.data-00000-of-00001', 'embeddings.ckpt-0.index']

    Args:
        log_dir: the folder (TensorBoard's `--logdir`, or one run in it).
        model: a Keras model, a layer or a list of layers.
        vocabulary: tokens labelling the rows: a list, a `TextVectorization`
            or `StringLookup` layer (used for each table with as many rows),
            or a dict of layer name to one of those. Not for a
            `DynamicEmbedding`, whose rows are labelled by their keys.
        layers: the embedding layers (or their names) to write; default:
            every embedding layer of `model`.
        step: the checkpoint's number (the callback gives the epoch).

    Returns:
        The tensor names written: the layers' names.

    Raises:
        ValueError: no embedding layer, a name that is not one, two layers
            of one name, a vocabulary whose length is no table's rows (or
            given for a `DynamicEmbedding`), a quantized table.
    """
    chosen = _chosen_layers(model, layers)
    labels = _labels(chosen, vocabulary)
    os.makedirs(log_dir, exist_ok=True)
    names, tensors = [], []
    for layer in chosen:
        if not layer.built:
            raise ValueError(f"write_projector: {type(layer).__name__} layer "
                             f"'{layer.name}' is not built yet: it has no "
                             "table to write.")
        if getattr(layer, "quantization_mode", None):
            raise ValueError(
                f"write_projector: {type(layer).__name__} layer '{layer.name}' "
                f"is quantized ({layer.quantization_mode}): its table holds "
                "integer codes, not vectors. Leave it out with `layers=`.")
        names.append(layer.name)
        table = tf.convert_to_tensor(layer.embeddings)
        if isinstance(layer, DynamicEmbedding):
            held = layer.vocabulary()
            table = tf.gather(table, held["row"])
            labels[layer.name] = [str(key) for key in held["key"].tolist()]
        tensors.append(tf.cast(table, "float32"))
    prefix = f"{CHECKPOINT_PREFIX}-{int(step)}"
    # SaveV2 names each tensor as given (tf.train.Checkpoint would add
    # "/.ATTRIBUTES/VARIABLE_VALUE"): the projector lists them by name.
    tf.raw_ops.SaveV2(prefix=os.path.join(log_dir, prefix), tensor_names=names,
                      shape_and_slices=[""] * len(names), tensors=tensors)
    entries = []
    for name in names:
        entry = f'embeddings {{\n  tensor_name: "{name}"\n'
        if name in labels:
            metadata = f"metadata-{name}.tsv"
            _write(os.path.join(log_dir, metadata), "".join(
                _label(token) + "\n" for token in labels[name]))
            entry += f'  metadata_path: "{metadata}"\n'
        entries.append(entry + "}\n")
    _write(os.path.join(log_dir, CONFIG_FILE), "".join(entries))
    _write(os.path.join(log_dir, STATE_FILE),
           f'model_checkpoint_path: "{prefix}"\n'
           f'all_model_checkpoint_paths: "{prefix}"\n')
    _remove_older(log_dir, prefix)
    return names


class EmbeddingProjector(keras.callbacks.Callback):
    """Writes a model's embedding tables for TensorBoard's projector every N
    epochs.

    Each table is under its layer's name, rows labelled by a vocabulary where
    given; see `write_projector`. Run `tensorboard --logdir LOG_DIR` and open
    the "Projector" tab. It may share `log_dir` with
    `keras.callbacks.TensorBoard` (which writes its runs in subfolders).

    Example:

    >>> import tempfile
    >>> import keras, numpy as np
    >>> from keras_embed import Embedding
    >>> from keras_embed.callbacks import EmbeddingProjector
    >>> model = keras.Sequential([Embedding(5, 2), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> projector = EmbeddingProjector(tempfile.mkdtemp())
    >>> _ = model.fit(np.array([[1], [2]]), np.zeros((2, 1, 1)), epochs=2,
    ...               verbose=0, callbacks=[projector])
    >>> projector.written
    2

    Args:
        log_dir: the folder to write to (TensorBoard's `--logdir`).
        vocabulary: row labels, as `write_projector`'s.
        layers: the embedding layers or their names; default: all.
        every_n_epochs: write after every N-th epoch (default 1).

    Attributes:
        written: the last epoch written (counted from 1), or `None`.
    """

    def __init__(self, log_dir="logs", vocabulary=None, layers=None,
                 every_n_epochs=1):
        super().__init__()
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError("EmbeddingProjector: `every_n_epochs` must be a "
                             f"positive integer. Received: {every_n_epochs!r}.")
        self.log_dir = os.fspath(log_dir)
        self.vocabulary = vocabulary
        self.layers = layers
        self.every_n_epochs = every_n_epochs
        self.written = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs == 0:
            write_projector(self.log_dir, self.model, self.vocabulary,
                            self.layers, step=epoch + 1)
            self.written = epoch + 1


def _chosen_layers(model, layers):
    if isinstance(model, keras.layers.Layer) and not hasattr(model, "layers"):
        model = [model]
    available = (embedding_layers(model) if not isinstance(model, (list, tuple))
                 else [l for l in model if isinstance(l, TABLE_LAYERS)])
    if layers is not None:
        by_name = {layer.name: layer for layer in available}
        chosen = []
        for wanted in layers:
            name = wanted if isinstance(wanted, str) else getattr(wanted, "name", wanted)
            if name not in by_name:
                raise ValueError(
                    f"write_projector: no embedding layer named {name!r}. "
                    f"Embedding layers: {sorted(by_name) or 'none'}.")
            chosen.append(by_name[name])
        available = chosen
    if not available:
        raise ValueError("write_projector: found no embedding layer "
                         "(keras_embed.Embedding, keras_embed.EmbeddingBag, "
                         "keras_embed.DynamicEmbedding or "
                         "keras.layers.Embedding).")
    names = [layer.name for layer in available]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"write_projector: two embedding layers are named "
                         f"{twice[0]!r}; the projector names tables by layer. "
                         "Choose one with `layers=`.")
    return available


def _labels(layers, vocabulary):
    """{layer name: tokens} for the layers with a vocabulary given
    (`DynamicEmbedding` layers are labelled by their keys later)."""
    if vocabulary is None:
        return {}
    dynamic = {layer.name for layer in layers if isinstance(layer, DynamicEmbedding)}
    rows = {layer.name: layer.input_dim for layer in layers if layer.name not in dynamic}
    if isinstance(vocabulary, dict):
        labels = {}
        for name, tokens in vocabulary.items():
            if name in dynamic:
                raise ValueError(
                    f"write_projector: a vocabulary is given for '{name}', a "
                    "DynamicEmbedding: its rows are labelled by the keys "
                    "holding them (layer.vocabulary()[\"key\"]). Leave it out.")
            if name not in rows:
                raise ValueError(f"write_projector: a vocabulary is given for "
                                 f"{name!r}, which is not an embedding layer "
                                 f"written ({sorted(rows)}).")
            labels[name] = _tokens(tokens)
            if len(labels[name]) != rows[name]:
                raise ValueError(
                    f"write_projector: the vocabulary for '{name}' has "
                    f"{len(labels[name])} tokens, but the layer's table has "
                    f"{rows[name]} rows: they must be equal.")
        return labels
    tokens = _tokens(vocabulary)
    labels = {name: tokens for name, count in rows.items() if count == len(tokens)}
    if not labels:
        raise ValueError(
            f"write_projector: the vocabulary has {len(tokens)} tokens, but no "
            f"table has as many rows ({rows}). Give a dict of layer name to "
            "vocabulary.")
    return labels


def _tokens(vocabulary):
    if hasattr(vocabulary, "get_vocabulary"):
        vocabulary = vocabulary.get_vocabulary()
    return [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in vocabulary]


def _label(token):
    # One column, no header: a tab would start a second, a newline a row.
    return re.sub(r"[\t\r\n]", " ", token) or "(empty)"


def _write(path, text):
    """Writes `path` whole or not at all (TensorBoard may read it meanwhile)."""
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)


def _remove_older(log_dir, prefix):
    pattern = re.compile(re.escape(CHECKPOINT_PREFIX) + r"-\d+\.(index|data-.*)$")
    for name in os.listdir(log_dir):
        if pattern.match(name) and not name.startswith(prefix + "."):
            os.remove(os.path.join(log_dir, name))
