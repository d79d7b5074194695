"""`keras.models.load_model` on a truncated or corrupted `.keras` / `.h5`
file names the file and what is wrong with it; other errors pass as they
are."""

import zipfile

import h5py
import keras
import numpy as np
import pytest

import keras_embed
from keras_embed.saving import load_errors
from keras_embed.saving.load_errors import DamagedModelFileError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small model saved as .keras and .h5, and its predictions."""
    folder = tmp_path_factory.mktemp("saved")
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras_embed.Embedding(40, 6, name="words"), keras.layers.Dense(1)])
    model.save(folder / "model.keras")
    model.save(folder / "model.h5")
    ids = np.array([[1, 2, 39]])
    return folder, ids, model.predict(ids, verbose=0)


def _write(path, data):
    with open(path, "wb") as file:
        file.write(data)
    return str(path)


def _load_error(path):
    with pytest.raises(DamagedModelFileError) as error:
        keras.models.load_model(path)
    assert isinstance(error.value, ValueError)
    assert error.value.__cause__ is not None  # Keras's own error, chained.
    return str(error.value)


def test_intact_files_load_as_before(saved):
    folder, ids, expected = saved
    for name in ("model.keras", "model.h5"):
        assert load_errors.diagnose(folder / name) is None
        model = keras.models.load_model(folder / name)
        np.testing.assert_array_equal(model.predict(ids, verbose=0), expected)


def test_truncated_keras_file(saved, tmp_path):
    data = (saved[0] / "model.keras").read_bytes()
    path = _write(tmp_path / "cut.keras", data[: len(data) // 2])
    # Stock Keras says "File not found" for it.
    with pytest.raises(ValueError, match="File not found"):
        keras.src.saving.saving_api.load_model(path)
    assert _load_error(path) == (
        f"Cannot load '{path}': the file is cut short ({len(data) // 2:,} bytes): a "
        ".keras file is a zip archive, and this one has no zip directory at its end. "
        "Was it truncated (an interrupted copy or download)?"
    )


def test_corrupted_member_of_a_keras_file(saved, tmp_path):
    data = bytearray((saved[0] / "model.keras").read_bytes())
    with zipfile.ZipFile(saved[0] / "model.keras") as archive:
        member = archive.getinfo("model.weights.h5")
    middle = member.header_offset + 100 + member.compress_size // 2
    data[middle : middle + 8] = bytes(8)  # Stored, not compressed: CRC catches it.
    path = _write(tmp_path / "flipped.keras", bytes(data))
    assert _load_error(path) == (
        f"Cannot load '{path}': the archive's member 'model.weights.h5' is corrupted "
        "(its CRC-32 checksum does not match its bytes)."
    )


def test_empty_and_foreign_keras_files(tmp_path):
    empty = _write(tmp_path / "empty.keras", b"")
    assert _load_error(empty) == f"Cannot load '{empty}': the file is empty (0 bytes)."
    text = _write(tmp_path / "notes.keras", b"hello world")
    assert _load_error(text) == (
        f"Cannot load '{text}': it is not a zip archive, as a .keras file is (it "
        "starts with b'hello wo')."
    )


def test_keras_archive_with_broken_config_json(saved, tmp_path):
    path = str(tmp_path / "broken.keras")
    with zipfile.ZipFile(saved[0] / "model.keras") as zin, zipfile.ZipFile(path, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item, data[:-10] if item.filename == "config.json" else data)
    message = _load_error(path)
    assert message.startswith(f"Cannot load '{path}': the archive's config.json is not valid JSON (")


def test_truncated_h5_file(saved, tmp_path):
    data = (saved[0] / "model.h5").read_bytes()
    path = _write(tmp_path / "cut.h5", data[:5000])
    assert _load_error(path) == (
        f"Cannot load '{path}': the file is cut short: it has 5,000 of the "
        f"{len(data):,} bytes its header gives. Was it truncated (an interrupted "
        "copy or download)?"
    )


def test_h5_file_with_a_corrupted_object_header(saved, tmp_path):
    source = saved[0] / "model.h5"
    with h5py.File(source, "r") as file:
        names = []
        file.visit(names.append)  # The path holds the model's name.
        (table,) = [name for name in names if name.endswith("words/embeddings")]
        address = h5py.h5o.get_info(file[table].id).addr
    data = bytearray(source.read_bytes())
    data[address : address + 16] = b"\xff" * 16
    path = _write(tmp_path / "header.h5", bytes(data))
    message = _load_error(path)
    assert message.startswith(f"Cannot load '{path}': its HDF5 object '{table}' cannot be read (")


def test_text_file_named_h5(tmp_path):
    path = _write(tmp_path / "model.h5", b"not a model")
    assert _load_error(path) == (
        f"Cannot load '{path}': it is not an HDF5 file (11 bytes), as a .h5 model file is."
    )


def test_errors_from_intact_files_pass_unchanged(saved, tmp_path):
    missing = str(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match="File not found") as error:
        keras.models.load_model(missing)
    assert not isinstance(error.value, DamagedModelFileError)
    # An intact file whose layer Keras cannot find: Keras's own error.
    @keras.saving.register_keras_serializable(package="test_load_errors")
    class Unknown(keras.layers.Dense):
        pass

    model = keras.Sequential([keras.Input((3,)), Unknown(1)])
    model.save(tmp_path / "custom.keras")
    del keras.saving.get_custom_objects()["test_load_errors>Unknown"]
    with pytest.raises(TypeError, match="Could not locate class 'Unknown'") as error:
        keras.models.load_model(tmp_path / "custom.keras")
    assert not isinstance(error.value, DamagedModelFileError)


def test_both_public_names_are_wrapped_once():
    assert keras.models.load_model is not keras.src.saving.saving_api.load_model
    assert keras.saving.load_model._keras_embed_explained
    assert keras.models.load_model.__wrapped__ is keras.src.saving.saving_api.load_model
    load_errors.install()
    assert keras.models.load_model.__wrapped__ is keras.src.saving.saving_api.load_model
