"""A Keras 2 (tf-keras) `.h5` model compiled as it was saved: its training
config read with Keras 2's settings, its optimizer's step count and slots.

Keras 3's legacy `.h5` reader loads such a file's layers and weights, but
not its training: it makes a default optimizer of tf-keras's
`"Custom>Adam"` (learning rate 0.001 whatever was saved), fails on a loss or
metric saved by name (`"mse"`), and drops the optimizer's state with only a
logged warning. Here the model is loaded uncompiled by that reader, then
compiled from its `training_config` by `keras2_configs.compile_arguments`
(as a Keras 2 SavedModel directory is), and its optimizer state is copied
from the file's `optimizer_weights`.

Example:

>>> from keras_embed.saving import keras2_h5
>>> model, notes = keras2_h5.read_model("keras2_model.h5")  # doctest: +SKIP
"""

import json
import re

import keras

from keras_embed.saving import keras2_configs

# tf-keras's optimizers (2.11 and later) name a slot `<optimizer>/<slot>/
# <variable path>`; the Keras 3 optimizer's list that holds the same values.
_SLOTS = {
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
}


def read_model(path, compile=True):
    """The model in a Keras 2 `.h5` file, and notes on what did not load.

    Args:
        path: a `.h5` file written by Keras 2.
        compile: whether to compile it with its saved training config.

    Returns:
        `(model, notes)`: notes are sentences on the settings or state that
        were dropped, empty when everything loaded.
    """
    import h5py

    model = keras.models.load_model(
        path, custom_objects=keras2_configs.custom_objects(), compile=False
    )
    if not compile:
        return model, []
    with h5py.File(path, "r") as file:
        training_config = file.attrs.get("training_config")
        state = {}
        if "optimizer_weights" in file:
            group = file["optimizer_weights"]
            for name in group.attrs.get("weight_names", []):
                name = name.decode("utf-8") if isinstance(name, bytes) else name
                state[name] = group[name][()]
    if training_config is None:
        return model, []
    if isinstance(training_config, bytes):
        training_config = training_config.decode("utf-8")
    try:
        arguments, notes = keras2_configs.compile_arguments(json.loads(training_config))
        model.compile(**arguments)
        keras2_configs.build_compiled(model)
    except Exception as error:  # Keras raises many kinds here.
        return model, [
            "its training configuration (loss, metrics, optimizer) does not "
            f"load in Keras 3, so the model is not compiled "
            f"({str(error).strip().splitlines()[0]})"
        ]
    return model, notes + assign_optimizer_state(model, state)


def assign_optimizer_state(model, state):
    """Copies a Keras 2 optimizer's step count and slots, named as tf-keras
    names them in `.h5` files, into `model.optimizer`.

    Args:
        model: the compiled model, its variables named as in Keras 2.
        state: weight name (`"iteration:0"`, `"Adam/m/dense/kernel:0"`) ->
            NumPy array, from the file's `optimizer_weights`.

    Returns:
        Notes: empty if the whole state was copied (or there was none), else
        one saying why none of it was.
    """
    if not state:
        return []
    optimizer = model.optimizer
    kind = type(optimizer).__name__
    table = _SLOTS.get(kind) if type(optimizer) is getattr(
        keras.optimizers, kind, None) else None
    if table is None:
        return [_dropped(f"keras_embed maps the slots of Keras's {', '.join(_SLOTS)} only")]
    optimizer.build(model.trainable_variables)
    assignments = []
    iterations = None
    for name, value in state.items():
        name = name.removesuffix(":0")
        if name == "iteration":
            iterations = int(value)
            continue
        match = re.fullmatch(r"[^/]+/([^/]+)/(.+)", name)
        slots = getattr(optimizer, table.get(match.group(1), ""), None) if match else None
        # Keras 2 names a variable by its layers ("dense/kernel"); Keras 3's
        # path starts with the model's name ("sequential/dense/kernel").
        found = [v for v in model.trainable_variables if match and (
            v.path == match.group(2) or v.path.endswith("/" + match.group(2)))]
        if not isinstance(slots, list) or len(found) != 1:
            return [_dropped(
                f"its variable '{name}' is not a slot of a variable of the "
                f"model that Keras 3's {kind} keeps"
            )]
        # Keras 3 has no public way to find a variable's slot.
        slot = slots[optimizer._get_variable_index(found[0])]
        if tuple(slot.shape) != value.shape:
            return [_dropped(f"its variable '{name}' has shape {value.shape}, "
                             f"the model's slot {tuple(slot.shape)}")]
        assignments.append((slot, value))
    for slot, value in assignments:
        slot.assign(value)
    if iterations is not None:
        optimizer.iterations.assign(iterations)
    return []


def _dropped(reason):
    return (f"the optimizer's state (slots, step count) was dropped: {reason}; "
            "training resumes with a fresh optimizer")
