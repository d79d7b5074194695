"""A Keras 2 SavedModel's variables, put into the Keras 3 model rebuilt from it.

The `variables/` checkpoint of a Keras 2 SavedModel is keyed by object-graph
paths (`layer_with_weights-0/embeddings/.ATTRIBUTES/VARIABLE_VALUE`), and
its object graph says which object holds which variable. `assign_weights`
finds each Keras 3 layer's Keras 2 object by the layer's name (the records
in `keras_metadata.pb` name them), then each variable by its attribute path
in that object (`cell/kernel`, `forward_layer/cell/bias`), or, where the
paths differ, by the layer's variable list in the order Keras 2 wrote it
(the order of its `.h5` files). A layer used twice is one object, so one set
of weights; nested models are followed level by level. Every Keras 3 weight
must get a value of its shape, or the checkpoint does not match the model.

`keras2_optimizer` does the same for the optimizer's state.

Example:

>>> from keras_embed.saving.keras2 import checkpoint as keras2_checkpoint
>>> checkpoint = keras2_checkpoint.Checkpoint(
...     "my_model/variables/variables", "my_model")  # doctest: +SKIP
>>> checkpoint.keys[checkpoint.resolve(("root", "layer_with_weights-0",
...                                     "embeddings"))]  # doctest: +SKIP
'layer_with_weights-0/embeddings/.ATTRIBUTES/VARIABLE_VALUE'
"""

import re

import keras

from keras_embed.saving.keras2 import dynamic_embedding as keras2_dynamic
from keras_embed.saving.keras2.directory import Keras2SavedModelError

LAYER_CHILD = re.compile(r"layer(?:_with_weights)?-(\d+)$")
# Children Keras 2 adds to every layer for SavedModel serving, not
# attributes of the layer itself.
_SERVING_CHILDREN = frozenset({
    "variables", "trainable_variables", "non_trainable_variables",
    "regularization_losses", "keras_api", "layers", "metrics",
    "layer_regularization_losses", "layer_metrics", "signatures",
    "_default_save_signature", "state_spec", "_random_generator",
})


class Checkpoint:
    """The checkpoint in a Keras 2 SavedModel's `variables/`: its object
    graph and values, read with TensorFlow's checkpoint reader."""

    def __init__(self, prefix, directory):
        import tensorflow as tf
        from google.protobuf.message import DecodeError
        from tensorflow.core.protobuf import trackable_object_graph_pb2

        self.directory = directory
        try:
            self.reader = tf.train.load_checkpoint(prefix)
            data = self.reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
            graph = trackable_object_graph_pb2.TrackableObjectGraph()
            graph.ParseFromString(data)
        except (tf.errors.OpError, ValueError, IndexError, DecodeError) as error:
            # IndexError: the reader's "Read less bytes than requested".
            raise self.damaged(error) from None
        self.nodes = graph.nodes
        self.children = [
            {child.local_name: child.node_id for child in node.children}
            for node in graph.nodes
        ]
        self.keys = [
            next((a.checkpoint_key for a in node.attributes
                  if a.name == "VARIABLE_VALUE"), None)
            for node in graph.nodes
        ]

    def damaged(self, error):
        text = str(error).strip().splitlines()
        return Keras2SavedModelError(
            f"{self.directory}: its variables/ checkpoint is damaged or "
            f"incomplete ({text[0] if text else type(error).__name__}); was "
            "the copy cut short? Copy the whole directory."
        )

    def value(self, node):
        try:
            return self.reader.get_tensor(self.keys[node])
        except Exception as error:  # TensorFlow's reader raises many kinds.
            raise self.damaged(error) from None

    def shape(self, node):
        return tuple(self.reader.get_variable_to_shape_map()[self.keys[node]])

    def resolve(self, node_path):
        """The node at `node_path` (`("root", "layer-1", ...)`), or None."""
        node = 0
        for name in node_path[1:]:
            node = self.children[node].get(name)
            if node is None:
                return None
        return node

    def is_variable(self, node):
        return self.keys[node] is not None

    def variable_list(self, node):
        """The variables of a list node (children "0", "1", ...), in order;
        None if `node` is not such a list."""
        children = self.children[node]
        if not children or set(children) != {str(i) for i in range(len(children))}:
            return None
        items = [children[str(i)] for i in range(len(children))]
        return items if all(self.is_variable(i) for i in items) else None

    def attribute_variables(self, node):
        """`{attribute path: variable node}` for the variables an object
        holds in its attributes, depth first (`("cell", "kernel")`)."""
        found, seen = {}, {node}

        def visit(current, prefix):
            for name, child in self.children[current].items():
                if name in _SERVING_CHILDREN or name.startswith("__"):
                    continue
                if self.is_variable(child):
                    found.setdefault(prefix + (name,), child)
                elif child not in seen and len(prefix) < 6:
                    seen.add(child)
                    visit(child, prefix + (name,))

        visit(node, ())
        return found


