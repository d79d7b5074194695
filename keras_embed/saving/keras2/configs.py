"""Keras 2 model configs, made into Keras 3 models: the adaptations that the
`.h5` path (`keras2_h5`) and the SavedModel path (`keras2_saved_model`)
share.

Keras 3's legacy loader already turns `batch_input_shape`, Keras 2's
`axis` lists and initializer names into their Keras 3 forms. On top of it:

- `Embedding` configs are read as `keras_embed.Embedding`, which keeps
  `input_length` (stock Keras 3 drops it) and `batch_input_shape`;
- Keras 2's dtype policies (`{"class_name": "Policy", ...}`, as
  `mixed_float16` models hold them) are given as their names, which Keras 3
  reads (its loader fails on the record: "'str' object has no attribute
  'quantization_mode'");
- `LSTM` and `GRU` configs lose `time_major`, which Keras 2 wrote in every
  one and Keras 3 rejects, wherever they are (inside `Bidirectional` too);
- a layer inside a wrapper gets the module Keras 3 finds it by;
- a `Lambda` layer's saved lambda is read in Keras 3's form, so that
  Keras's safe mode decides whether its bytecode is loaded;
- a nested Sequential model's calls are numbered as Keras 3 numbers them.

Example:

>>> from keras_embed.saving.keras2 import configs as keras2_configs
>>> sorted(keras2_configs.custom_objects())
['DynamicEmbedding', 'Embedding', 'Lambda']
"""

import inspect
import json
import re

import keras

from keras_embed.layers.embedding import Embedding


def custom_objects(user_objects=None):
    """The custom objects a Keras 2 config is loaded with: ours, then
    `user_objects` (which win)."""
    from keras_embed.saving.keras2.dynamic_embedding import Keras2DynamicEmbedding

    objects = {"Embedding": _Keras2Embedding, "Lambda": _Keras2Lambda,
               "DynamicEmbedding": Keras2DynamicEmbedding}
    objects.update(user_objects or {})
    return objects


class _Keras2Embedding:
    """A stand-in for `keras_embed.Embedding` whose `from_config` gives back
    Keras 2's `batch_input_shape` its name: Keras 3's legacy loader renames
    it `input_shape`, batch dim included, and our `input_shape` (as Keras
    2's constructor argument) has none."""

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if "input_shape" in config and "batch_input_shape" not in config:
            config["batch_input_shape"] = config.pop("input_shape")
        return Embedding.from_config(config)


class _Keras2Lambda:
    """A stand-in for `keras.layers.Lambda` whose `from_config` reads Keras
    2's record of a lambda (`[base64 bytecode, defaults, closure]`) as
    Keras 3's (`{"class_name": "__lambda__", ...}`), so that Keras 3's
    safe mode refuses it with its own message, and `safe_mode=False` loads
    it (Keras 3 reads the same bytecode format). Keras 3's legacy reader
    fails on the Keras 2 record ("unsupported callable") in both modes."""

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("function", "output_shape"):
            value = config.get(key)
            if (isinstance(value, (list, tuple)) and len(value) == 3
                    and isinstance(value[0], str)):
                code, defaults, closure = value
                config[key] = {"class_name": "__lambda__", "config": {
                    "code": code, "defaults": defaults, "closure": closure}}
        return keras.layers.Lambda.from_config(
            config, custom_objects=custom_objects)


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

    config = keras3_forms(json_utils.decode(json.dumps(model_config)))
    _renumber_nested_sequentials(config)
    _without_input_shapes(config)
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
            vectorization = _counting_text_vectorization(model_config)
            if vectorization is not None:
                raise ValueError(
                    f"layer '{vectorization['name']}' (TextVectorization, output_mode="
                    f"'{vectorization['output_mode']}'): for a column of strings, shape "
                    "(batch, 1), Keras 3 works its output shape out with one axis more "
                    "than it returns, so the layers after it cannot be built; rebuild the "
                    "model in Keras 3 with the string Input of shape () (one string an "
                    f"example) and set its vocabulary ({error})") from error
            raise


# Where a wrapper (`Bidirectional`, `TimeDistributed`, an RNN and its cells)
# keeps the layers it wraps: Keras 3 reads them by their module, which Keras
# 2 did not write.
_WRAPPED = ("layer", "backward_layer", "cell", "cells")


def keras3_forms(value):
    """A Keras 2 config (or any part of one) with the records Keras 3 reads
    otherwise rewritten: dtype policies as their names, no `time_major` in an
    `LSTM` or `GRU` config, and the module of a wrapped Keras layer."""
    if isinstance(value, list):
        return [keras3_forms(item) for item in value]
    if not isinstance(value, dict):
        return value
    if value.get("class_name") == "Policy" and set(value.get("config") or {}) == {"name"}:
        return value["config"]["name"]
    value = {key: keras3_forms(item) for key, item in value.items()}
    if value.get("class_name") in ("LSTM", "GRU") and isinstance(value.get("config"), dict):
        value["config"].pop("time_major", None)
    inner = value.get("config")
    cls = getattr(keras.layers, str(value.get("class_name")), None)
    if isinstance(inner, dict) and isinstance(cls, type) and not _takes_any_keyword(cls):
        # Such as Discretization: Keras 2 wrote `trainable` and `batch_input_shape`.
        accepted = set(inspect.signature(cls.__init__).parameters)
        value["config"] = inner = {k: v for k, v in inner.items() if k in accepted}
    for key in _WRAPPED if isinstance(inner, dict) else ():
        for layer in inner[key] if isinstance(inner.get(key), list) else [inner.get(key)]:
            if isinstance(layer, dict) and "module" not in layer and isinstance(
                    getattr(keras.layers, str(layer.get("class_name")), None), type):
                layer["module"] = "keras.layers"
    return value


