"""Why a model does not load, said first: damaged files, bad layer configs.

`install` wraps `keras.models.load_model` (and `keras.saving.load_model`, the
same function). When loading fails:

- if the file was cut short or corrupted, the error says which file and
  what is wrong with it, where stock Keras reports it as it stumbles on it
  ("File not found" for a truncated `.keras` file that is there, "Bad
  CRC-32 for file 'model.weights.h5'" without the path, an HDF5
  `KeyError`):

      DamagedModelFileError: Cannot load 'model.keras': the file is cut
      short (8,460 bytes): a .keras file is a zip archive, and this one has
      no zip directory at its end. Was it truncated (an interrupted copy or
      download)?

- if it is a Keras 2 SavedModel directory, Keras's refusal ends with a
  sentence naming `keras_embed.load_keras2_model` and `keras-embed
  convert`, which read it;

- if an `Embedding` config in it has a bad field, our error naming the
  layer and the field is raised as it is, not under Keras's
  "... could not be deserialized properly" and the whole config.

A damaged file's error has Keras's chained. A load that succeeds, or fails for another
reason, is left exactly as it was. Code that imported `load_model` by name
before `keras_embed` was imported keeps the stock function.

Example:

>>> from keras_embed.saving import load_errors
>>> load_errors.diagnose("model.keras") is None  # doctest: +SKIP
True
"""

import functools
import json
import os
import re
import zipfile
import zlib

import keras

from keras_embed.layers.errors import InvalidConfigError

_ZIP_MAGIC = b"PK\x03\x04"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class DamagedModelFileError(ValueError):
    """A model file that is truncated or corrupted; the message names the
    file and what is wrong."""


def diagnose(path):
    """What is wrong with a model file, in a sentence; `None` if it looks
    intact (or is not a local file).

    Args:
        path: a `.keras` or `.h5` file.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        return None
    size = os.path.getsize(path)
    if size == 0:
        return "the file is empty (0 bytes)"
    with open(path, "rb") as file:
        start = file.read(8)
    name = os.fspath(path).lower()
    if name.endswith(".keras") or start.startswith(_ZIP_MAGIC):
        return _diagnose_keras(path, size, start)
    if name.endswith((".h5", ".hdf5")) or start == _HDF5_MAGIC:
        return _diagnose_hdf5(path, size)
    return None


def _diagnose_keras(path, size, start):
    if not zipfile.is_zipfile(path):
        if start.startswith(_ZIP_MAGIC):
            return (
                f"the file is cut short ({size:,} bytes): a .keras file is a "
                "zip archive, and this one has no zip directory at its end. "
                "Was it truncated (an interrupted copy or download)?"
            )
        return (
            f"it is not a zip archive, as a .keras file is (it starts with "
            f"{start!r})"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            corrupted = archive.testzip()
            if corrupted is not None:
                return (
                    f"the archive's member '{corrupted}' is corrupted (its "
                    "CRC-32 checksum does not match its bytes)"
                )
            names = archive.namelist()
            if "config.json" not in names:
                return "the archive has no config.json"
            try:
                json.loads(archive.read("config.json"))
            except ValueError as error:
                return f"the archive's config.json is not valid JSON ({error})"
            for member in names:
                if member.endswith(".h5"):
                    # h5py reads the member from the archive as it needs it.
                    with archive.open(member) as stream:
                        damage = _diagnose_hdf5(stream, None)
                    if damage is not None:
                        return f"the archive's member '{member}': {damage}"
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        return f"the zip archive is corrupted ({error})"
    return None


def _diagnose_hdf5(source, size):
    import h5py

    try:
        file = h5py.File(source, "r")
    except Exception as error:  # h5py raises OSError, KeyError, ...
        return _hdf5_open_error(error, size)
    try:
        with file:
            dict(file.attrs)
            return _unreadable_object(file, "")
    except Exception as error:
        return f"its HDF5 structure cannot be read ({_text(error)})"


def _unreadable_object(group, prefix):
    """The first object under `group` whose header or attributes h5py cannot
    read, described; or None. Datasets' values are not read: a model's
    weights can be gigabytes, and HDF5 keeps no checksum to check them
    against (a cut-short file shows in its size, a damaged .keras member in
    its zip CRC-32)."""
    import h5py

    for key in group.keys():  # Names come from the group, not the objects.
        path = f"{prefix}{key}"
        try:
            item = group[key]
            dict(item.attrs)
        except Exception as error:
            return f"its HDF5 object '{path}' cannot be read ({_text(error)})"
        if isinstance(item, h5py.Group):
            found = _unreadable_object(item, f"{path}/")
            if found is not None:
                return found
    return None


def _hdf5_open_error(error, size):
    text = _text(error)
    truncated = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", text)
    if truncated:
        have, want = int(truncated.group(1)), int(truncated.group(2))
        return (
            f"the file is cut short: it has {have:,} of the {want:,} bytes "
            "its header gives. Was it truncated (an interrupted copy or "
            "download)?"
        )
    if "file signature not found" in text:
        start = "" if size is None else f" ({size:,} bytes)"
        return f"it is not an HDF5 file{start}, as a .h5 model file is"
    return f"it is not a readable HDF5 file ({text})"


def reason(error):
    """The first line of `error`'s message, for a one-line report. Keras's
    deserialization errors start with the whole config ("Error when
    deserializing class 'X' using config={...}") and give the reason after
    "Exception encountered:": that reason is quoted. At most 300
    characters."""
    text = str(error).strip()
    cause = re.search(r"Exception encountered:\s*(.+)", text, re.S)
    if cause:
        text = cause.group(1).strip()
    lines = text.splitlines()
    message = lines[0] if lines else type(error).__name__
    return message if len(message) <= 300 else message[:297] + "..."


def _text(error):
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return str(error)


def _explained(load_model):
    @functools.wraps(load_model)
    def explained_load_model(filepath, *args, **kwargs):
        try:
            return load_model(filepath, *args, **kwargs)
        except Exception as error:
            config_error = _config_error_in(error)
            if config_error is not None:
                # Keras's wrappers add only the config, already in ours.
                raise config_error from None
            hint = _keras2_saved_model_hint(filepath, error)
            if hint is not None:
                raise ValueError(f"{error} {hint}") from error
            try:
                damage = diagnose(filepath)
            except Exception:  # Examining must never hide Keras's error.
                damage = None
            if damage is None:
                raise
            end = "" if damage.endswith(("?", ".")) else "."
            raise DamagedModelFileError(
                f"Cannot load '{os.fspath(filepath)}': {damage}{end}"
            ) from error

    explained_load_model._keras_embed_explained = True
    return explained_load_model


def _keras2_saved_model_hint(filepath, error):
    """For Keras's refusal of a Keras 2 SavedModel directory: the sentence
    naming keras_embed.load_keras2_model and `keras-embed convert`."""
    if not isinstance(error, ValueError):
        return None
    try:
        from keras_embed.saving.keras2 import saved_model as keras2_saved_model

        return keras2_saved_model.load_model_hint(filepath)
    except Exception:  # Examining must never hide Keras's error.
        return None


def _config_error_in(error):
    """Our config error among the errors Keras raised `error` from."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InvalidConfigError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def install():
    """Wraps `keras.models.load_model` and `keras.saving.load_model`; safe to
    call twice."""
    for module in (keras.models, keras.saving):
        load_model = module.load_model
        if not getattr(load_model, "_keras_embed_explained", False):
            module.load_model = _explained(load_model)