def assign_weights(model, directory, checkpoint):
    """Gives every weight of `model` (rebuilt from `directory`'s config)
    its value in `checkpoint`.

    Returns:
        `{id(keras 3 variable): checkpoint node}` for the weights assigned.

    Raises:
        Keras2SavedModelError: if the checkpoint does not hold a value of
            the right shape for every weight.
    """
    pairs = {}
    _assign_model(model, ("root",), directory, checkpoint, pairs)
    missing = [w.path for w in model.weights if id(w) not in pairs]
    if missing:
        raise _mismatch(directory, f"it has no value for {', '.join(missing)}")
    return pairs


def _assign_model(model, node_path, directory, checkpoint, pairs):
    by_name = _layer_records(directory, node_path)
    for layer in model.layers:
        if not layer.weights:
            continue
        layer_path = by_name.get(layer.name) or _only_record(directory,
                                                             layer.name)
        if layer_path is None:
            raise _mismatch(
                directory,
                f"keras_metadata.pb has no record of layer '{layer.name}'",
            )
        if isinstance(layer, keras.Model):
            _assign_model(layer, layer_path, directory, checkpoint, pairs)
            continue
        node = checkpoint.resolve(layer_path)
        if node is None:
            raise _mismatch(
                directory,
                f"it has no object for layer '{layer.name}' "
                f"({'/'.join(layer_path[1:])})",
            )
        if keras2_dynamic.is_keras2_layer(layer, checkpoint, node):
            keras2_dynamic.assign_from_checkpoint(layer, checkpoint, node, pairs)
            continue
        for variable, variable_node in _pair_layer(layer, node, checkpoint):
            if id(variable) in pairs:
                continue  # A weight shared by two layers.
            shape = checkpoint.shape(variable_node)
            if shape != tuple(variable.shape):
                raise _mismatch(
                    directory,
                    f"layer '{layer.name}' has the weight {variable.path} of "
                    f"shape {tuple(variable.shape)}, and the checkpoint holds "
                    f"{checkpoint.keys[variable_node]} of shape {shape}",
                )
            variable.assign(checkpoint.value(variable_node))
            pairs[id(variable)] = variable_node


def _layer_records(directory, node_path):
    """`{layer name: node path}` for the layers of the model at
    `node_path`, from keras_metadata.pb."""
    found = {}
    for path, (_, metadata) in directory.nodes.items():
        if (len(path) == len(node_path) + 1 and path[:-1] == node_path
                and LAYER_CHILD.match(path[-1]) and "name" in metadata):
            found[metadata["name"]] = path
    return found


def _only_record(directory, name):
    """The node path of the one layer record named `name` anywhere (a
    layer shared between nested models is recorded once), or None."""
    paths = [
        path for path, (_, metadata) in directory.nodes.items()
        if len(path) > 1 and LAYER_CHILD.match(path[-1])
        and metadata.get("name") == name
    ]
    return paths[0] if len(paths) == 1 else None


def _pair_layer(layer, node, checkpoint):
    """`(keras 3 variable, checkpoint node)` for every weight of `layer`."""
    weights = {id(w): w for w in layer.weights}
    pairs = {}
    for attribute_path, variable_node in checkpoint.attribute_variables(
            node).items():
        variable = _follow(layer, attribute_path)
        if id(variable) in weights and pairs.setdefault(
                id(variable), variable_node) != variable_node:
            pairs = {}  # Two values for one weight: the paths do not fit.
            break
    if len(pairs) == len(weights):
        return [(weights[key], value) for key, value in pairs.items()]
    # Keras 2's list of the layer's variables (written with its traced
    # functions), in the order of its .h5 files: trainable first.
    listed = checkpoint.children[node].get("variables")
    listed = None if listed is None else checkpoint.variable_list(listed)
    legacy_order = layer.trainable_weights + layer.non_trainable_weights
    if listed is not None and len(listed) == len(legacy_order):
        return list(zip(legacy_order, listed))
    found = sorted("/".join(p) for p in checkpoint.attribute_variables(node))
    raise Keras2SavedModelError(
        f"{checkpoint.directory}: the variables/ checkpoint does not match "
        f"the model in keras_metadata.pb: layer '{layer.name}' has the "
        f"weights {[w.path for w in layer.weights]}, and the checkpoint "
        f"holds {found or 'none'} for it"
    )


def _follow(obj, attribute_path):
    for name in attribute_path:
        if isinstance(obj, (list, tuple)) and name.isdigit():
            obj = obj[int(name)] if int(name) < len(obj) else None
        else:
            obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj if isinstance(obj, keras.Variable) else None


def _mismatch(directory, what):
    return Keras2SavedModelError(
        f"{directory.path}: the variables/ checkpoint does not match the "
        f"model in keras_metadata.pb: {what}"
    )
