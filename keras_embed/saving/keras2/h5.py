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

>>> from keras_embed.saving.keras2 import h5 as keras2_h5
>>> model, notes = keras2_h5.read_model("keras2_model.h5")  # doctest: +SKIP
"""

import json

import keras

from keras_embed.saving.keras2 import configs as keras2_configs
from keras_embed.saving.keras2 import dynamic_embedding as keras2_dynamic
from keras_embed.saving import load_errors
from keras_embed.saving.keras2 import optimizer as keras2_optimizer
from keras_embed.saving.keras2 import preprocessing as keras2_preprocessing
from keras_embed.saving.migration import build_optimizer

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
    # Keras 3 reads a .h5 file's weights with this function; no public API
    # reads them into a model built from an adapted config.
    from keras.src.legacy.saving.legacy_h5_format import load_weights_from_hdf5_group

    with h5py.File(path, "r") as file:
        model = keras2_configs.model_from_config(json.loads(_text(file.attrs["model_config"])))
        with keras2_preprocessing.weights_without_discretization(
                file["model_weights"]) as (model_weights, summaries), keras2_dynamic.h5_weights(
                model_weights, model) as model_weights:
            load_weights_from_hdf5_group(model_weights, model)
        keras2_dynamic.rebuild_maps(model)
        for name, summary in summaries.items():
            keras2_preprocessing.set_discretization_summary(model.get_layer(name), summary)
        layer_notes = keras2_dynamic.notes(model)
        if not compile:
            return model, layer_notes
        training_config = file.attrs.get("training_config")
        weights = {}
        if "optimizer_weights" in file:
            group = file["optimizer_weights"]
            for name in group.attrs.get("weight_names", []):
                weights[_text(name)] = group[_text(name)][()]
    if training_config is None:
        return model, layer_notes
    try:
        arguments, notes = keras2_configs.compile_arguments(json.loads(_text(training_config)))
        model.compile(**arguments)
        keras2_configs.build_compiled(model)
    except Exception as error:  # Keras raises many kinds here.
        return model, layer_notes + [
            "its training configuration (loss, metrics, optimizer) does not "
            f"load in Keras 3, so the model is not compiled "
            f"({load_errors.reason(error)})"
        ]
    return model, layer_notes + notes + assign_optimizer_state(model, weights)


def _text(attribute):
    return attribute.decode("utf-8") if isinstance(attribute, bytes) else attribute


def assign_optimizer_state(model, weights):
    """Copies a Keras 2 optimizer's state, named as tf-keras names it in
    `.h5` files, into `model.optimizer`.

    Args:
        model: the compiled model, its variables named as in Keras 2.
        weights: weight name (`"iteration:0"`, `"Adam/m/dense/kernel:0"`,
            legacy `"Adam/iter:0"`, `"Adam/dense/kernel/m:0"`) -> NumPy
            array, from the file's `optimizer_weights`.

    Returns:
        Notes: empty if the whole state was copied (or there was none), else
        one saying why none of it was.
    """
    if not weights:
        return []
    build_optimizer(model.optimizer, model.trainable_variables)
    target = keras2_optimizer.inner(model.optimizer)
    kind = type(target).__name__
    current = keras2_optimizer.SLOTS.get(kind, {}) if type(target) is getattr(
        keras.optimizers, kind, None) else {}
    current = {**current, "average": keras2_optimizer.AVERAGES}
    legacy = keras2_optimizer.legacy_table(target)
    state = keras2_optimizer.State()
    written_by_legacy = False
    for name, value in weights.items():
        name = name.removesuffix(":0")
        parts = name.split("/")
        if parts[-1] in ("iteration", "iter"):
            state.iterations = int(value)
            continue
        if parts[-1] == "momentum_cache":  # Legacy Nadam's own schedule.
            continue
        found = _slot_of(parts, model.trainable_variables)
        table = legacy if found and found[2] else current
        if found is None or found[0] not in table:
            return [keras2_optimizer.dropped(
                f"Keras 3's {kind} keeps nothing like Keras 2's '{name}'")]
        slot, variable, written_by_legacy = found
        state.slots.append((table[slot], variable, value, name))
    notes = keras2_optimizer.assign(model, state)
    if not notes and isinstance(target, keras.optimizers.Nadam) and not written_by_legacy and (
            target is model.optimizer):  # (In a LossScaleOptimizer, .keras loses it anyway.)
        notes.append(
            "Nadam's running product of its momentum schedule is not in an .h5 "
            "file: worked out from the step count by Keras 3's formula, which "
            "tf-keras's own product does not follow (a SavedModel directory "
            "keeps it)")
    return notes


def _slot_of(parts, variables):
    """`(slot name, variable, legacy)` for a weight name's parts: a current
    optimizer's `[..., slot, *variable path]` or a legacy one's
    `[..., *variable path, slot]`; the longest variable path that names one
    variable of the model wins. None if none does."""
    best = None
    for start in range(len(parts) - 1):
        for legacy, path, slot in (
            (False, parts[start + 1:], parts[start]),
            (True, parts[start:-1], parts[-1]),
        ):
            path = "/".join(path)
            # Keras 2 names a variable by its layers ("dense/kernel"); Keras
            # 3's path may start with the model's name ("sequential/dense/kernel").
            found = [v for v in variables if v.path == path or v.path.endswith("/" + path)]
            if len(found) == 1 and (best is None or len(path) > best[0]):
                best = (len(path), (slot, found[0], legacy))
    return None if best is None else best[1]
