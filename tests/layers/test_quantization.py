"""Int8 and int4 quantization against stock `keras.layers.Embedding`.

Our quantized table comes from the same `keras.quantizers` functions as
stock's, in the same variables: the tests below ask for equal variables and
bit-for-bit equal lookups, not merely close ones.
"""

import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.quantizers import AbsMaxQuantizer
from keras.quantizers import Int4QuantizationConfig
from keras.quantizers import Int8QuantizationConfig

import keras_embed
from conftest import layer_pair
from keras_embed.layers import quantization

# (mode, config) for every storage layout: int8; int4 one scale per row;
# int4 in groups (8 divides 20, 6 leaves a short last group; None = default).
LAYOUTS = {
    "int8": ("int8", None),
    "int4_per_row": ("int4", Int4QuantizationConfig(block_size=None)),
    "int4_per_row_minus_one": ("int4", Int4QuantizationConfig(block_size=-1)),
    "int4_block_8": ("int4", Int4QuantizationConfig(block_size=8)),
    "int4_block_6": ("int4", Int4QuantizationConfig(block_size=6)),
    "int4_default_block_128": ("int4", None),
}

V, D = 30, 20  # vocabulary, width: small, and D odd in nibbles / groups


def quantized_pair(rng, layout, **kwargs):
    mode, config = LAYOUTS[layout]
    ours, stock = layer_pair(V, D, rng, **kwargs)
    ours.quantize(mode, config=config)
    stock.quantize(mode, config=config)
    return ours, stock


def stored(layer):
    """name -> value of each variable, as a saved file lists them."""
    return {v.name: v.numpy() for v in layer.weights}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_variables_equal_stocks(rng, layout):
    ours, stock = quantized_pair(rng, layout)
    ours_vars, stock_vars = stored(ours), stored(stock)
    assert list(ours_vars) == list(stock_vars)
    for name, value in stock_vars.items():
        assert ours_vars[name].dtype == value.dtype, name
        np.testing.assert_array_equal(ours_vars[name], value, err_msg=name)
    assert ours.dtype_policy.name == stock.dtype_policy.name
    assert ours.trainable_weights == []


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("policy_name", ["float32", "mixed_bfloat16"])
def test_lookups_equal_stocks_bit_for_bit(policy, rng, layout, policy_name):
    policy(policy_name)
    ours, stock = quantized_pair(rng, layout)
    ids = rng.integers(0, V, size=(4, 6))
    out, expected = ours(ids), stock(ids)
    assert out.dtype == expected.dtype
    assert out.dtype == keras.mixed_precision.dtype_policy().compute_dtype
    np.testing.assert_array_equal(
        tf.cast(out, "float32").numpy(), tf.cast(expected, "float32").numpy()
    )


@pytest.mark.parametrize("layout", ["int8", "int4_per_row", "int4_block_8"])
def test_lookups_of_any_rank_sparse_and_ragged(rng, layout):
    ours, stock = quantized_pair(rng, layout)
    rows = ours(np.arange(V)).numpy()
    ids = rng.integers(0, V, size=(2, 3, 4))
    np.testing.assert_array_equal(ours(ids), rows[ids])
    np.testing.assert_array_equal(ours(np.int64(7)), rows[7])
    ragged = tf.ragged.constant([[3, 1, 4], [1], [5, 9]])
    np.testing.assert_array_equal(
        ours(ragged).flat_values, rows[ragged.flat_values.numpy()]
    )
    sparse = tf.SparseTensor([[0, 1], [1, 0]], [5, 2], (2, 3))
    np.testing.assert_array_equal(ours(sparse), stock(sparse))


