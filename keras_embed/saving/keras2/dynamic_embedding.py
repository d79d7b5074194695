"""tf-keras's own `tf_keras.layers.experimental.DynamicEmbedding`, read as
`keras_embed.DynamicEmbedding`, from `.h5` files and SavedModel directories.

tf-keras's layer looks a key up in its `vocabulary` weight (the first place
holding it) and gives the key that row of its table (`embedding_layer`,
`input_dim + num_oov_indices` rows); a key not there gets row `input_dim`,
its OOV row (the other OOV rows are never read). Beside it, a frequency
table (`vocabulary_table_keys`, `vocabulary_table_values`: in how many
batches each key was seen, padded with -1 counts) from which
`UpdateEmbeddingCallback` picks a new vocabulary. Its config's `input_dim`
is the table's rows, OOV rows included.

Here it becomes a `keras_embed.DynamicEmbedding` of `capacity = input_dim`
(tf-keras's argument: config `input_dim - num_oov_indices`), `oov="learned"`
(its OOV row is tf-keras's), `eviction="lfu"`: each key of the vocabulary
holds the row tf-keras gave it (a key repeated, the first), with its count
from the frequency table, so that a key's vector is tf-keras's, bit for bit.
The optimizer's slots of the table follow its rows (`slot_value`).

What differs is said in one note per layer (`notes`): training admits keys
at every step, not when the callback runs; keys tf-keras counted without
giving them a row, and OOV rows it never read, are dropped.

Example:

>>> from keras_embed.saving.keras2 import dynamic_embedding as keras2_dynamic
>>> keras2_dynamic.notes(model)  # doctest: +SKIP
["layer 'ids' (tf-keras DynamicEmbedding) is a keras_embed.DynamicEmbedding ..."]
"""

import contextlib

import numpy as np

from keras_embed.layers.dynamic_embedding import DynamicEmbedding

CLASS_NAME = "DynamicEmbedding"
# tf-keras's weights of the layer, in the order it writes them.
WEIGHTS = ("embeddings", "vocabulary_table_keys", "vocabulary_table_values", "vocabulary")
# Where its SavedModel checkpoint keeps them, under the layer's object.
CHECKPOINT_PATHS = (("embedding_layer", "embeddings"),
                    ("dynamic_lookup_layer", "vocabulary_table_keys"),
                    ("dynamic_lookup_layer", "vocabulary_table_values"),
                    ("dynamic_lookup_layer", "vocabulary"))
_CONFIG_FIELDS = ("input_dim", "output_dim", "initial_vocabulary", "num_oov_indices")
_NOTE = "_keras2_dynamic_embedding_note"
_SOURCE_ROWS = "_keras2_source_rows"


def _prefix(name):
    return f"layer '{name}' (tf-keras DynamicEmbedding)"


class Keras2DynamicEmbedding:
    """A stand-in for tf-keras's class whose `from_config` makes the
    `keras_embed.DynamicEmbedding` that holds its state."""

    @classmethod
    def from_config(cls, config, custom_objects=None):
        missing = [field for field in _CONFIG_FIELDS if field not in config]
        if missing:
            raise ValueError(
                f"layer '{config.get('name')}' (DynamicEmbedding): its config lacks "
                f"{', '.join(missing)}, so it is not tf-keras's DynamicEmbedding; if the "
                "class is yours, pass it in custom_objects")
        vocabulary = config["initial_vocabulary"]
        strings = any(isinstance(key, (str, bytes)) for key in vocabulary)
        kwargs = {key: config[key] for key in ("name", "dtype", "trainable") if key in config}
        return DynamicEmbedding(
            capacity=config["input_dim"] - config["num_oov_indices"], output_dim=config["output_dim"],
            key_dtype="string" if strings else "int64", oov="learned", eviction="lfu",
            embeddings_initializer=config.get("embedding_initializer", "uniform"), **kwargs)


def _keys(values):
    """int64 keys of tf-keras's keys (strings by their fingerprint, as our
    layer keys them)."""
    from keras_embed.layers.key_map import fingerprints

    values = np.asarray(values)
    if values.dtype.kind in "OSU":
        return fingerprints(np.asarray(values, object)).numpy() if values.size else (
            np.zeros([0], np.int64))
    return values.astype(np.int64)


