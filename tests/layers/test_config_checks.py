"""Arguments and configs of the wrong kind or size are errors naming the layer
and the field, before anything is allocated; loading checks the saved table
against the config; nothing in a config is executed."""

import json
import os
import warnings
import zipfile

import keras
import numpy as np
import pytest

import keras_embed
from keras_embed.layers import config_checks
from keras_embed.layers.errors import InvalidConfigError


def _first_line(error):
    return str(error.value).splitlines()[0]


# Sizes, mask_zero, input_length, Keras 2 shapes, weights.


@pytest.mark.parametrize("field", ["input_dim", "output_dim"])
@pytest.mark.parametrize("value", [0, -3, 2.0, True, "8", None, [4]])
def test_bad_sizes_name_the_layer_and_the_field(field, value):
    kwargs = {"input_dim": 5, "output_dim": 5, field: value, "name": "words"}
    with pytest.raises(InvalidConfigError) as error:
        keras_embed.Embedding(**kwargs)
    assert _first_line(error) == (
        f"Embedding layer 'words': `{field}` must be a positive integer. "
        f"Received: {field}={value!r} (of type {type(value).__name__})."
    )
    assert isinstance(error.value, ValueError)  # As stock raises.
    # Stock's from_config raises a TypeError: ours is one too, message first.
    config = {**keras_embed.Embedding(5, 5).get_config(), field: value, "name": "words"}
    with pytest.raises(TypeError) as error:
        keras_embed.Embedding.from_config(config)
    assert _first_line(error).startswith(f"Embedding layer 'words': `{field}` must be a positive integer.")


@pytest.mark.parametrize("value", ["false", "True", 1, 0, None, [True]])
def test_mask_zero_must_be_a_bool(value):
    with pytest.raises(InvalidConfigError) as error:
        keras_embed.Embedding(5, 2, mask_zero=value, name="words")
    assert _first_line(error) == (
        "Embedding layer 'words': `mask_zero` must be True or False. "
        f"Received: mask_zero={value!r} (of type {type(value).__name__})."
    )


def test_numpy_bool_mask_zero_is_a_bool():
    layer = keras_embed.Embedding(5, 2, mask_zero=np.bool_(True))
    assert layer.mask_zero is True and layer.get_config()["mask_zero"] is True


@pytest.mark.parametrize("value", ["10", -1, 2**63, 10**30, (4, "a"), 1.5])
def test_bad_input_length_names_the_layer_and_the_field(value):
    with pytest.raises(InvalidConfigError) as error:
        keras_embed.Embedding(5, 2, input_length=value, name="words")
    assert _first_line(error).startswith(
        "Embedding layer 'words': `input_length` must be a positive integer, "
        "or a tuple of positive integers and None"
    )
    assert f"Received: input_length={value!r}" in _first_line(error)


@pytest.mark.parametrize(
    "field, value",
    [("batch_input_shape", [None, -3]), ("batch_input_shape", "abc"),
     ("input_shape", [0]), ("input_shape", ["10"]), ("input_shape", 7)],
)
def test_bad_keras2_input_shapes_name_the_field(field, value):
    with pytest.raises(InvalidConfigError) as error:
        keras_embed.Embedding(5, 2, name="words", **{field: value})
    assert _first_line(error).startswith(f"Embedding layer 'words': `{field}` must be a list or tuple")
    assert _first_line(error).endswith(f"Received: {field}={value!r}.")


def test_weights_must_be_numbers_of_the_table_shape():
    with pytest.raises(InvalidConfigError) as error:
        keras_embed.Embedding(2, 2, weights=[["a", "b"], ["c", "d"]], name="w")
    assert _first_line(error) == (
        "Embedding layer 'w': `weights` must hold numbers. Received: weights of dtype <U1."
    )
    with pytest.raises(InvalidConfigError) as error:
        keras_embed.Embedding(2, 2, weights=[[1.0, 2.0], [3.0]], name="w")
    assert _first_line(error) == (
        "Embedding layer 'w': `weights` must have shape (input_dim, output_dim) = (2, 2). "
        "Received: weights of a ragged list."
    )


# A table too large for memory: refused before allocating it.


def test_table_too_large_for_memory_states_its_size():
    with pytest.raises(InvalidConfigError) as error:
        keras_embed.Embedding(10**11, 64, name="huge")
    message = _first_line(error)
    # 10**11 * 64 float32 values = 2.56e13 bytes.
    assert message.startswith(
        "Embedding layer 'huge': a table of (input_dim, output_dim) = "
        "(100000000000, 64) float32 values needs 25,600.0 GB, more than the "
    )
    assert " GB of memory available." in message


