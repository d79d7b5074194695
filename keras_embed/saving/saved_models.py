"""Saved model files: reading their embedding layers, and converting them.

The work behind `keras-embed inspect` and `keras-embed convert`. Files are
`.keras` archives or legacy `.h5` files, written by Keras 3 or by Keras 2
(tf-keras), and Keras 2 SavedModel directories (read by
`keras_embed.saving.keras2.saved_model`). A Keras 2 model's `Embedding`
layers are read as `keras_embed.Embedding`, which keeps their
`input_length` (stock Keras 3 drops it).

Example:

>>> from keras_embed.saving import saved_models
>>> rows = saved_models.embedding_rows("model.keras")    # doctest: +SKIP
>>> rows[0]["input_dim"]                                 # doctest: +SKIP
10000
"""

import contextlib
import logging
import os
import tempfile
import warnings

import keras
import numpy as np

from keras_embed.saving import load_errors, migration
from keras_embed.layers.dynamic_embedding import DynamicEmbedding
from keras_embed.layers.embedding import Embedding
from keras_embed.saving import keras2
from keras_embed.saving.keras2 import directory as keras2_directory

FORMATS = (".keras", ".h5")
COLUMNS = (
    "name", "class", "input_dim", "output_dim", "mask_zero", "input_length",
    "params", "dtype", "quantization", "size_mb",
)


class SavedModelError(Exception):
    """A file that cannot be read or written: the message is one line for
    the user, naming the file."""


def load(path, compile=False):
    """Loads the model in a `.keras` or `.h5` file or a Keras 2 SavedModel
    directory.

    Args:
        path: the file or directory.
        compile: whether to compile the model with its saved training
            configuration.

    Returns:
        `(model, written_by)`: `written_by` is `"Keras 2"` for a `.h5` file
        written by Keras 2 (tf-keras), `"Keras 2 SavedModel"` for a
        directory, else `"Keras 3"`.

    Raises:
        SavedModelError: if the file is missing, damaged, is not a Keras
            model, or is in another format.
    """
    written_by, keras2_dir = _written_by(path)
    if keras2_dir is not None:
        return _read_directory(keras2_dir, compile)[0], written_by
    return _read_model(path, written_by, compile)[0], written_by


SAVED_MODEL = "Keras 2 SavedModel"


def _read_directory(directory, compile):
    """A Keras 2 SavedModel directory's model and notes, as `read_model`,
    from what `keras2_directory.read` found."""
    with _quiet():
        try:
            return keras2.read_model(directory.path, compile=compile, directory=directory)
        except keras2_directory.Keras2SavedModelError as error:
            raise SavedModelError(str(error)) from error


def _written_by(path):
    """Checks `path` names an intact `.keras` or `.h5` model or a Keras 2
    SavedModel directory; returns `(written_by, directory)`: `written_by` is
    `"Keras 2"`, `"Keras 3"` or `"Keras 2 SavedModel"`, as `load`;
    `directory` what `keras2_directory.read` found in a directory (read
    once, handed on), else None."""
    if not os.path.exists(path):
        raise SavedModelError(f"{path}: no such file")
    if os.path.isdir(path):
        try:
            return SAVED_MODEL, keras2_directory.read(path)
        except keras2_directory.Keras2SavedModelError as error:
            raise SavedModelError(str(error)) from error
    extension = _extension(path)
    if extension == ".weights.h5":
        raise SavedModelError(
            f"{path}: a weights-only file, with no model in it; load it with "
            "model.load_weights() into the model it came from"
        )
    if extension not in FORMATS:
        raise SavedModelError(
            f"{path}: unsupported format {extension or '(no extension)'}; "
            "keras-embed reads .keras and .h5 files"
        )
    damage = load_errors.diagnose(path)
    if damage is not None:
        raise SavedModelError(f"{path}: {damage}")
    if extension == ".keras":
        return "Keras 3", None
    import h5py

    with h5py.File(path, "r") as file:
        if "model_config" not in file.attrs:
            raise SavedModelError(
                f"{path}: not a Keras model (an HDF5 file with no "
                "model_config; weights only?)"
            )
        version = file.attrs.get("keras_version", "")
    if isinstance(version, bytes):
        version = version.decode("utf-8")
    return ("Keras 2" if str(version).startswith("2.") else "Keras 3"), None


def _read_model(path, written_by, compile):
    """The model in a file `_written_by` has checked, and notes on what of
    it did not load: a Keras 2 file's training as `keras2_h5` reads it (the
    same adaptations as for a Keras 2 SavedModel directory), others as
    `keras.models.load_model` does."""
    with _quiet():
        try:
            if written_by == "Keras 2":
                return keras2.read_model(path, compile=compile)
            with _global_policy(_saved_policy(path)):
                return keras.models.load_model(path, compile=compile), []
        except load_errors.DamagedModelFileError as error:
            # Its message names the file already.
            raise SavedModelError(str(error)) from error
        except Exception as error:  # Keras raises many kinds here.
            raise SavedModelError(
                f"{path}: could not load the model: {load_errors.reason(error)}"
            ) from error


