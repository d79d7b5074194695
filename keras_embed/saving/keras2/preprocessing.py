"""What Keras 2 preprocessing layers learned in `adapt`, put into the Keras 3
layers rebuilt from them, where Keras 3 reads it otherwise or not at all.

- `Discretization`: Keras 2 keeps its adapted quantile summary as a weight
  (`summary`), from which its bin boundaries follow; Keras 3 keeps no
  weight (its `.h5` reader then counts one layer too many) and reads the
  summary without working the boundaries out. Here they are, as Keras 3's
  own `finalize_state` works them out after `adapt`.
- Lookup layers in a SavedModel directory: an adapted `StringLookup`, `IntegerLookup` or `TextVectorization` keeps its
vocabulary in neither its config nor the `variables/` checkpoint: its lookup
table is a resource, and the function that fills it, saved in
`saved_model.pb`, takes the tokens and their indices as constants. They are
read from the protocol buffer (nothing of the directory is run) and given to
the Keras 3 layer with `set_vocabulary`, with the IDF weights of `"tf_idf"`
from the checkpoint; every token must then get the index it had.

Example:

>>> from keras_embed.saving.keras2 import preprocessing as keras2_preprocessing
>>> keras2_preprocessing.assign_directory_state(
...     model, directory, checkpoint)  # doctest: +SKIP
"""

import contextlib

import numpy as np

from keras_embed.saving import migration
from keras_embed.saving.keras2.directory import Keras2SavedModelError

LOOKUP_LAYERS = ("StringLookup", "IntegerLookup", "TextVectorization")


def assign_directory_state(model, directory, checkpoint):
    """Sets what every preprocessing layer of `model` learned in Keras 2's
    `adapt`, from a SavedModel directory: lookup layers' vocabularies (one
    given in the config is there already), Discretization's boundaries.

    Raises:
        Keras2SavedModelError: if a vocabulary cannot be found or does not
            give its tokens the indices they had.
    """
    layers = {layer.name: layer for _, layer, _ in migration.all_layers(model)}
    for node_path, (_, metadata) in directory.nodes.items():
        layer = layers.get(metadata.get("name"))
        if metadata.get("class_name") == "Discretization" and layer is not None:
            node = checkpoint.resolve(node_path + ("summary",))
            if node is not None:
                set_discretization_summary(layer, checkpoint.value(node))
        if metadata.get("class_name") not in LOOKUP_LAYERS:
            continue
        config = metadata.get("config", {})
        layer = layers.get(metadata.get("name"))
        if layer is None or config.get("has_input_vocabulary"):
            continue
        lookup_path = node_path + (("_lookup_layer",) if metadata["class_name"] == "TextVectorization"
                                   else ())
        table = _table(directory, lookup_path + ("lookup_table",))
        if table is None:
            raise Keras2SavedModelError(
                f"{directory.path}: layer '{layer.name}' ({metadata['class_name']}): "
                "its vocabulary is not in saved_model.pb where Keras 2 keeps it; "
                "set it with layer.set_vocabulary() after loading")
        keys, values = table
        tokens = [_token(keys[i]) for i in np.argsort(values)]
        idf_node = checkpoint.resolve(lookup_path + ("idf_weights",))
        idf = checkpoint.value(idf_node) if config.get("output_mode") == "tf_idf" else None
        _set(layer, tokens, idf)
        vocabulary = list(layer.get_vocabulary())
        if [vocabulary.index(token) for token in tokens] != sorted(int(v) for v in values):
            raise Keras2SavedModelError(
                f"{directory.path}: layer '{layer.name}' ({metadata['class_name']}): "
                "Keras 3 gives its tokens other indices than Keras 2 did")


def set_discretization_summary(layer, summary):
    """Gives an adapted Keras 3 `Discretization` layer Keras 2's summary and
    the bin boundaries that follow from it (unless it has boundaries)."""
    if layer.bin_boundaries is None and layer.num_bins is not None:
        layer.summary = summary
        layer.finalize_state()


@contextlib.contextmanager
def weights_without_discretization(group):
    """A Keras 2 `.h5` file's `model_weights` group as Keras 3 counts its
    layers' weights, and `{layer name: summary}` of its Discretization
    layers (whose summary Keras 3 keeps as no weight): the group itself if
    it has none, else an in-memory copy that leaves their weights out."""
    import io

    import h5py

    summaries = {}
    for name in group:
        names = [n.decode("utf-8") if isinstance(n, bytes) else n
                 for n in group[name].attrs.get("weight_names", [])]
        if len(names) == 1 and names[0].split("/")[-1].startswith("summary"):
            summaries[name] = group[name][names[0]][()]
    if not summaries:
        yield group, {}
        return
    with h5py.File(io.BytesIO(), "w") as copy:
        group.file.copy(group, copy, name="model_weights")
        for name in summaries:
            copy["model_weights"][name].attrs["weight_names"] = []
        yield copy["model_weights"], summaries


def _set(layer, tokens, idf_weights):
    """Sets `tokens` as the vocabulary; with IDF weights, those of the
    special tokens too (Keras 2's, not Keras 3's average)."""
    if idf_weights is None:
        layer.set_vocabulary(tokens)
        return
    # A first pass gives the special tokens (mask, OOV) that lead the
    # vocabulary; with them, set_vocabulary takes every weight as given.
    layer.set_vocabulary(tokens, idf_weights=np.ones(len(tokens), "float32"))
    vocabulary = list(layer.get_vocabulary())
    if len(vocabulary) != len(idf_weights):
        raise Keras2SavedModelError(
            f"layer '{layer.name}': {len(idf_weights)} IDF weights for a vocabulary "
            f"of {len(vocabulary)}")
    layer.set_vocabulary(vocabulary, idf_weights=idf_weights)


def _table(directory, node_path):
    """`(keys, values)` that the function filling the table at `node_path`
    (in saved_model.pb's object graph) imports, or None."""
    import tensorflow as tf

    graph = directory.meta_graph.object_graph_def
    node = 0
    for name in node_path[1:]:
        node = next((c.node_id for c in graph.nodes[node].children if c.local_name == name), None)
        if node is None:
            return None
    initialize = next((c.node_id for c in graph.nodes[node].children
                       if c.local_name == "_initialize"), None)
    if initialize is None or not graph.nodes[initialize].function.concrete_functions:
        return None
    function = graph.concrete_functions[graph.nodes[initialize].function.concrete_functions[0]]
    constants = {n.name: n for n in directory.meta_graph.graph_def.node if n.op == "Const"}
    values = [
        tf.make_ndarray(constants[graph.nodes[i].constant.operation].attr["value"].tensor)
        for i in function.bound_inputs if graph.nodes[i].WhichOneof("kind") == "constant"
    ]
    if len(values) != 2 or len(values[0]) != len(values[1]):
        return None
    return values[0], values[1]


def _token(key):
    return key.decode("utf-8") if isinstance(key, bytes) else key.item()
