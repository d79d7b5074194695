"""A Keras 2 SavedModel's optimizer state, put into the Keras 3 optimizer.

Keras 2's optimizers (tf-keras 2.11 and later) keep their slots in lists
(`_momentums`, `_velocities`, ...), one entry per trainable variable in the
order the optimizer was built with; Keras 3's optimizers keep the same lists
under the same names. The order is the checkpoint's list of the model's
trainable variables where the directory has one (saved with its traces),
else the model's layers' order (the `N` of `layer-N`). The legacy optimizers
(`tf.keras.optimizers.legacy`) name each slot's variable in the checkpoint;
their Adam and SGD slots are Keras 3's Adam and SGD slots. Anything else is
dropped, and said so.

Example:

>>> from keras_embed.saving import keras2_optimizer
>>> notes = keras2_optimizer.assign_optimizer_state(
...     model, checkpoint, pairs)  # doctest: +SKIP
"""

import re

import keras

from keras_embed.saving.keras2_checkpoint import LAYER_CHILD


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
        # The config holds the rate too; the variable, if a callback changed
        # it. (`_learning_rate`: Keras 3 has no public way to tell a rate
        # variable from a schedule.)
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
        if LAYER_CHILD.match(name) and nodes & set(
                checkpoint.attribute_variables(child).values()):
            return child
    return None