def _saved_policy(path):
    """The dtype policy a `.keras` file's model was built under, if mixed.

    Keras wraps a model's optimizer in a `LossScaleOptimizer` at `compile`
    under the global `mixed_float16` policy, but the file keeps the inner
    optimizer: loaded under another global policy, the optimizer has fewer
    variables than the file and Keras drops its state ("Skipping variable
    loading for optimizer"). Loaded under the model's own policy, it keeps
    it."""
    if _extension(path) != ".keras":
        return None
    import json
    import zipfile

    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json")).get("config", {})
    policy = config.get("dtype") if isinstance(config, dict) else None
    name = policy.get("config", {}).get("name") if isinstance(policy, dict) else policy
    return name if isinstance(name, str) and name.startswith("mixed_") else None


@contextlib.contextmanager
def _global_policy(name):
    """Keras's global dtype policy set to `name` (if any) for the block."""
    if name is None:
        yield
        return
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def embedding_rows(path):
    """One row per embedding layer in the model saved at `path`.

    Args:
        path: a `.keras` or `.h5` file.

    Returns:
        A list of dicts with the keys in `COLUMNS`: `size_mb` is the size of
        the layer's weights in megabytes (10**6 bytes).

    Raises:
        SavedModelError: as `load`, or if the model has no embedding layers.
    """
    model, written_by = load(path)
    layers = _embedding_layers(model, path)
    rows = []
    for name, layer in layers:
        nbytes = sum(
            int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize
            for w in layer.weights
        )
        rows.append({
            "name": name,
            "class": _file_class_name(layer, written_by),
            "input_dim": layer.input_dim,
            "output_dim": layer.output_dim,
            "mask_zero": bool(layer.mask_zero),
            "input_length": getattr(layer, "input_length", None),
            "params": layer.count_params(),
            "dtype": layer.dtype_policy.name,
            "quantization": getattr(layer, "quantization_mode", None),
            "size_mb": nbytes / 1e6,
        })
    return rows


def convert(source, destination, to="keras_embed", force=False):
    """Saves the model in `source` as `destination` with its embedding
    layers swapped; returns what it did, as lines of text.

    Writes a temporary file next to `destination` and renames it, so
    `destination` is never half written. `source` is only read.

    Args:
        source: a `.keras` or `.h5` file, or a Keras 2 SavedModel
            directory.
        destination: a `.keras` or `.h5` path; the format follows the
            extension.
        to: `"keras_embed"` (`keras_embed.swap`) or `"stock"`
            (`keras_embed.unswap`).
        force: overwrite `destination` if it exists.

    Returns:
        A list of lines: the layers converted, anything left or dropped, and
        the file written.

    Raises:
        SavedModelError: for a bad `source` (as `load`), a model without
            embedding layers, a `destination` that exists (without `force`),
            is `source`, or has another extension.
        ValueError: if `to` is neither `"keras_embed"` nor `"stock"`.
    """
    if to not in ("keras_embed", "stock"):
        raise ValueError(f"to must be 'keras_embed' or 'stock', not {to!r}")
    extension = _extension(destination)
    if extension not in FORMATS:
        raise SavedModelError(
            f"{destination}: unsupported output format "
            f"{extension or '(no extension)'}; use a .keras or .h5 path"
        )
    if os.path.exists(source) and os.path.exists(destination) and (
        os.path.samefile(source, destination)
    ):
        raise SavedModelError(
            f"{destination} is the input file; convert never changes its "
            "input, so give another output path"
        )
    if os.path.exists(destination) and not force:
        raise SavedModelError(
            f"{destination} exists; use --force to overwrite it"
        )
    directory = os.path.dirname(os.path.abspath(destination))
    if not os.path.isdir(directory):
        raise SavedModelError(f"{directory}: no such directory")

    notes = []
    written_by, keras2_dir = _written_by(source)
    try:
        # Compiled as saved, with the optimizer's state, which swap copies.
        if keras2_dir is not None:
            model, notes = _read_directory(keras2_dir, compile=True)
        else:
            model, notes = _read_model(source, written_by, compile=True)
    except SavedModelError as error:
        if written_by == SAVED_MODEL:
            raise
        # Some saved training configurations do not load in Keras 3 (such
        # as a legacy .h5 file's metrics). The model may load without it;
        # if it does not either, that is the error raised.
        model = _read_model(source, written_by, compile=False)[0]
        notes.append(
            "the training configuration (loss, optimizer) in "
            f"{source} does not load in Keras 3, so {destination} has none "
            f"({load_errors.reason(error.__cause__)})"
        )
    before = _embedding_layers(model, source, dynamic=True)
    replace = migration.swap if to == "keras_embed" else migration.unswap
    with _quiet() as caught:
        new_model = replace(model)
    notes = [
        str(w.message) for w in caught
        if issubclass(w.category, migration.MigrationWarning)
    ] + notes
    after = migration.embedding_layers(new_model, bags=True, dynamic=True)

    kind = ("a Keras 2 SavedModel directory" if written_by == SAVED_MODEL
            else f"a {written_by} model")
    lines = [f"Read {source} ({kind}, "
             f"{len(before)} embedding layer{'s' * (len(before) != 1)})"]
    width = max(len(name) for name, _ in before)
    for (name, old), (_, new) in zip(before, after):
        old_name = _file_class_name(old, written_by)
        new_name = migration.class_name(new)
        change = (f"{old_name} -> {new_name}" if old_name != new_name
                  else f"{new_name} (unchanged)")
        lines.append(f"  {name:<{width}}  {change}")
    if written_by == SAVED_MODEL:
        lines.append(f"  {_training_summary(new_model)}")
    notes += _save_atomically(new_model, destination, extension)
    lines += [f"  note: {note}" for note in notes]
    size = os.path.getsize(destination) / 1e6
    lines.append(f"Wrote {destination} ({format_megabytes(size)} MB)")
    return lines


