"""A Keras 2 model's optimizer state, put into the Keras 3 optimizer.

Both formats hold it: a SavedModel directory in its checkpoint, an `.h5`
file in its `optimizer_weights`. Keras 2's optimizers (tf-keras 2.11 and
later) keep their slots in lists (`_momentums`, `_velocities`, ...), one
entry per trainable variable in the order the optimizer was built with;
Keras 3's optimizers keep the same lists under the same names (Lion's
`momentums` excepted). The order is the checkpoint's list of the model's
trainable variables where the directory has one (saved with its traces),
else the model's layers' order (the `N` of `layer-N`). The legacy
optimizers (`tf.keras.optimizers.legacy`) name each slot's variable; every
one of them has a Keras 3 counterpart with the same slots (`LEGACY_SLOTS`).

Beside the slots: the step count; Nadam's product of its momentum schedule
(in a directory, else worked out from the step count); the averages of
`use_ema`; and under `mixed_float16` the loss scale and its count of good
steps. Whatever cannot be carried is said, one note naming it.

Example:

>>> from keras_embed.saving.keras2 import optimizer as keras2_optimizer
>>> notes = keras2_optimizer.assign_optimizer_state(
...     model, checkpoint, pairs)  # doctest: +SKIP
"""

import re

import keras
import numpy as np

from keras_embed.saving.keras2 import dynamic_embedding as keras2_dynamic
from keras_embed.saving.keras2.checkpoint import LAYER_CHILD
from keras_embed.saving.migration import build_optimizer

# tf-keras's optimizers name a slot's variable `<optimizer>/<slot>/<variable
# path>` (`.h5` files): the Keras 3 list that holds the same values.
SLOTS = {
    "Adam": {"m": "_momentums", "v": "_velocities", "vhat": "_velocity_hats"},
    "AdamW": {"m": "_momentums", "v": "_velocities", "vhat": "_velocity_hats"},
    "Nadam": {"m": "_momentums", "v": "_velocities"},
    "Adamax": {"m": "_m", "u": "_u"},
    "SGD": {"m": "momentums"},
    "Adagrad": {"accumulator": "_accumulators"},
    "RMSprop": {"velocity": "_velocities", "momentum": "_momentums",
                "average_gradient": "_average_gradients"},
    "Adadelta": {"accumulated_grad": "_accumulated_grads",
                 "accumulated_delta_var": "_accumulated_delta_vars"},
    "Ftrl": {"accumulator": "_accumulators", "linear": "_linears"},
    "Lion": {"m": "_momentums"},
    "Adafactor": {"r": "_r", "c": "_c", "v": "_v"},
}
# `use_ema`'s averages, in every optimizer.
AVERAGES = "_model_variables_moving_average"
# The legacy optimizers' slot names, and the Keras 3 lists that hold the same
# values (the update rules are the same; legacy Nadam's schedule excepted).
LEGACY_SLOTS = {
    "Adam": {"m": "_momentums", "v": "_velocities", "vhat": "_velocity_hats"},
    "Nadam": {"m": "_momentums", "v": "_velocities"},
    "Adamax": {"m": "_m", "v": "_u"},
    "SGD": {"momentum": "momentums"},
    "Adagrad": {"accumulator": "_accumulators"},
    "RMSprop": {"rms": "_velocities", "momentum": "_momentums", "mg": "_average_gradients"},
    "Adadelta": {"accum_grad": "_accumulated_grads", "accum_var": "_accumulated_delta_vars"},
    "Ftrl": {"accumulator": "_accumulators", "linear": "_linears"},
}
# Keras 2's names of the current optimizers' slot lists that Keras 3 renamed.
RENAMED_LISTS = {("Lion", "momentums"): "_momentums"}