@pytest.mark.parametrize(
    "kwargs, size",
    [
        ({"input_dim": 1_000_000, "output_dim": 512}, "2.0 GB"),  # 4 bytes each
        ({"input_dim": 1_000_000, "output_dim": 512, "dtype": "mixed_bfloat16"}, "2.0 GB"),
        ({"input_dim": 4_000_000, "output_dim": 512, "dtype": "int8_from_float32"}, "2.0 GB"),
        ({"input_dim": 10_000, "output_dim": 16, "lora_rank": 49_984}, "2.0 GB"),
    ],
)
def test_table_size_counts_the_stored_dtype_and_lora(monkeypatch, kwargs, size):
    # (10,000 * 16 + 10,016 * 49,984) * 4 bytes = 2.0 GB for the LoRA case.
    monkeypatch.setattr(config_checks, "available_memory_bytes", lambda: 1_500_000_000)
    with pytest.raises(InvalidConfigError) as error:
        keras_embed.Embedding(name="t", **kwargs)
    assert f" needs {size}, more than the 1.5 GB of memory available." in _first_line(error)
    if "lora_rank" in kwargs:
        assert "with float32 LoRA matrices of rank 49984" in _first_line(error)
    monkeypatch.setattr(config_checks, "available_memory_bytes", lambda: 2_500_000_000)
    keras_embed.Embedding(name="t", **kwargs)  # Fits: built only when called.


def test_small_tables_are_not_compared_with_memory(monkeypatch):
    monkeypatch.setattr(config_checks, "available_memory_bytes", lambda: 1000)
    keras_embed.Embedding(1000, 64).build()  # 256 KB, under the 1 GiB floor.


@pytest.mark.parametrize("value", ["2", 2.0, -1, True, [2]])
def test_bad_lora_rank_names_the_layer_and_the_field(value):
    with pytest.raises(InvalidConfigError) as error:
        keras_embed.Embedding(5, 2, lora_rank=value, name="words")
    assert _first_line(error) == (
        "Embedding layer 'words': `lora_rank` must be a positive integer, or 0 or None for no LoRA. "
        f"Received: lora_rank={value!r} (of type {type(value).__name__})."
    )


@pytest.mark.parametrize("value", ["x", 0, -2, float("nan"), float("inf"), True, [4]])
def test_bad_lora_alpha_names_the_layer_and_the_field(value):
    with pytest.raises(InvalidConfigError) as error:
        keras_embed.Embedding(5, 2, lora_rank=2, lora_alpha=value, name="words")
    assert _first_line(error) == (
        "Embedding layer 'words': `lora_alpha` must be a positive number or None. "
        f"Received: lora_alpha={value!r} (of type {type(value).__name__})."
    )


@pytest.mark.parametrize("field, value", [("lora_rank", "2"), ("lora_alpha", "x")])
def test_bad_lora_fields_in_a_config_fail_with_our_message_first(field, value):
    config = {**keras_embed.Embedding(5, 2, name="words").get_config(), "lora_rank": 2, field: value}
    with pytest.raises(InvalidConfigError) as error:
        keras_embed.Embedding.from_config(config)
    assert _first_line(error).startswith(f"Embedding layer 'words': `{field}` must be a positive")


def test_lora_arguments_stock_takes_are_taken():
    ids = np.array([[1, 4]])
    for rank, alpha in [(2, 0.5), (np.int64(3), np.float32(1.5)), (4, 8), (2, None)]:
        layer = keras_embed.Embedding(5, 2, lora_rank=rank, lora_alpha=alpha)
        layer(ids)
        assert layer.lora_enabled and layer.lora_rank == rank
        assert layer.lora_alpha == (rank if alpha is None else alpha)
        json.dumps(layer.get_config())  # NumPy scalars became Python numbers.
    for rank in (None, 0):  # As stock: no LoRA.
        layer = keras_embed.Embedding(5, 2, lora_rank=rank)
        layer(ids)
        assert not layer.lora_enabled


# Configs from files: errors name the layer and field, nothing runs.


@pytest.mark.parametrize(
    "field, value",
    [("input_dim", "__import__('os').system('echo hacked')"), ("input_dim", -5),
     ("output_dim", "64"), ("input_length", "7"), ("mask_zero", "yes"),
     ("input_dim", 10**12)],
)
def test_hostile_configs_fail_with_our_message_first(field, value):
    config = {**keras_embed.Embedding(10, 4, name="words").get_config(), field: value}
    with pytest.raises(InvalidConfigError) as error:
        keras_embed.Embedding.from_config(config)
    assert _first_line(error).startswith(f"Embedding layer 'words': ")
    assert f"`{field}`" in _first_line(error) or "memory available" in _first_line(error)
    assert "Error when deserializing" not in str(error.value)