def dequantization_bound(table, layout):
    """The most a quantized entry may differ from the float one, by hand.

    Abs-max rounding (per row) is off by at most half a step, and a step is
    `max|row| / 127` (int8) or `max|row| / 7` (int4, codes -8..7).

    Grouped int4 (Keras's asymmetric scheme) spreads each group's
    [min, max] (a short last group padded with zeros) over 15 steps `s`
    and shifts codes by a zero point `z = round(-min / s) - 8`, clipped to
    [-8, 7]. Values in the group's representable range
    `[(-8 - z) s, (7 - z) s]` are off by at most half a step; when `z` was
    clipped (a group whose values all share one sign and sit far from 0),
    values beyond that range are clipped to its nearest end.
    """
    mode, config = LAYOUTS[layout]
    block_size = config.block_size if config else 128  # Keras's default
    if mode == "int8":
        return np.abs(table).max(axis=1, keepdims=True) / 127 / 2
    if not quantization.is_grouped(block_size):
        return np.abs(table).max(axis=1, keepdims=True) / 7 / 2
    bound = np.empty_like(table)
    for start in range(0, table.shape[1], block_size):
        group = table[:, start : start + block_size]
        padded = np.concatenate([group, np.zeros_like(group[:, :1])], axis=1)
        low = np.where(group.shape[1] < block_size, padded.min(axis=1), group.min(axis=1))
        high = np.where(group.shape[1] < block_size, padded.max(axis=1), group.max(axis=1))
        step = ((high - low) / 15)[:, None]
        zero = np.clip(np.round(-low[:, None] / step) - 8, -8, 7)
        lowest, highest = (-8 - zero) * step, (7 - zero) * step
        beyond = np.maximum(lowest - group, group - highest)
        bound[:, start : start + block_size] = np.maximum(step / 2, beyond)
    return bound


@pytest.mark.parametrize("layout", LAYOUTS)
def test_error_against_the_float_table_is_stocks_and_within_the_bound(
    rng, layout
):
    ours, stock = layer_pair(V, D, rng)
    table = ours.embeddings.numpy()
    mode, config = LAYOUTS[layout]
    ours.quantize(mode, config=config)
    stock.quantize(mode, config=config)
    ids = np.arange(V)
    ours_error = np.abs(ours(ids).numpy() - table)
    stock_error = np.abs(stock(ids).numpy() - table)
    np.testing.assert_array_equal(ours_error, stock_error)
    assert np.all(ours_error <= dequantization_bound(table, layout) * 1.001 + 1e-6)


def test_measured_error_figures():
    """The README's figures: the error of every row of a 10,000 x 64 table
    of N(0, 1) values (seed 0), relative RMS and largest, equal to stock's."""
    table = np.random.default_rng(0).normal(size=(10_000, 64)).astype("float32")
    figures = {  # relative RMS error, largest error
        ("int8", None): (0.0059, 0.018),
        ("int4", Int4QuantizationConfig(block_size=None)): (0.1077, 0.33),
        ("int4", None): (0.0910, 0.25),  # default block_size=128
        ("int4", Int4QuantizationConfig(block_size=16)): (0.0695, 0.24),
    }
    for (mode, config), (relative, largest) in figures.items():
        outputs = []
        for cls in (keras_embed.Embedding, keras.layers.Embedding):
            layer = cls(*table.shape, weights=table)
            layer.quantize(mode, config=config)
            outputs.append(layer(np.arange(table.shape[0])).numpy())
        np.testing.assert_array_equal(outputs[0], outputs[1])
        error = outputs[0] - table
        assert np.linalg.norm(error) / np.linalg.norm(table) == pytest.approx(
            relative, abs=5e-5
        )
        assert np.abs(error).max() == pytest.approx(largest, abs=5e-3)


