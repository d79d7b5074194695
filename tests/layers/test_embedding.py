"""The layer against stock `keras.layers.Embedding`: outputs, weights, masks,
config."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_embed
from conftest import layer_pair


def test_constructor_takes_stock_arguments_plus_input_length():
    ours = inspect.signature(keras_embed.Embedding.__init__).parameters
    stock = inspect.signature(keras.layers.Embedding.__init__).parameters
    assert list(ours)[: len(stock) - 1] == list(stock)[:-1]  # up to **kwargs
    assert [p for p in ours if p not in stock] == ["input_length"]
    for name, param in stock.items():
        assert ours[name].default == param.default, name


def test_is_a_layer_but_not_a_stock_embedding():
    layer = keras_embed.Embedding(4, 2)
    assert isinstance(layer, keras.layers.Layer)
    assert not isinstance(layer, keras.layers.Embedding)


@pytest.mark.parametrize(
    "policy_name", ["float32", "mixed_float16", "mixed_bfloat16"]
)
def test_output_is_bit_identical_to_stock(policy, rng, policy_name):
    policy(policy_name)
    ours, stock = layer_pair(50, 7, rng)
    ids = rng.integers(0, 50, size=(4, 9))
    out, expected = ours(ids), stock(ids)
    assert out.dtype == expected.dtype == keras.mixed_precision.dtype_policy().compute_dtype
    assert ours.embeddings.dtype == "float32"
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(keras.ops.cast(out, "float32")),
        keras.ops.convert_to_numpy(keras.ops.cast(expected, "float32")),
    )


@pytest.mark.parametrize(
    "dtype",
    ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
     "float16", "float32", "float64"],
)
def test_ids_of_any_integer_width_and_whole_floats(rng, dtype):
    ours, stock = layer_pair(100, 3, rng)
    ids = rng.integers(0, 100, size=(3, 5)).astype(dtype)
    np.testing.assert_array_equal(ours(ids), stock(ids))
    np.testing.assert_array_equal(
        ours(ids), ours.embeddings.numpy()[ids.astype("int64")]
    )


def test_lookup_picks_the_rows_worked_out_by_hand():
    layer = keras_embed.Embedding(3, 2, weights=[[[0, 1], [2, 3], [4, 5]]])
    np.testing.assert_array_equal(
        layer(np.array([[2, 0], [1, 1]])),
        [[[4, 5], [0, 1]], [[2, 3], [2, 3]]],
    )


def test_ids_of_any_rank(rng):
    ours, stock = layer_pair(20, 4, rng)
    for shape in [(6,), (2, 3), (2, 3, 4), (2, 1, 3, 2)]:
        ids = rng.integers(0, 20, size=shape)
        assert ours(ids).shape == (*shape, 4)
        np.testing.assert_array_equal(ours(ids), stock(ids))


def test_embeddings_is_the_table_variable():
    layer = keras_embed.Embedding(6, 3)
    layer.build()
    assert isinstance(layer.embeddings, keras.Variable)
    assert layer.embeddings.name == "embeddings"
    assert layer.embeddings.shape == (6, 3)
    assert layer.weights == [layer.embeddings]
    assert layer.trainable_weights == [layer.embeddings]
    layer.embeddings.assign(np.full((6, 3), 2.5, "float32"))
    np.testing.assert_array_equal(layer(np.array([[1, 5]])), np.full((1, 2, 3), 2.5))


def test_embeddings_before_build_is_a_clear_error():
    layer = keras_embed.Embedding(6, 3, name="words")
    with pytest.raises(AttributeError, match="Embedding layer 'words' is not built yet"):
        layer.embeddings


def test_weights_argument_sets_the_table():
    table = np.arange(12, dtype="float32").reshape(4, 3)
    for weights in (table, [table]):
        layer = keras_embed.Embedding(4, 3, weights=weights)
        np.testing.assert_array_equal(layer.embeddings.numpy(), table)


def test_initializer_draws_the_same_table_as_stock():
    init = keras.initializers.RandomUniform(seed=7)
    ours = keras_embed.Embedding(30, 5, embeddings_initializer=init)
    stock = keras.layers.Embedding(30, 5, embeddings_initializer=init)
    ours.build()
    stock.build()
    np.testing.assert_array_equal(ours.embeddings.numpy(), stock.embeddings.numpy())


def test_gradient_reaches_only_the_looked_up_rows():
    layer = keras_embed.Embedding(5, 2, embeddings_initializer="ones")
    layer.build()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(np.array([[1, 3, 3]])))
    (grad,) = tape.gradient(loss, layer.trainable_variables)
    assert isinstance(grad, tf.IndexedSlices)
    np.testing.assert_array_equal(
        tf.convert_to_tensor(grad), [[0, 0], [1, 1], [0, 0], [2, 2], [0, 0]]
    )


def test_regularizer_and_constraint_behave_as_stock(rng):
    kwargs = dict(
        embeddings_regularizer=keras.regularizers.L2(0.1),
        embeddings_constraint=keras.constraints.MaxNorm(1.0),
    )
    ours, stock = layer_pair(8, 3, rng, **kwargs)
    ids = np.array([[1, 2]])
    ours(ids), stock(ids)
    np.testing.assert_allclose(ours.losses[0], stock.losses[0], rtol=1e-6)
    # TensorFlow's float32 sum of 24 squares against NumPy's, each summing in
    # its own order (which SIMD width sets): up to 24 roundings, 1.4e-6
    # relative at worst (rtol=1e-5); the penalty is about 2, far from 0 (atol=0).
    np.testing.assert_allclose(ours.losses[0], 0.1 * np.sum(ours.embeddings.numpy() ** 2), rtol=1e-5, atol=0)
    # The constraint is applied after each optimizer step, as stock's: rows
    # of the random N(0, 1) table whose norm is above 1 come back to norm 1.
    table = ours.embeddings.numpy()
    assert (np.linalg.norm(table, axis=1) > 1.0).any()
    for layer in (ours, stock):
        optimizer = keras.optimizers.SGD(0.1)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(ids))
        optimizer.apply(tape.gradient(loss, layer.trainable_weights), layer.trainable_weights)
    np.testing.assert_allclose(ours.embeddings.numpy(), stock.embeddings.numpy(), rtol=1e-6)
    assert np.linalg.norm(ours.embeddings.numpy(), axis=1).max() <= 1.0 + 1e-6


# Masking.


def test_compute_mask_is_ids_not_zero():
    layer = keras_embed.Embedding(10, 2, mask_zero=True)
    assert layer.supports_masking
    ids = np.array([[3, 0, 5], [0, 0, 1]])
    np.testing.assert_array_equal(
        layer.compute_mask(ids), [[True, False, True], [False, False, True]]
    )
    assert keras_embed.Embedding(10, 2).compute_mask(ids) is None


def _padding_sensitivity(downstream, mask_zero, rng):
    """How far a model's unpadded outputs move when row 0 of the table
    changes. Rows end in zero padding."""
    keras.utils.set_random_seed(3)
    ids_in = keras.Input(shape=(None,), dtype="int32")
    embedding = keras_embed.Embedding(20, 8, mask_zero=mask_zero)
    model = keras.Model(ids_in, downstream(embedding(ids_in)))
    ids = np.array([[4, 7, 2, 0, 0], [9, 1, 0, 0, 0], [3, 5, 6, 8, 11]])
    before = model(ids)
    table = embedding.embeddings.numpy()
    table[0] = rng.normal(size=8) * 10
    embedding.embeddings.assign(table)
    after = model(ids)
    return float(np.max(np.abs(after - before)))


def _attention_on_tokens(x):
    attended = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)(x, x)
    return attended[:, :2]  # Every row has at least two real tokens.


@pytest.mark.parametrize(
    "downstream",
    [
        lambda x: keras.layers.LSTM(4)(x),
        lambda x: keras.layers.GRU(4)(x),
        lambda x: keras.layers.GlobalAveragePooling1D()(x),
        _attention_on_tokens,
    ],
    ids=["LSTM", "GRU", "GlobalAveragePooling1D", "MultiHeadAttention"],
)
def test_mask_makes_downstream_layers_ignore_padding(downstream, rng):
    assert _padding_sensitivity(downstream, True, rng) == 0.0
    # Without the mask, the same change to row 0 shows up.
    assert _padding_sensitivity(downstream, False, rng) > 1e-3


# Config.


def test_config_has_stock_keys_plus_input_length():
    ours = keras_embed.Embedding(10, 3, input_length=4).get_config()
    stock = keras.layers.Embedding(10, 3).get_config()
    assert set(ours) == set(stock) | {"input_length"}
    assert ours["input_length"] == 4
    for key in stock:
        if key != "name":
            assert ours[key] == stock[key], key


def test_config_round_trip_keeps_every_setting():
    layer = keras_embed.Embedding(
        10, 3,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=2),
        embeddings_regularizer=keras.regularizers.L1(0.01),
        embeddings_constraint=keras.constraints.NonNeg(),
        activity_regularizer=keras.regularizers.L2(0.02),
        mask_zero=True,
        input_length=(3, None),
        dtype="mixed_bfloat16",
        trainable=False,
        name="words",
    )
    clone = keras_embed.Embedding.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert clone.input_length == (3, None)
    assert clone.dtype_policy.name == "mixed_bfloat16"
    assert isinstance(clone.embeddings_constraint, keras.constraints.NonNeg)
    assert not clone.trainable


def test_from_config_accepts_a_stock_keras3_config(rng):
    stock = keras.layers.Embedding(12, 4, mask_zero=True, name="tokens")
    ours = keras_embed.Embedding.from_config(stock.get_config())
    assert (ours.input_dim, ours.output_dim, ours.mask_zero, ours.name) == (12, 4, True, "tokens")
    assert ours.input_length is None


def test_from_config_accepts_a_keras2_config():
    keras2_config = {  # As tf-keras 2.x writes it.
        "name": "embedding",
        "trainable": True,
        "batch_input_shape": [None, 10],
        "dtype": "float32",
        "input_dim": 100,
        "output_dim": 8,
        "embeddings_initializer": {
            "class_name": "RandomUniform",
            "config": {"minval": -0.05, "maxval": 0.05, "seed": None},
        },
        "embeddings_regularizer": None,
        "activity_regularizer": None,
        "embeddings_constraint": None,
        "mask_zero": False,
        "input_length": 10,
    }
    layer = keras_embed.Embedding.from_config(keras2_config)
    assert layer.input_length == 10
    assert isinstance(layer.embeddings_initializer, keras.initializers.RandomUniform)
    model = keras.Sequential([layer])
    assert model.input_shape == (None, 10)
    assert model.output_shape == (None, 10, 8)


def test_repr_says_the_sizes():
    assert repr(keras_embed.Embedding(1000, 64, name="e")) == "<Embedding name=e, 1000, 64>"
    assert repr(keras_embed.Embedding(9, 2, mask_zero=True, input_length=5, name="e")) == (
        "<Embedding name=e, 9, 2, mask_zero=True, input_length=5>"
    )


@pytest.mark.parametrize("arg", ["input_dim", "output_dim"])
@pytest.mark.parametrize("value", [0, -3, 2.0, True, "8", None])
def test_bad_sizes_are_rejected_as_stock_does(arg, value):
    kwargs = {"input_dim": 5, "output_dim": 5, arg: value}
    with pytest.raises(ValueError, match=f"`{arg}` must be a positive integer. Received: {arg}="):
        keras_embed.Embedding(**kwargs)
    with pytest.raises(ValueError, match=f"`{arg}` must be a positive integer"):
        keras.layers.Embedding(**kwargs)


def test_weights_of_the_wrong_shape_name_the_expected_shape():
    with pytest.raises(
        ValueError,
        match=r"Embedding layer 'e': `weights` must have shape \(input_dim, output_dim\) "
        r"= \(4, 3\)\. Received: weights of shape \(3, 4\)\.",
    ):
        keras_embed.Embedding(4, 3, weights=np.zeros((3, 4)), name="e")