def _rewrite_config(source, destination, edit):
    """Copies a .keras file, passing each Embedding layer config to `edit`."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(destination, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                for layer in config["config"]["layers"]:
                    if layer["class_name"] == "Embedding":
                        edit(layer["config"])
                data = json.dumps(config).encode()
            zout.writestr(item, data)


def _saved_model(tmp_path, **kwargs):
    model = keras.Sequential([keras_embed.Embedding(40, 6, name="words", **kwargs), keras.layers.Dense(1)])
    path = str(tmp_path / "model.keras")
    model.save(path)
    return model, path


def test_keras_file_with_hostile_config_names_layer_and_field(tmp_path):
    _, path = _saved_model(tmp_path)
    _rewrite_config(path, tmp_path / "bad.keras", lambda c: c.update(output_dim=-1))
    with pytest.raises(InvalidConfigError) as error:
        keras.models.load_model(tmp_path / "bad.keras")
    assert _first_line(error) == (
        "Embedding layer 'words': `output_dim` must be a positive integer. "
        "Received: output_dim=-1 (of type int)."
    )


def test_keras_file_with_a_huge_table_fails_before_allocating(tmp_path):
    _, path = _saved_model(tmp_path)
    _rewrite_config(path, tmp_path / "huge.keras", lambda c: c.update(input_dim=10**12))
    # 10**12 * 6 float32 values = 2.4e13 bytes.
    with pytest.raises(InvalidConfigError, match=r"^Embedding layer 'words': a table of .* needs 24,000.0 GB"):
        keras.models.load_model(tmp_path / "huge.keras")


def _lambda_config(marker):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns that lambdas are unsafe.
        return keras.saving.serialize_keras_object(
            lambda *args, **kwargs: open(marker, "w").close()
        )


def test_safe_mode_refuses_a_lambda_in_the_config(tmp_path):
    marker = str(tmp_path / "ran")
    _, path = _saved_model(tmp_path)
    _rewrite_config(
        path, tmp_path / "lambda.keras",
        lambda c: c.update(quantization_config=_lambda_config(marker)),
    )
    with pytest.raises(ValueError, match="Requested the deserialization of a Python lambda"):
        keras.models.load_model(tmp_path / "lambda.keras")
    assert not os.path.exists(marker)


@pytest.mark.parametrize("field", ["embeddings_initializer", "embeddings_regularizer", "embeddings_constraint"])
def test_lambdas_in_the_config_are_never_run_even_without_safe_mode(tmp_path, field):
    marker = str(tmp_path / "ran")
    _, path = _saved_model(tmp_path)
    _rewrite_config(path, tmp_path / "lambda.keras", lambda c: c.update({field: _lambda_config(marker)}))
    for safe_mode in (True, False):
        with pytest.raises(TypeError, match="Could not interpret"):
            keras.models.load_model(tmp_path / "lambda.keras", safe_mode=safe_mode)
    assert not os.path.exists(marker)


# The saved table against the config.


def test_keras_file_whose_table_disagrees_with_its_config(tmp_path):
    _, path = _saved_model(tmp_path)
    _rewrite_config(path, tmp_path / "bad.keras", lambda c: c.update(input_dim=30))
    with pytest.raises(ValueError) as error:
        keras.models.load_model(tmp_path / "bad.keras")
    # Keras collects errors from loading under a line of its own.
    assert (
        "Embedding layer 'words': the file's `embeddings` has shape (40, 6), but the "
        "layer's config (input_dim=30, output_dim=6) makes it (30, 6). The config and "
        "the weights in this file do not belong together."
    ) in str(error.value).splitlines()


def test_weights_file_of_another_table_shape(tmp_path):
    model, _ = _saved_model(tmp_path)
    model.save_weights(tmp_path / "m.weights.h5")
    other = keras.Sequential([keras_embed.Embedding(40, 5, name="words"), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match=r"Embedding layer 'words': the file's `embeddings` has "
                       r"shape \(40, 6\), but the layer's config \(input_dim=40, output_dim=5\) "
                       r"makes it \(40, 5\)"):
        other.load_weights(tmp_path / "m.weights.h5")


def test_a_store_with_another_number_of_variables_is_refused():
    layer = keras_embed.Embedding(4, 3, name="words")
    layer.build()
    store = {"0": np.zeros((4, 3), "float32"), "1": np.ones((4,), "float32")}
    with pytest.raises(InvalidConfigError) as error:
        layer.load_own_variables(store)
    assert str(error.value) == (
        "Embedding layer 'words' expects 1 saved variables (embeddings; quantization "
        "mode None), but the file lists 2."
    )


def test_legacy_h5_of_another_table_shape_is_refused_by_keras(tmp_path):
    model, _ = _saved_model(tmp_path)
    model.save(tmp_path / "m.h5")
    other = keras.Sequential([keras_embed.Embedding(30, 6, name="words"), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match=r"Shape mismatch in layer #0 \(named words\).*Weight "
                       r"expects shape \(30, 6\)\. Received saved weight with shape \(40, 6\)"):
        other.load_weights(tmp_path / "m.h5")