def inner(optimizer):
    """The optimizer that keeps the slots: `optimizer`, or the one a
    `LossScaleOptimizer` wraps."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer


class State:
    """A Keras 2 optimizer's state, read from either format, to be put into
    a Keras 3 optimizer by `assign`.

    Attributes:
        iterations: the step count, or None.
        slots: `(Keras 3 list name, model variable, value, Keras 2 name)`.
        u_product: Nadam's product of its momentum schedule, or None.
        loss_scale: `(scale, good steps)` of a loss-scale optimizer, or None.
    """

    def __init__(self):
        self.iterations = None
        self.slots = []
        self.u_product = None
        self.loss_scale = None


def assign(model, state):
    """Puts `state` into `model.optimizer` (compiled from the same training
    config); returns the notes on what could not be, one at most.

    Nothing is assigned unless everything fits: the state is kept whole or
    dropped whole, and said so.
    """
    optimizer = model.optimizer
    build_optimizer(optimizer, model.trainable_variables)
    target = inner(optimizer)
    trainable = model.trainable_variables
    assignments = []
    for name, variable, value, keras2_name in state.slots:
        value = keras2_dynamic.slot_value(variable, value)  # A tf-keras DynamicEmbedding's rows.
        slots = getattr(target, name, None)
        if isinstance(slots, list) and not slots and (not np.any(value) or _unread(target, name)):
            continue  # A slot Keras 3 does not keep here, and no step reads.
        if not isinstance(slots, list) or len(slots) != len(trainable):
            return [dropped(
                f"Keras 3's {type(target).__name__} keeps nothing like Keras "
                f"2's '{keras2_name}'")]
        # Keras 3 has no public way to find a variable's slot.
        slot = slots[target._get_variable_index(variable)]
        if slot is None or tuple(slot.shape) != np.shape(value):
            if np.shape(value) == () and not np.any(value):
                continue  # Adafactor's placeholder for a variable not factored.
            return [dropped(
                f"Keras 2's '{keras2_name}' has shape {np.shape(value)}, the "
                f"model's slot {None if slot is None else tuple(slot.shape)}")]
        assignments.append((slot, value))
    for slot, value in assignments:
        slot.assign(value)
    if state.iterations is not None:
        target.iterations.assign(state.iterations)
    if isinstance(target, keras.optimizers.Nadam):
        u_product = state.u_product
        if u_product is None:
            u_product = nadam_u_product(target.beta_1, int(target.iterations.numpy()))
        # Keras 3 has no public name for it.
        target._u_product.assign(u_product)
    if state.loss_scale is not None and target is not optimizer:
        scale, good_steps = state.loss_scale
        optimizer.dynamic_scale.assign(scale)
        optimizer.step_counter.assign(good_steps)
    return []


def _unread(optimizer, name):
    """Whether Keras 2's rule for `optimizer` never reads its slots `name`:
    tf-keras's SGD without momentum keeps its last step in `momentums`, and
    multiplies it by 0."""
    return isinstance(optimizer, keras.optimizers.SGD) and name == "momentums" and not optimizer.momentum


def nadam_u_product(beta_1, steps):
    """Nadam's product of `u_t = beta_1 * (1 - 0.5 * 0.96 ** t)` over the
    first `steps` steps, in float32 as Keras 2 and 3 compute it step by step
    (an `.h5` file keeps only the step count)."""
    product = np.float32(1.0)
    for t in range(1, steps + 1):
        u_t = np.float32(beta_1) * (np.float32(1.0) - np.float32(0.5) * np.float32(0.96) ** np.float32(t))
        product = np.float32(product * u_t)
    return product


def assign_optimizer_state(model, checkpoint, pairs):
    """Copies the optimizer state of a Keras 2 SavedModel directory into
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
    state = State()
    scale = children.get("loss_scale")
    if scale is not None:
        scale = checkpoint.children[scale]
        state.loss_scale = (float(checkpoint.value(scale["current_loss_scale"])),
                            int(checkpoint.value(scale["good_steps"])))
    if "_iterations" not in children:
        if "iter" in children or _legacy_slots(checkpoint, optimizer_node):
            return _assign_legacy_state(model, checkpoint, optimizer_node, pairs, state)
        return []
    state.iterations = int(checkpoint.value(children["_iterations"]))
    if "_u_product" in children:
        state.u_product = float(checkpoint.value(children["_u_product"]))
    slot_lists = {
        name: items for name, node in children.items()
        if name != "_variables"
        and (items := checkpoint.variable_list(node)) is not None
    }
    if state.iterations == 0 and not slot_lists:
        return []  # Never trained: nothing to copy.
    target = inner(model.optimizer)
    kind = type(target).__name__
    order = _keras2_trainable_order(model, checkpoint, pairs)
    problem = _slots_problem(model, slot_lists, order, children, checkpoint, pairs)
    if problem is not None:
        return [dropped(problem)]
    for name, items in slot_lists.items():
        for variable in model.trainable_variables:
            node = items[order.index(pairs[id(variable)])]
            state.slots.append((RENAMED_LISTS.get((kind, name), name), variable,
                                checkpoint.value(node), name))
    notes = assign(model, state)
    rate = children.get("_learning_rate")
    if not notes and rate is not None and checkpoint.is_variable(rate) and isinstance(
            target._learning_rate, keras.Variable):
        # The config holds the rate too; the variable, if a callback changed
        # it. (`_learning_rate`: Keras 3 has no public way to tell a rate
        # variable from a schedule.)
        target.learning_rate = float(checkpoint.value(rate))
    return notes


def _legacy_slots(checkpoint, optimizer_node):
    """The legacy optimizer's slot variables: on its own node, or, under a
    loss-scale optimizer, on the one it wraps."""
    slots = list(checkpoint.nodes[optimizer_node].slot_variables)
    for name, child in checkpoint.children[optimizer_node].items():
        if name in ("_optimizer", "inner_optimizer"):
            slots += checkpoint.nodes[child].slot_variables
    return slots


def _assign_legacy_state(model, checkpoint, optimizer_node, pairs, state):
    """As `assign_optimizer_state`, for a `tf.keras.optimizers.legacy`
    optimizer, whose checkpoint names each slot's variable."""
    target = inner(model.optimizer)
    table = legacy_table(target)
    iterations = checkpoint.children[optimizer_node].get("iter")
    if iterations is not None:
        state.iterations = int(checkpoint.value(iterations))
    by_node = {node: variable for variable in model.trainable_variables
               if (node := pairs.get(id(variable))) is not None}
    for slot in _legacy_slots(checkpoint, optimizer_node):
        variable = by_node.get(slot.original_variable_node_id)
        if variable is None or slot.slot_name not in table:
            return [dropped(
                f"Keras 3's {type(target).__name__} keeps nothing like the "
                f"legacy optimizer's '{slot.slot_name}'")]
        state.slots.append((table[slot.slot_name], variable,
                            checkpoint.value(slot.slot_variable_node_id), slot.slot_name))
    return assign(model, state)


def legacy_table(optimizer):
    """The legacy slot names of Keras 3 `optimizer`'s counterpart, and its
    lists that hold them (`{}` for a custom optimizer)."""
    name = type(optimizer).__name__
    if type(optimizer) is not getattr(keras.optimizers, name, None):
        return {}
    return LEGACY_SLOTS.get(name, {})


def dropped(reason):
    return (f"the optimizer's state (slots, step count) was dropped: {reason}; "
            "training resumes with a fresh optimizer")


def _slots_problem(model, slot_lists, order, children, checkpoint, pairs):
    """Why the Keras 2 slot lists cannot be read in the model's order, or
    None."""
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
        if items and len(items) != len(order):
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
