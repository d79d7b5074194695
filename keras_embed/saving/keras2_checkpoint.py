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

`assign_optimizer_state` does the same for the optimizer's slots (Adam's
moments, SGD's momentums, ...) and step count, where the Keras 3 optimizer
keeps the same slots; otherwise it says the state was dropped.

Example:

>>> from keras_embed.saving import keras2_checkpoint
>>> checkpoint = keras2_checkpoint.Checkpoint(
...     "my_model/variables/variables", "my_model")  # doctest: +SKIP
>>> checkpoint.keys[checkpoint.resolve(("root", "layer_with_weights-0",
...                                     "embeddings"))]  # doctest: +SKIP
'layer_with_weights-0/embeddings/.ATTRIBUTES/VARIABLE_VALUE'
"""

import re

import keras
import numpy as np

from keras_embed.saving.keras2_directory import Keras2SavedModelError

_LAYER_CHILD = re.compile(r"layer(?:_with_weights)?-(\d+)$")
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
                and _LAYER_CHILD.match(path[-1]) and "name" in metadata):
            found[metadata["name"]] = path
    return found


def _only_record(directory, name):
    """The node path of the one layer record named `name` anywhere (a
    layer shared between nested models is recorded once), or None."""
    paths = [
        path for path, (_, metadata) in directory.nodes.items()
        if len(path) > 1 and _LAYER_CHILD.match(path[-1])
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


def assign_optimizer_state(model, checkpoint, pairs):
    """Copies the Keras 2 optimizer's step count and slots into
    `model.optimizer` (compiled from the same training config).

    Args:
        model: the compiled Keras 3 model.
        checkpoint: its `Checkpoint`.
        pairs: what `assign_weights` returned.

    Returns:
        A list of notes: empty if the whole state was copied (or there was
        none), else one saying what was dropped and why.
    """
    optimizer_node = checkpoint.children[0].get("optimizer")
    if optimizer_node is None:
        return []
    children = checkpoint.children[optimizer_node]
    if "_iterations" not in children:
        if "iter" in children or checkpoint.nodes[optimizer_node].slot_variables:
            return _assign_legacy_state(model, checkpoint, optimizer_node, pairs)
        return []
    iterations = int(checkpoint.value(children["_iterations"]))
    slot_lists = {
        name: items for name, node in children.items()
        if name != "_variables"
        and (items := checkpoint.variable_list(node)) is not None
    }
    if iterations == 0 and not slot_lists:
        return []  # Never trained: nothing to copy.
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    order = _keras2_trainable_order(model, checkpoint, pairs)
    problem = _slots_problem(optimizer, model, slot_lists, order, children,
                             checkpoint, pairs)
    if problem is not None:
        return [_dropped(problem)]
    for name, items in slot_lists.items():
        slots = getattr(optimizer, name)
        for variable in model.trainable_variables:
            # Keras 3 has no public way to find a variable's slot.
            slot = slots[optimizer._get_variable_index(variable)]
            slot.assign(checkpoint.value(items[order.index(pairs[id(variable)])]))
    optimizer.iterations.assign(iterations)
    rate = children.get("_learning_rate")
    if rate is not None and checkpoint.is_variable(rate) and isinstance(
            optimizer._learning_rate, keras.Variable):
        # The config holds the rate too; the variable, if a callback changed it.
        optimizer.learning_rate = float(checkpoint.value(rate))
    return []


# Keras 2's legacy optimizers' slot names, and the Keras 3 optimizer's
# slot lists that hold the same values (the update rules are the same).
_LEGACY_SLOTS = {
    "Adam": {"m": "_momentums", "v": "_velocities", "vhat": "_velocity_hats"},
    "SGD": {"momentum": "momentums"},
}


def _assign_legacy_state(model, checkpoint, optimizer_node, pairs):
    """As `assign_optimizer_state`, for a `tf.keras.optimizers.legacy`
    optimizer, whose checkpoint names each slot's variable."""
    optimizer = model.optimizer
    name = type(optimizer).__name__
    table = _LEGACY_SLOTS.get(name) if type(optimizer) is getattr(
        keras.optimizers, name, None) else None
    slots = checkpoint.nodes[optimizer_node].slot_variables
    iterations = checkpoint.children[optimizer_node].get("iter")
    if table is None:
        return [_dropped(
            f"it is Keras 2's legacy {name} (tf.keras.optimizers.legacy), "
            "whose slots keras_embed maps only for Adam and SGD; training "
            "resumes with a fresh optimizer"
        )] if slots else []
    optimizer.build(model.trainable_variables)
    by_node = {node: variable for variable in model.trainable_variables
               if (node := pairs.get(id(variable))) is not None}
    assignments = []
    for slot in slots:
        variable = by_node.get(slot.original_variable_node_id)
        target = getattr(optimizer, table.get(slot.slot_name, ""), None)
        if variable is None or not isinstance(target, list) or len(
                target) != len(model.trainable_variables):
            return [_dropped(
                f"Keras 3's {name} keeps no slot like the legacy "
                f"optimizer's '{slot.slot_name}'; training resumes with a "
                "fresh optimizer"
            )]
        # Keras 3 has no public way to find a variable's slot.
        slot_variable = target[optimizer._get_variable_index(variable)]
        if checkpoint.shape(slot.slot_variable_node_id) != tuple(
                slot_variable.shape):
            return [_dropped("its slots do not fit the model's variables")]
        assignments.append((slot_variable, slot.slot_variable_node_id))
    for slot_variable, node in assignments:
        slot_variable.assign(checkpoint.value(node))
    if iterations is not None:
        optimizer.iterations.assign(int(checkpoint.value(iterations)))
    return []