def _counting_text_vectorization(config):
    """The config of a TextVectorization layer in `config` whose output is
    a count over the vocabulary (not "int"), or None."""
    if isinstance(config, list):
        return next(filter(None, map(_counting_text_vectorization, config)), None)
    if not isinstance(config, dict):
        return None
    inner = config.get("config")
    if config.get("class_name") == "TextVectorization" and isinstance(inner, dict) and (
            inner.get("output_mode", "int") != "int"):
        return inner
    return next(filter(None, map(_counting_text_vectorization, config.values())), None)


def _takes_any_keyword(cls):
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())


def _without_input_shapes(config):
    """Drops, in place, the input shape Keras 2 recorded in the configs of a
    functional model's layers (its `Input`s give the shapes; `StringLookup`
    and `IntegerLookup` refuse the key). Our Embedding keeps its own: its
    `input_length` rules read it."""
    inner = config.get("config") if isinstance(config, dict) else None
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list):
        return
    for layer in layers:
        _without_input_shapes(layer)
        if config.get("class_name") != "Sequential" and layer.get("class_name") not in (
                "InputLayer", "Embedding") and isinstance(layer.get("config"), dict):
            layer["config"].pop("batch_input_shape", None)


def _renumber_nested_sequentials(config):
    """Renumbers the calls of nested Sequential models in a Keras 2
    functional config, in place, as Keras 3 counts them.

    Keras 2 gave a Sequential with an input shape a node of its own, the
    first (as Keras 2 and 3 do for a functional model), so a functional
    model's config refers to its first call as node 1; Keras 3 numbers a
    Sequential's calls from 0 (and fails on "list index out of range").
    """
    inner = config.get("config") if isinstance(config, dict) else None
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list):
        return
    for layer in layers:
        _renumber_nested_sequentials(layer)
    if config.get("class_name") == "Sequential":
        return
    shifted = {
        layer.get("name") for layer in layers
        if layer.get("class_name") in ("Functional", "Model") or (
            layer.get("class_name") == "Sequential"
            and (layer.get("config", {}).get("layers") or [{}])[0].get(
                "class_name") == "InputLayer")
    }

    def shift(reference):
        if (isinstance(reference, list) and len(reference) >= 3
                and reference[0] in shifted and isinstance(reference[1], int)
                and reference[1] > 0):
            reference[1] -= 1

    for layer in layers:
        for node in layer.get("inbound_nodes") or []:
            for reference in node if isinstance(node, list) else []:
                shift(reference)
    for key in ("input_layers", "output_layers"):
        references = inner.get(key)
        if references and isinstance(references[0], str):
            references = [references]
        for reference in references or []:
            shift(reference)


def compile_arguments(training_config, user_objects=None):
    """`model.compile` arguments from a Keras 2 training config; and notes
    on the settings dropped.

    Read with Keras's public deserializers, adapted where Keras 3's legacy
    `.h5` reader goes wrong on Keras 2's records: a loss or metric given by
    name ("mse") is passed to `compile` as the name (the reader fails on
    it), a `MeanMetricWrapper` gets its function (the reader leaves the
    function's name, which fails at the first training step), and
    Keras's optimizers keep their settings (see `optimizer_from_config`).
    """
    from keras.src.legacy.saving import json_utils

    config = json_utils.decode(json.dumps(training_config))
    with keras.saving.custom_object_scope(custom_objects(user_objects)):
        optimizer, notes = optimizer_from_config(config["optimizer_config"])
        if optimizer is None:  # A custom optimizer.
            optimizer = keras.optimizers.deserialize(config["optimizer_config"])
        return dict(
            optimizer=optimizer,
            loss=_nested(config.get("loss"), keras.losses.deserialize),
            metrics=_nested(config.get("metrics"), _metric),
            weighted_metrics=_nested(config.get("weighted_metrics"), _metric),
            loss_weights=config.get("loss_weights"),
        ), notes


