"""Copies of layers that keep their state, for `swap` and `unswap`.

`keras.models.clone_model` copies a layer as `cls.from_config(get_config())`
and then its weights. Two kinds of layers do not survive that (stock
`clone_model` fails on both):

- a layer whose config holds a live function, such as `TextVectorization`
  with a custom `standardize`: `get_config` gives the function itself, but
  `from_config` expects its serialized form ("Could not parse config");
- a layer whose state is not in its weights: the vocabulary of an adapted
  `TextVectorization`, `StringLookup` or `IntegerLookup` lives in a lookup
  table, which Keras saves as an asset ("Table not initialized" on predict),
  and `Normalization` computes its mean and variance from its weights only
  when they are loaded.

`fresh_copy` makes the layer from its config (serializing its functions
first); `copy_state` then moves the state the way Keras's own saving does,
through `save_own_variables` / `load_own_variables` and `save_assets` /
`load_assets`.

Example:

>>> import keras, numpy as np
>>> lookup = keras.layers.StringLookup()
>>> lookup.adapt(["cat", "dog", "cat"])
>>> copy = fresh_copy(lookup)
>>> copy_state(lookup, copy)
>>> copy(np.array(["dog", "cat", "eel"])).numpy().tolist()
[2, 1, 0]
"""

import inspect
import tempfile

import keras


def fresh_copy(layer):
    """A new layer of `layer`'s class and config, without its state."""
    config = layer.get_config()
    functions = {
        key: value for key, value in config.items()
        if inspect.isfunction(value) or inspect.isbuiltin(value)
    }
    if not functions:
        return layer.__class__.from_config(config)
    # `from_config` deserializes these fields (Keras saves them serialized);
    # the functions are handed to it by name, as a file's loader would find
    # them registered.
    custom_objects = {}
    for key, function in functions.items():
        config[key] = keras.saving.serialize_keras_object(function)
        custom_objects[keras.saving.get_registered_name(function)] = function
        custom_objects[function.__name__] = function
    with keras.saving.custom_object_scope(custom_objects):
        return layer.__class__.from_config(config)


def keeps_state_outside_weights(layer):
    """Whether `layer` has state that `get_weights` / `set_weights` miss: it
    saves assets, or loads its variables its own way."""
    load = getattr(type(layer), "load_own_variables", None)
    if load is None:  # An op in a functional model (`x + y`), not a layer.
        return False
    return hasattr(layer, "save_assets") or load is not keras.layers.Layer.load_own_variables


def copy_state(old, new):
    """Gives the built layer `new` the state of `old`, as a `.keras` file
    would: its own variables, then its assets (files in a folder)."""
    store = {}
    old.save_own_variables(store)
    if store:
        new.load_own_variables(store)
    if hasattr(old, "save_assets") and hasattr(new, "load_assets"):
        with tempfile.TemporaryDirectory() as folder:
            old.save_assets(folder)
            new.load_assets(folder)