def test_int4_codes_are_packed_two_a_byte(rng):
    ours, _ = quantized_pair(rng, "int4_block_8")
    assert ours._embeddings.shape == (V, math.ceil(D / 2))
    assert ours._embeddings.dtype == "int8"
    codes = keras.ops.convert_to_numpy(ours.embeddings)  # unpacked, as stock
    assert codes.shape == (V, D)
    assert codes.min() >= -8 and codes.max() <= 7
    scale = ours.embeddings_scale.numpy()
    zero = ours.embeddings_zero.numpy().astype("float32")
    group = np.arange(D) // 8
    np.testing.assert_array_equal(ours.g_idx.numpy(), group)
    by_hand = (codes - zero[:, group]) * scale[:, group]
    # One float32 product in TensorFlow and in NumPy: a rounding; where the
    # code is the zero point both are exactly 0 (atol=0).
    np.testing.assert_allclose(ours(np.arange(V)), by_hand, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    "dtype, layout",
    [
        ("int8_from_float32", "int8"),
        ("int4_from_float32", "int4_per_row"),
        ("int4/-1_from_float32", "int4_per_row"),
        ("int4/8_from_mixed_bfloat16", "int4_block_8"),
        ("int8_from_mixed_bfloat16", "int8"),
    ],
)
def test_quantized_dtype_policy_builds_stocks_variables(rng, dtype, layout):
    ours = keras_embed.Embedding(V, D, dtype=dtype)
    stock = keras.layers.Embedding(V, D, dtype=dtype)
    ours.build()
    stock.build()
    assert [(v.name, v.shape, v.dtype) for v in ours.weights] == [
        (v.name, v.shape, v.dtype) for v in stock.weights
    ]
    # Filled from a table quantized the same way, they look up the same.
    source, _ = quantized_pair(rng, layout)
    for layer in (ours, stock):
        for variable, value in zip(layer.weights, source.weights):
            variable.assign(value)
    ids = rng.integers(0, V, size=(3, 4))
    assert ours(ids).dtype == ours.compute_dtype
    np.testing.assert_array_equal(
        tf.cast(ours(ids), "float32"), tf.cast(stock(ids), "float32")
    )


def test_quantization_config_in_the_constructor_sets_the_block_size():
    config = Int4QuantizationConfig(block_size=8)
    layer = keras_embed.Embedding(
        V, D, dtype="int4_from_float32", quantization_config=config
    )
    layer.build()
    assert layer.embeddings_scale.shape == (V, math.ceil(D / 8))
    assert layer.get_config()["quantization_config"]["config"]["block_size"] == 8


def test_weights_argument_with_a_quantized_policy_quantizes_them(rng):
    table = rng.normal(size=(V, D)).astype("float32")
    layer = keras_embed.Embedding(V, D, weights=table, dtype="int8_from_float32")
    reference = keras_embed.Embedding(V, D, weights=table)
    reference.quantize("int8")
    for name, value in stored(reference).items():
        np.testing.assert_array_equal(stored(layer)[name], value)


def test_setting_an_int4_policy_keeps_its_block_size(rng):
    # Stock quantizes with the default block of 128 whatever the policy says
    # (then holds 2 groups of 128 under a policy named int4/64).
    layer = keras_embed.Embedding(10, 256)
    layer.build()
    layer.dtype_policy = "int4/64_from_float32"
    assert layer.embeddings_scale.shape == (10, 4)
    assert layer.quantization_config.block_size == 64
    assert layer.dtype_policy.name == "int4/64_from_float32"


def test_custom_weight_quantizer_is_used_and_serialized(rng):
    config = Int8QuantizationConfig(
        weight_quantizer=AbsMaxQuantizer(axis=-1, value_range=(-50, 50))
    )
    ours, stock = layer_pair(V, D, rng)
    ours.quantize("int8", config=config)
    stock.quantize("int8", config=config)
    codes = keras.ops.convert_to_numpy(ours.embeddings)
    assert np.abs(codes).max() == 50
    np.testing.assert_array_equal(codes, keras.ops.convert_to_numpy(stock.embeddings))
    restored = keras_embed.Embedding.from_config(ours.get_config())
    assert restored.quantization_config.weight_quantizer.value_range == (-50, 50)