def _embedding_layers(model, path, dynamic=False):
    layers = migration.embedding_layers(model, bags=True, dynamic=dynamic)
    if not layers:
        raise SavedModelError(f"{path}: the model has no embedding layers")
    return layers


def _save_atomically(model, destination, extension):
    directory = os.path.dirname(os.path.abspath(destination))
    handle, temporary = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(destination)}.",
        suffix=f".tmp{extension}",
    )
    os.close(handle)
    # mkstemp makes the file private; give it the mode a new file gets.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    notes = []
    try:
        with _quiet():
            model.save(temporary, overwrite=True)
            if extension == ".h5" and model.compiled:
                notes += _check_h5_training_config(model, temporary)
            if extension == ".keras" and model.compiled:
                notes += _state_keras_leaves_out(model.optimizer)
        os.replace(temporary, destination)
    except Exception as error:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise SavedModelError(
            f"{destination}: could not save the model: {load_errors.reason(error)}"
        ) from error
    return notes


def _state_keras_leaves_out(optimizer):
    """Notes on the optimizer state that Keras 3 does not write to .keras."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) and isinstance(
            optimizer.inner_optimizer, keras.optimizers.Nadam):
        return [
            "Keras 3 does not save Nadam's running product of its momentum "
            "schedule inside a LossScaleOptimizer (mixed_float16): loaded from "
            "the .keras file, it starts again from 1"
        ]
    return []


def _check_h5_training_config(model, path):
    """Keras 3 writes some training configurations to .h5 that it cannot
    read back (a loss given as "mse", for one). Reads the file back; if it
    does not load, saves it again without them and says so."""
    try:
        keras.models.load_model(path)
    except Exception as error:  # Keras raises many kinds here.
        model.save(path, overwrite=True, include_optimizer=False)
        return [
            "Keras 3 cannot read back the training configuration (loss, "
            f"optimizer) it writes to .h5 for this model "
            f"({load_errors.reason(error)}), so it is left out; save as .keras to "
            "keep it"
        ]
    return []


def _extension(path):
    lower = path.lower()
    if lower.endswith(".weights.h5"):
        return ".weights.h5"
    if lower.endswith(".hdf5"):
        return ".h5"
    return os.path.splitext(lower)[1]


def _training_summary(model):
    """What came along of a model's training configuration, in a line."""
    if not model.compiled:
        return "not compiled (no training configuration)"
    optimizer = model.optimizer
    rate = optimizer.get_config().get("learning_rate")
    rate = f"learning_rate={rate:.6g}, " if isinstance(rate, float) else ""
    return (f"compiled: optimizer {type(optimizer).__name__} ({rate}step "
            f"{int(optimizer.iterations.numpy())}), loss {model.loss!r}")


def _file_class_name(layer, written_by):
    """The layer's class as the file names it: a Keras 2 file's Embedding,
    read as ours, is shown as what it was."""
    if written_by.startswith("Keras 2") and type(layer) in (Embedding, DynamicEmbedding):
        return f"{type(layer).__name__} (Keras 2)"
    return migration.class_name(layer)


def format_megabytes(value):
    """A size in megabytes (10**6 bytes) as `convert` and `keras-embed
    inspect` print it: no decimals from 100, four below 0.01, else two."""
    if value >= 100:
        return f"{value:.0f}"
    if value >= 0.01:
        return f"{value:.2f}"
    return f"{value:.4f}"




@contextlib.contextmanager
def _quiet():
    """Records Python warnings and silences Keras's absl log lines (such as
    "saving your model as an HDF5 file ... legacy") while a file is read or
    written; yields the list of warnings caught."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        absl_logger.setLevel(level)