def _dropped(reason):
    return f"the optimizer's state (slots, step count) was dropped: {reason}"


def _slots_problem(optimizer, model, slot_lists, order, children, checkpoint,
                   pairs):
    """Why the Keras 2 slots cannot be copied into `optimizer`, or None."""
    trainable = model.trainable_variables
    if order is None:
        return ("the order of the Keras 2 optimizer's variables cannot be "
                "worked out from the checkpoint")
    everything = children.get("_variables")
    listed = set(checkpoint.variable_list(everything) or []) if (
        everything is not None) else set()
    covered = {children["_iterations"]}.union(*map(set, slot_lists.values()))
    if listed - covered:
        return "some of the Keras 2 optimizer's variables are not slots"
    for name, items in slot_lists.items():
        slots = getattr(optimizer, name, None)
        if not isinstance(slots, list) or len(slots) != len(trainable):
            return (f"Keras 3's {type(optimizer).__name__} keeps no "
                    f"{name} slots as Keras 2's did")
        if len(items) != len(order) or any(
            checkpoint.shape(items[order.index(pairs[id(v)])])
            != tuple(v.shape) for v in trainable
        ):
            return (f"the checkpoint's {name} do not line up with the "
                    "model's trainable variables")
    return None


def _keras2_trainable_order(model, checkpoint, pairs):
    """The checkpoint nodes of the Keras 2 model's trainable variables, in
    the order its optimizer was built with (`model.trainable_variables`);
    None if that cannot be worked out."""
    listed = checkpoint.children[0].get("trainable_variables")
    if listed is not None and checkpoint.variable_list(listed) is not None:
        return checkpoint.variable_list(listed)
    # Saved without traces: Keras 2's order is its layers' order (the N of
    # `layer-N`), each layer's trainable weights in the order Keras 3 keeps
    # them too (the order of .h5 files).
    order = []
    for variable in _in_keras2_order(model, checkpoint, 0, pairs):
        node = pairs.get(id(variable))
        if node is None:
            return None
        if node not in order:
            order.append(node)
    return order


def _in_keras2_order(model, checkpoint, node, pairs):
    """`model`'s trainable weights, its layers in Keras 2's order."""
    numbers = {}
    for name, child in checkpoint.children[node].items():
        match = re.fullmatch(r"layer-(\d+)", name)
        if match:
            numbers[child] = int(match.group(1))
    children = {id(layer): _child_of(layer, checkpoint, node, pairs)
                for layer in model.layers}
    variables = []
    for layer in sorted(model.layers, key=lambda layer: numbers.get(
            children[id(layer)], len(numbers))):
        if isinstance(layer, keras.Model):
            if children[id(layer)] is not None:
                variables += _in_keras2_order(
                    layer, checkpoint, children[id(layer)], pairs)
        else:
            variables += layer.trainable_weights
    return variables


def _child_of(layer, checkpoint, node, pairs):
    """The child of `node` that holds `layer`'s weights, or None."""
    nodes = {pairs.get(id(w)) for w in layer.weights} - {None}
    for name, child in checkpoint.children[node].items():
        if _LAYER_CHILD.match(name) and nodes & set(
                checkpoint.attribute_variables(child).values()):
            return child
    return None