def test_a_weight_quantizer_over_the_wrong_axis_is_a_clear_error(rng):
    config = Int8QuantizationConfig(weight_quantizer=AbsMaxQuantizer(axis=0))
    ours, _ = layer_pair(V, D, rng)
    with pytest.raises(ValueError, match=r"quantized row by row.*axis=-1.*\(30, 1\)"):
        ours.quantize("int8", config=config)
    assert ours.quantization_mode is None  # unchanged
    assert ours.embeddings.dtype == "float32"


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantize_errors_say_what_is_wrong(rng, mode):
    layer = keras_embed.Embedding(V, D)
    with pytest.raises(ValueError, match="Cannot quantize a layer that isn't yet built"):
        layer.quantize(mode)
    layer.build()
    layer.quantize(mode)
    with pytest.raises(
        ValueError, match=f"already quantized with dtype_policy='{mode}"
    ):
        layer.quantize("int8")
    with pytest.raises(ValueError, match="Invalid quantization mode"):
        keras_embed.Embedding(V, D, weights=np.ones((V, D))).quantize("int7")


def test_float8_is_refused_naming_the_modes_we_have():
    layer = keras_embed.Embedding(V, D)
    layer.build()
    with pytest.raises(
        NotImplementedError,
        match=r"Expected one of \('int8', 'int4'\). Received: quantization_mode=float8",
    ):
        layer.quantize("float8")
    assert layer.quantization_mode is None


def test_subclasses_refuse_unless_type_check_is_off():
    class Subclass(keras_embed.Embedding):
        pass

    layer = Subclass(V, D)
    layer.build()
    with pytest.raises(NotImplementedError, match="does not have a `quantize` method"):
        layer.quantize("int8")
    layer.quantize("int8", type_check=False)
    assert layer.quantization_mode == "int8"


def functional_pair(rng):
    """The same functional model (embedding -> pooling -> dense), ours and
    stock's, sharing weights."""
    models = []
    for cls in (keras_embed.Embedding, keras.layers.Embedding):
        ids = keras.Input(shape=(5,), dtype="int32")
        x = cls(V, D, name="embedding")(ids)
        x = keras.layers.GlobalAveragePooling1D()(x)
        models.append(keras.Model(ids, keras.layers.Dense(3, name="dense")(x)))
    models[1].set_weights(models[0].get_weights())
    return models


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_model_quantize_reaches_our_layer(rng, mode):
    ours, stock = functional_pair(rng)
    ids = rng.integers(0, V, size=(4, 5))
    ours.quantize(mode)
    stock.quantize(mode)
    assert ours.get_layer("embedding").quantization_mode == mode
    assert ours.get_layer("dense").quantization_mode == mode
    np.testing.assert_array_equal(ours.predict(ids, verbose=0), stock.predict(ids, verbose=0))


def test_model_quantize_filters_can_leave_our_layer_float(rng):
    ours, _ = functional_pair(rng)
    ours.quantize("int8", filters="dense")
    assert ours.get_layer("embedding").quantization_mode is None
    assert ours.get_layer("dense").quantization_mode == "int8"


@pytest.mark.parametrize("layout", ["int8", "int4_per_row", "int4_block_6"])
def test_keras_file_round_trip(tmp_path, rng, layout):
    ours, _ = functional_pair(rng)
    mode, config = LAYOUTS[layout]
    ours.quantize(mode, config=config)
    ids = rng.integers(0, V, size=(4, 5))
    path = str(tmp_path / "model.keras")
    ours.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.get_layer("embedding")
    assert isinstance(layer, keras_embed.Embedding)
    assert layer.dtype_policy.name == ours.get_layer("embedding").dtype_policy.name
    np.testing.assert_array_equal(loaded(ids), ours(ids))


def quantized_sequential(cls, mode, config):
    model = keras.Sequential(
        [keras.Input(shape=(5,), dtype="int32"), cls(V, D, name="embedding")]
    )
    model.quantize(mode, config=config)
    return model