def layer_state(layer, embeddings, table_keys, table_counts, vocabulary):
    """Our layer's weights (`layer._trainable_variables +
    _non_trainable_variables` order) from tf-keras's four; records the note
    and the rows the table's slots follow on the layer.

    Raises:
        ValueError: if tf-keras's table does not have the rows and width
            the config gives.
    """
    capacity, width = layer.capacity, layer.output_dim
    if embeddings.ndim != 2 or embeddings.shape[0] <= capacity or embeddings.shape[1] != width:
        raise ValueError(
            f"{_prefix(layer.name)}: its table has shape {embeddings.shape}, where its config "
            f"(input_dim={capacity} and its OOV rows, output_dim={width}) needs at least "
            f"({capacity + 1}, {width}); the file does not match its config")
    keys = _keys(vocabulary)
    within = keys[:capacity]  # tf-keras's rows of the keys past input_dim are none of theirs.
    _, first = np.unique(within, return_index=True)
    held = np.sort(first)  # Each key's first place: the row tf-keras looked up.
    rows_used = len(held)
    free = np.setdiff1d(np.arange(capacity), held)
    source_rows = np.concatenate([held, free, [capacity]]).astype(np.int64)
    counted = np.asarray(table_counts) >= 0  # Padding has count -1.
    counts_of = dict(zip(_keys(np.asarray(table_keys)[counted]).tolist(),
                         np.asarray(table_counts)[counted].tolist()))
    held_keys = within[held]
    counts = np.zeros([capacity], np.int32)
    counts[:rows_used] = [counts_of.get(key, 0) for key in held_keys.tolist()]
    row_keys = np.zeros([capacity], np.int64)
    row_keys[:rows_used] = held_keys
    state = [np.asarray(embeddings)[source_rows], row_keys, counts, np.zeros([capacity], np.int32),
             np.array(rows_used, np.int32), np.array(0, np.int64), np.zeros([4], np.float32),
             np.asarray(layer._map_stamp)]
    unheld = len(set(counts_of) - set(held_keys.tolist()))
    setattr(layer, _NOTE, _note(layer, rows_used, len(within) - rows_used, len(keys) - len(within),
                                unheld, embeddings.shape[0] - capacity))
    setattr(layer.embeddings, _SOURCE_ROWS, source_rows)
    return state


def _note(layer, keys, repeated, past, unheld, oov_rows):
    parts = [
        f"{_prefix(layer.name)} is a keras_embed.DynamicEmbedding holding its {keys} keys in the "
        "rows tf-keras gave them, and its OOV row: lookups give tf-keras's vectors; training now "
        "admits new keys at every step, taking the least counted key's row when full "
        "(tf-keras changed its vocabulary only when UpdateEmbeddingCallback ran), and adds "
        "occurrences to the counts tf-keras kept (batches a key was seen in)"]
    if repeated:
        parts.append(f"{repeated} repeated keys of its vocabulary hold their first row, "
                     "the one tf-keras looked up")
    if past:
        parts.append(f"{past} keys past input_dim={layer.capacity} (tf-keras gave the first "
                     "the OOV row, and failed on the others) hold no row")
    if unheld:
        parts.append(f"{unheld} keys tf-keras counted without giving them a row are dropped")
    if oov_rows > 1:
        parts.append(f"{oov_rows - 1} OOV rows tf-keras never read (num_oov_indices={oov_rows}) "
                     "are dropped")
    return "; ".join(parts)


def layers_of(model):
    """The `keras_embed.DynamicEmbedding` layers of `model` read from
    tf-keras's: `(top level, nested)` lists."""
    from keras_embed.saving import migration

    top = [layer for layer in model.layers if isinstance(layer, DynamicEmbedding)]
    nested = [layer for _, layer, _ in migration.all_layers(model)
              if isinstance(layer, DynamicEmbedding) and layer not in top]
    return top, nested


