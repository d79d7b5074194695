"""Keras 2 model configs, made into Keras 3 models: the adaptations that the
`.h5` path (`saved_models`) and the SavedModel path (`keras2_saved_model`)
share.

Keras 3's legacy loader already turns `batch_input_shape`, Keras 2's
`axis` lists and initializer names into their Keras 3 forms. On top of it:

- `Embedding` configs are read as `keras_embed.Embedding`, which keeps
  `input_length` (stock Keras 3 drops it);
- `LSTM` and `GRU` configs lose `time_major`, which Keras 2 wrote in every
  one and Keras 3 rejects.

Example:

>>> from keras_embed.saving import keras2_configs
>>> sorted(keras2_configs.custom_objects())
['Embedding', 'GRU', 'LSTM']
"""

import inspect
import json
import re

import keras

from keras_embed.embedding import Embedding


def custom_objects(user_objects=None):
    """The custom objects a Keras 2 config is loaded with: ours, then
    `user_objects` (which win)."""
    objects = {
        "Embedding": Embedding,
        "LSTM": _without_time_major(keras.layers.LSTM),
        "GRU": _without_time_major(keras.layers.GRU),
    }
    objects.update(user_objects or {})
    return objects


def _without_time_major(layer_class):
    """A stand-in for `layer_class` whose `from_config` drops the
    `time_major` key and makes a `layer_class` layer (not a subclass, so the
    model saves as stock Keras). A class, not a function, so that wrappers
    such as `Bidirectional`, which deserialize their layer themselves, get
    a layer too."""

    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config.pop("time_major", None)
        return layer_class.from_config(config)

    return type(f"Keras2{layer_class.__name__}", (),
                {"from_config": classmethod(from_config)})


def model_from_config(model_config, user_objects=None, safe_mode=True):
    """A Keras 3 model from a Keras 2 model config, as Keras 3 loads a Keras
    2 `.h5` file's config (its legacy config scope and safe mode), with
    `custom_objects(user_objects)`.

    Args:
        model_config: the config, `{"class_name": ..., "config": ...}`, as
            Keras 2 wrote it (JSON-decoded, with its `__tuple__` records).
        user_objects: the user's custom classes and functions, by name.
        safe_mode: as in `keras.models.load_model`: `False` lets a `Lambda`
            layer's saved bytecode run.

    Raises:
        UnknownClassError: if the config names a class that neither Keras
            nor `user_objects` has.
    """
    # No public Keras API reads a Keras 2 config the way load_model reads a
    # Keras 2 .h5 file: these are the calls it makes.
    from keras.src.legacy.saving import json_utils, saving_options
    from keras.src.legacy.saving import saving_utils
    from keras.src.saving import serialization_lib

    config = json_utils.decode(json.dumps(model_config))
    objects = {**custom_objects(user_objects),
               **keras.saving.get_custom_objects()}
    with saving_options.keras_option_scope(use_legacy_config=True), (
            serialization_lib.SafeModeScope(safe_mode)):
        try:
            return saving_utils.model_from_config(
                config, custom_objects=objects)
        except (ValueError, TypeError) as error:
            missing = unknown_class(error)
            if missing is not None:
                raise UnknownClassError(missing) from error
            raise


def compile_arguments(training_config, user_objects=None):
    """`model.compile` arguments from a Keras 2 training config, as Keras 3
    reads a Keras 2 `.h5` file's; and notes on the settings dropped."""
    from keras.src.legacy.saving import json_utils, saving_utils

    config = json_utils.decode(json.dumps(training_config))
    # Keras 3's legacy reader cannot deserialize a loss or metric given by
    # name ("mse": "Could not deserialize 'keras.metrics.mse'"), which
    # Keras 2 wrote as the name; `compile` takes the names as they are.
    names = {}
    for key in ("loss", "metrics", "weighted_metrics"):
        if config.get(key) is not None and _only_names(config[key]):
            names[key], config[key] = config[key], None
    optimizer, notes = optimizer_from_config(config["optimizer_config"])
    if optimizer is not None:
        # Read below; the legacy reader gets a stand-in it can read.
        config["optimizer_config"] = {"class_name": "SGD", "config": {}}
    arguments = saving_utils.compile_args_from_training_config(
        config, custom_objects(user_objects))
    arguments.update(names)
    if optimizer is not None:
        arguments["optimizer"] = optimizer
    return arguments, notes


# Keras 2 optimizer settings that change nothing in Keras 3.
_NO_EFFECT = {"jit_compile", "is_legacy_optimizer"}


def optimizer_from_config(optimizer_config):
    """A Keras 3 optimizer from a Keras 2 optimizer config, if it names one
    of Keras's optimizers (`"Adam"`, or `"Custom>Adam"` as tf-keras 2.11+
    wrote it); and notes on the settings dropped.

    Keras 3's legacy reader makes a default optimizer of `"Custom>Adam"`:
    its learning rate and every other setting would be lost unnoticed.

    Returns:
        `(optimizer, notes)`; `(None, [])` for another optimizer (a custom
        one), left to Keras's reader.
    """
    class_name = str(optimizer_config.get("class_name", ""))
    name = class_name.split(">")[-1] if class_name.startswith("Custom>") else (
        class_name)
    cls = getattr(keras.optimizers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, keras.optimizers.Optimizer)):
        return None, []
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    settings, notes = {}, []
    for key, value in dict(optimizer_config.get("config", {})).items():
        if key == "decay" and not value:
            continue  # Keras 2's legacy optimizers' decay, unused.
        if key in accepted:
            settings[key] = value
        elif key not in _NO_EFFECT:
            notes.append(
                f"the optimizer's setting {key}={value!r} was dropped: "
                f"Keras 3's {name} has no such setting"
                + (" (use a keras.optimizers.schedules.InverseTimeDecay "
                   "learning rate)" if key == "decay" else "")
            )
    rate = settings.get("learning_rate")
    if isinstance(rate, dict):
        settings["learning_rate"] = keras.optimizers.schedules.deserialize(rate)
    return cls(**settings), notes


def _only_names(value):
    if isinstance(value, str):
        return True
    if isinstance(value, dict):
        return "class_name" not in value and all(
            _only_names(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_only_names(v) for v in value)
    return False


def build_compiled(model):
    """Builds a loaded model's compiled loss and metrics, as `load_model`
    does (quietly leaving them for the first step where it cannot)."""
    from keras.src.legacy.saving import saving_utils

    saving_utils.try_build_compiled_arguments(model)


class UnknownClassError(ValueError):
    """A config names a class that is not part of Keras: a custom layer,
    loss or metric to pass in `custom_objects`."""

    def __init__(self, name):
        super().__init__(name)
        self.name = name


def unknown_class(error):
    """The class name in Keras's "Unknown layer: 'Name'" errors, or None."""
    match = re.search(r"Unknown [\w ]+?: '([^']+)'", str(error))
    return match.group(1) if match else None