@pytest.mark.parametrize("layout", ["int8", "int4_per_row", "int4_block_8"])
@pytest.mark.parametrize("direction", ["ours_to_stock", "stock_to_ours"])
def test_weights_files_interchange_with_stock(tmp_path, rng, layout, direction):
    mode, config = LAYOUTS[layout]
    ours, stock = quantized_pair(rng, layout)
    source = keras.Sequential([keras.Input(shape=(5,), dtype="int32")])
    source.add(ours if direction == "ours_to_stock" else stock)
    path = str(tmp_path / "model.weights.h5")
    source.save_weights(path)
    target_cls = (
        keras.layers.Embedding if direction == "ours_to_stock" else keras_embed.Embedding
    )
    target = quantized_sequential(target_cls, mode, config)
    target.load_weights(path)
    ids = rng.integers(0, V, size=(4, 5))
    np.testing.assert_array_equal(target(ids), source(ids))


def test_loading_a_file_of_another_layout_is_a_clear_error(tmp_path, rng):
    ours, _ = quantized_pair(rng, "int4_block_8")
    model = keras.Sequential([keras.Input(shape=(5,), dtype="int32"), ours])
    path = str(tmp_path / "model.weights.h5")
    model.save_weights(path)
    target = quantized_sequential(keras_embed.Embedding, "int8", None)
    with pytest.raises(
        ValueError,
        match=r"Embedding layer 'embedding' expects 2 saved variables "
        r"\(embeddings, embeddings_scale; quantization mode int8\), but the "
        r"file lists 4",
    ):
        target.load_weights(path)


@pytest.mark.parametrize("layout", ["int8", "int4_block_8"])
def test_exported_savedmodel_serves_the_quantized_lookup(tmp_path, rng, layout):
    mode, config = LAYOUTS[layout]
    model = quantized_sequential(keras_embed.Embedding, mode, config)
    path = os.path.join(tmp_path, "exported")
    model.export(path, format="tf_saved_model", verbose=False)
    served = keras.layers.TFSMLayer(path)
    ids = rng.integers(0, V, size=(4, 5)).astype("int32")
    np.testing.assert_array_equal(served(ids), model(ids))


def test_quantized_layer_trains_nothing_but_the_model_still_trains(rng):
    ours, _ = functional_pair(rng)
    ours.quantize("int8", filters="embedding")
    embedding = ours.get_layer("embedding")
    before = stored(embedding)
    dense_before = ours.get_layer("dense").kernel.numpy()
    ours.compile("sgd", "mse")
    ours.fit(rng.integers(0, V, size=(8, 5)), rng.normal(size=(8, 3)), verbose=0)
    for name, value in stored(embedding).items():
        np.testing.assert_array_equal(value, before[name])
    assert not np.array_equal(ours.get_layer("dense").kernel.numpy(), dense_before)


def _in_a_policy_map(own_policy):
    """A built layer whose dtype is a DTypePolicyMap: float32 by default,
    `own_policy` for this layer."""
    policy_map = keras.dtype_policies.DTypePolicyMap(default_policy="float32")
    policy_map["words"] = own_policy
    layer = keras_embed.Embedding(V, D, name="words", dtype=policy_map)
    layer.build()
    return layer


@pytest.mark.parametrize(
    "mode, config, policy, scale_shape",
    [("int8", None, "int8_from_bfloat16", (V,)),
     ("int4", Int4QuantizationConfig(block_size=8), "int4/8_from_bfloat16", (V, 3))],
)
def test_quantize_under_a_policy_map_reads_the_layers_own_policy(mode, config, policy, scale_shape):
    # The map's own `name` and `quantization_mode` are its default's: stock
    # Keras 3.15 names the new policy "int8_from_map_float32", and fails.
    layer = _in_a_policy_map("bfloat16")
    layer.quantize(mode, config=config)
    assert layer.dtype_policy["words"].name == policy
    assert tuple(layer.embeddings_scale.shape) == scale_shape
    assert layer(np.array([[1, 2]])).dtype == "bfloat16"


def test_int4_policy_set_under_a_policy_map_quantizes_with_its_block_size():
    layer = _in_a_policy_map("float32")
    layer.dtype_policy = "int4/8_from_float32"  # Keras then calls quantize("int4").
    assert layer.quantization_mode == "int4"
    assert layer._int4_block_size == 8 and layer.quantization_config.block_size == 8
    assert tuple(layer.embeddings_scale.shape) == (V, 3)
