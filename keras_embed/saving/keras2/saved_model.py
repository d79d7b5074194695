"""Keras 2 SavedModel directories, rebuilt as Keras 3 models.

`load_keras2_model(path)` reads a directory that Keras 2 wrote with
`model.save("my_model")`: the model's config and training config from its
`keras_metadata.pb`, every variable from its `variables/` checkpoint (with
TensorFlow's checkpoint reader). It runs none of the directory's code: the
model is rebuilt from its config, as Keras 3 loads a Keras 2 `.h5` file,
with the same adaptations (`keras_embed.Embedding` keeps `input_length`).
`keras-embed convert OLD_DIR model.keras` does the same and saves the result.
"""

import os
import warnings

from keras_embed.saving.keras2 import checkpoint as keras2_checkpoint, configs as keras2_configs
from keras_embed.saving.keras2 import optimizer as keras2_optimizer
from keras_embed.saving.keras2 import preprocessing as keras2_preprocessing
from keras_embed.saving.keras2 import directory as keras2_directory
from keras_embed.saving.keras2 import dynamic_embedding as keras2_dynamic
from keras_embed.saving import load_errors
from keras_embed.saving.keras2.directory import Keras2SavedModelError

FUNCTION = "keras_embed.load_keras2_model"


def load_keras2_model(path, custom_objects=None, to="keras_embed",
                      compile=True, safe_mode=True):
    """Loads a Keras 2 SavedModel directory as a Keras 3 model.

    Keras 3's `keras.models.load_model` refuses these directories, and
    `keras.layers.TFSMLayer` only calls them. This rebuilds the model from
    the config Keras 2 kept in the directory, with every weight it holds, so
    it predicts what the Keras 2 model predicted and can be trained, saved
    as `.keras` and so on. Its Embedding layers are `keras_embed.Embedding`
    (`to="keras_embed"`) or `keras.layers.Embedding` (`to="stock"`). The
    directory's code (its traced TensorFlow functions) is never run.

    A model saved compiled comes back compiled with its loss, metrics and
    optimizer settings, and its optimizer state (slots and step count) for
    Keras 2's optimizers and the legacy (`tf.keras.optimizers.legacy`) Adam
    and SGD. What cannot come along is reported with a `MigrationWarning`.

    Example:

    >>> import keras_embed
    >>> model = keras_embed.load_keras2_model("my_model")  # doctest: +SKIP
    >>> model.save("my_model.keras")                       # doctest: +SKIP

    Args:
        path: the directory (with `saved_model.pb`, `keras_metadata.pb` and
            `variables/`).
        custom_objects: the user's custom layers, losses, metrics, ..., by
            the class name the config gives, as for
            `keras.models.load_model`.
        to: `"keras_embed"` or `"stock"`: the Embedding class of the result.
        compile: whether to compile the model with its saved training
            configuration (and give it the saved optimizer state).
        safe_mode: as for `keras.models.load_model`: `False` allows a
            `Lambda` layer's saved bytecode to run (only for directories you
            trust).

    Returns:
        A Keras 3 model (`keras.Sequential` or functional `keras.Model`).

    Raises:
        ValueError: (a `Keras2SavedModelError`) if `path` is not a Keras 2
            SavedModel directory (a `tf.Module` export, a Keras 3
            `model.export()`, a partial or damaged copy, a checkpoint that
            does not match the config), or names a class missing from
            `custom_objects`; or if `to` is neither value.
    """
    if to not in ("keras_embed", "stock"):
        raise ValueError(f"to must be 'keras_embed' or 'stock', not {to!r}")
    from keras_embed.saving import migration

    model, notes = read_model(path, custom_objects, compile, safe_mode)
    for note in notes:
        warnings.warn(f"{os.fspath(path)}: {note}", migration.MigrationWarning,
                      stacklevel=2)
    if to == "stock":
        model = migration.unswap(model)
    return model


def read_model(path, custom_objects=None, compile=True, safe_mode=True, directory=None):
    """The Keras 3 model in a Keras 2 SavedModel directory, its Embedding
    layers `keras_embed.Embedding`; and notes on what did not come along.

    `directory`: what `keras2_directory.read(path)` gave, if it was read
    already.

    Returns:
        `(model, notes)`: `notes` is a list of sentences.

    Raises:
        Keras2SavedModelError: as `load_keras2_model`.
    """
    if directory is None:
        directory = keras2_directory.read(path)
    checkpoint = keras2_checkpoint.Checkpoint(directory.checkpoint,
                                              directory.path)
    try:
        model = keras2_configs.model_from_config(
            directory.model_config, custom_objects, safe_mode)
    except keras2_configs.UnknownClassError as error:
        raise Keras2SavedModelError(
            _missing_class(directory.path, error.name)) from None
    except Exception as error:  # Keras raises many kinds here.
        if safe_mode and "safe_mode=False" in str(error):
            raise Keras2SavedModelError(
                f"{directory.path}: the model has a Lambda layer whose "
                "function Keras 2 saved as Python bytecode, which safe mode "
                "does not load (loading runs it). If you trust the "
                f"directory, pass safe_mode=False to {FUNCTION}; keras-embed "
                "convert keeps safe mode on."
            ) from error
        raise Keras2SavedModelError(
            f"{directory.path}: the model's config in keras_metadata.pb does "
            f"not load in Keras 3: {load_errors.reason(error)}"
        ) from error
    pairs = keras2_checkpoint.assign_weights(model, directory, checkpoint)
    keras2_preprocessing.assign_directory_state(model, directory, checkpoint)
    notes = keras2_dynamic.notes(model)
    if compile and directory.training_config:
        try:
            arguments, dropped = keras2_configs.compile_arguments(
                directory.training_config, custom_objects)
            model.compile(**arguments)
            keras2_configs.build_compiled(model)
        except Exception as error:  # Keras raises many kinds here.
            missing = keras2_configs.unknown_class(error)
            if missing is not None:
                raise Keras2SavedModelError(
                    _missing_class(directory.path, missing)) from None
            notes.append(
                "its training configuration (loss, metrics, optimizer) does "
                f"not load in Keras 3, so the model is not compiled "
                f"({load_errors.reason(error)})"
            )
        else:
            notes += dropped
            notes += keras2_optimizer.assign_optimizer_state(
                model, checkpoint, pairs)
    return model, notes


def _missing_class(path, name):
    return (
        f"{path}: the model uses '{name}', a class that is not part of "
        "Keras (a custom layer, loss or metric of yours). Pass it as "
        f"{FUNCTION}(path, custom_objects={{'{name}': {name.split('>')[-1]}}})"
        "; keras-embed convert cannot import your code."
    )


def load_model_hint(path):
    """What `keras.models.load_model` should say it cannot: a sentence
    naming `load_keras2_model` and `keras-embed convert` if `path` is a
    Keras 2 SavedModel directory; else None."""
    if not isinstance(path, (str, os.PathLike)):
        return None
    path = os.fspath(path)
    if not keras2_directory.is_saved_model(path):
        return None
    if not os.path.exists(os.path.join(path, "keras_metadata.pb")):
        try:
            keras2_directory.read(path)
        except Keras2SavedModelError as error:
            if "Keras 2" not in str(error):
                return None
    return (
        f"'{path}' is a Keras 2 SavedModel directory: with keras_embed, "
        f"{FUNCTION}('{path}') rebuilds it as a Keras 3 model (layers, "
        f"weights, training configuration), and `keras-embed convert {path} "
        "model.keras` converts it to a .keras file."
    )