@contextlib.contextmanager
def h5_weights(group, model):
    """A Keras 2 `.h5` file's `model_weights` group with each tf-keras
    DynamicEmbedding's four weights replaced by our layer's: the group
    itself if there is none, else an in-memory copy.

    Raises:
        ValueError: for such a layer inside a nested model, a file tf-keras
            cut short (a string vocabulary), or weights that do not match.
    """
    import io

    import h5py

    top, nested = layers_of(model)
    if nested:
        raise ValueError(
            f"{_prefix(nested[0].name)}: inside a nested model, it converts from a SavedModel "
            "directory only (tf-keras writes it there too: model.save(path, save_format='tf'))")
    if not top:
        yield group
        return
    with h5py.File(io.BytesIO(), "w") as copy:
        group.file.copy(group, copy, name="model_weights")
        weights = copy["model_weights"]
        for layer in top:
            weights[layer.name].attrs["weight_names"] = _rewritten(layer, weights[layer.name])
        yield weights


def _rewritten(layer, layer_group):
    """Writes our layer's weights into its group (in place); returns their
    names."""
    names = [n.decode("utf-8") if isinstance(n, bytes) else n
             for n in layer_group.attrs.get("weight_names", [])]
    by_weight = {name.split("/")[-1].removesuffix(":0"): name for name in names}
    absent = [w for w in WEIGHTS if w not in by_weight or by_weight[w] not in layer_group]
    if absent:
        raise ValueError(
            f"{_prefix(layer.name)}: the file holds no {', '.join(absent)}: tf-keras cannot "
            "write a string vocabulary to .h5 and stops there; save the model as a SavedModel "
            "directory (save_format='tf') and convert that")
    values = [layer_group[by_weight[w]][()] for w in WEIGHTS]
    state = layer_state(layer, *values)
    for name in names:
        if name in layer_group:
            del layer_group[name]
    written = []
    for variable, value in zip(layer._trainable_variables + layer._non_trainable_variables, state):
        written.append(f"{variable.path}:0")
        layer_group.create_dataset(written[-1], data=value)
    return written


def is_keras2_layer(layer, checkpoint, node):
    """Whether `layer` is ours, read from tf-keras's DynamicEmbedding at
    checkpoint `node`."""
    return isinstance(layer, DynamicEmbedding) and all(
        name in checkpoint.children[node] for name in ("embedding_layer", "dynamic_lookup_layer"))


def assign_from_checkpoint(layer, checkpoint, node, pairs):
    """Gives `layer` the state of tf-keras's layer at checkpoint `node`;
    records in `pairs` the table's node (the optimizer's slots follow it),
    and None for the weights tf-keras has none like."""
    from keras_embed.saving.keras2.directory import Keras2SavedModelError

    found = checkpoint.attribute_variables(node)
    absent = [path[-1] for path in CHECKPOINT_PATHS if path not in found]
    if absent:
        raise Keras2SavedModelError(
            f"{checkpoint.directory}: {_prefix(layer.name)}: its variables/ checkpoint holds "
            f"no {', '.join(absent)}")
    values = [checkpoint.value(found[path]) for path in CHECKPOINT_PATHS]
    try:
        state = layer_state(layer, *values)
    except ValueError as error:
        raise Keras2SavedModelError(f"{checkpoint.directory}: {error}") from None
    for variable, value in zip(layer._trainable_variables + layer._non_trainable_variables, state):
        variable.assign(value)
        pairs[id(variable)] = None
    pairs[id(layer.embeddings)] = found[CHECKPOINT_PATHS[0]]
    layer._rebuild_map()


def rebuild_maps(model):
    """Rebuilds the key map of every layer read from tf-keras's (after its
    weights were assigned by Keras's `.h5` reader)."""
    for layer in layers_of(model)[0]:
        if hasattr(layer, _NOTE):
            layer._rebuild_map()


def notes(model):
    """The note on each layer read from tf-keras's DynamicEmbedding."""
    from keras_embed.saving import migration

    return [getattr(layer, _NOTE) for _, layer, _ in migration.all_layers(model)
            if hasattr(layer, _NOTE)]


def slot_value(variable, value):
    """An optimizer slot of tf-keras's table, in the rows of ours: the
    value itself for any other variable."""
    rows = getattr(variable, _SOURCE_ROWS, None)
    if rows is None or np.ndim(value) != 2:
        return value
    return np.asarray(value)[rows]