def _nested(value, deserialize):
    """`value` (a name, a serialized object, or lists and dicts of them)
    with its serialized objects deserialized and its names left."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "class_name" in value:
            return deserialize(value)
        return {k: _nested(v, deserialize) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nested(v, deserialize) for v in value]
    raise ValueError(f"a training config entry Keras 2 does not write: {value!r}")


def _metric(config):
    inner = config.get("config", {})
    if config.get("class_name") == "MeanMetricWrapper" and isinstance(
            inner.get("fn"), str):
        fn = keras.metrics.get(inner["fn"])
        return keras.metrics.MeanMetricWrapper(
            fn, name=inner.get("name"), dtype=inner.get("dtype"))
    return keras.metrics.deserialize(config)


# Keras 2 optimizer settings that change nothing in Keras 3.
_NO_EFFECT = {"jit_compile", "is_legacy_optimizer"}


# tf-keras's loss-scale optimizers (`mixed_float16`): the current one's and
# the legacy one's class names.
_LOSS_SCALE = ("LossScaleOptimizerV3", "LossScaleOptimizer")


def optimizer_from_config(optimizer_config):
    """A Keras 3 optimizer from a Keras 2 optimizer config, if it names one
    of Keras's optimizers (`"Adam"`, or `"Custom>Adam"` as tf-keras 2.11+
    wrote it), or a loss-scale optimizer around one; and notes on the
    settings dropped.

    Keras 3's legacy reader makes a default optimizer of `"Custom>Adam"`:
    its learning rate and every other setting would be lost unnoticed. A
    legacy optimizer's `decay` becomes the `InverseTimeDecay` schedule it
    applied; a learning-rate schedule keeps its settings.

    Returns:
        `(optimizer, notes)`; `(None, [])` for another optimizer (a custom
        one), left to Keras's reader.
    """
    class_name = str(optimizer_config.get("class_name", ""))
    name = class_name.split(">")[-1] if class_name.startswith("Custom>") else (
        class_name)
    config = dict(optimizer_config.get("config", {}))
    if name in _LOSS_SCALE:
        return _loss_scale_optimizer(config)
    cls = getattr(keras.optimizers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, keras.optimizers.Optimizer)):
        return None, []
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    # A legacy optimizer (tf.keras.optimizers.legacy): it has `decay`, and
    # its config no `is_legacy_optimizer`.
    legacy = "decay" in config and "is_legacy_optimizer" not in config
    settings, notes = {}, []
    for key, value in config.items():
        if key == "decay" and legacy:
            notes += _legacy_rules(name, value, settings, config)
        elif key in accepted:
            settings[key] = value
        elif key not in _NO_EFFECT:
            notes.append(
                f"the optimizer's setting {key}={value!r} was dropped: "
                f"Keras 3's {name} has no such setting"
            )
    rate = settings.get("learning_rate")
    if isinstance(rate, dict):
        settings["learning_rate"] = _schedule(rate)
    return cls(**settings), notes


def _legacy_rules(name, decay, settings, config):
    """A legacy optimizer's `decay`: its learning rate divided by
    `1 + decay * step`, which `InverseTimeDecay` applies; legacy Nadam's
    decay is instead the pace of its momentum schedule. And the notes on
    legacy rules Keras 3 does not follow."""
    if name == "Nadam":
        return [
            f"legacy Nadam's momentum schedule (0.96 ** ({decay} * step)) is not "
            "Keras 3 Nadam's (0.96 ** step): training goes on with Keras 3's"
        ]
    notes = []
    if name == "RMSprop" and not config.get("momentum"):
        notes.append(
            "legacy RMSprop without momentum adds epsilon to the square root of "
            "its average, Keras 3's RMSprop under the root: steps differ where "
            "that average is near epsilon; training goes on with Keras 3's rule")
    if not decay:
        return notes
    rate = config.get("learning_rate")
    if isinstance(rate, dict):
        return notes + [f"the optimizer's setting decay={decay!r} was dropped: "
                        "Keras 3 cannot apply it on top of a learning-rate schedule"]
    settings["learning_rate"] = keras.optimizers.schedules.InverseTimeDecay(
        rate, decay_steps=1, decay_rate=decay)
    return notes


def _schedule(config):
    """A learning-rate schedule from its Keras 2 config: tf-keras wrote
    `name: None` where Keras 3 needs a string."""
    config = dict(config)
    inner = dict(config.get("config", {}))
    if inner.get("name") is None:
        inner.pop("name", None)
    config["config"] = inner
    return keras.optimizers.schedules.deserialize(config)


def _loss_scale_optimizer(config):
    """Keras 3's `LossScaleOptimizer` around the optimizer of a Keras 2 one."""
    inner_config = config.get("inner_optimizer") or config.get("optimizer")
    optimizer, notes = optimizer_from_config(inner_config)
    if optimizer is None:
        optimizer = keras.optimizers.deserialize(inner_config)
    if not config.get("dynamic", True):
        # Keras 3's way to a fixed loss scale.
        optimizer.loss_scale_factor = config.get("initial_scale")
        return optimizer, notes
    return keras.optimizers.LossScaleOptimizer(
        optimizer,
        initial_scale=config.get("initial_scale", 2.0**15),
        dynamic_growth_steps=config.get("dynamic_growth_steps", 2000),
    ), notes


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
    match = re.search(r"Unknown [\w ]+?: '([^']+)'|Could not locate "
                      r"(?:class|function) '([^']+)'", str(error))
    return (match.group(1) or match.group(2)) if match else None
