"""LoRA against stock `keras.layers.Embedding` and numbers worked out by hand."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_embed
from conftest import layer_pair

V, D, RANK = 12, 6, 3


def lora_pair(rng, rank=RANK, lora_alpha=None, **kwargs):
    """Our layer and stock's with LoRA on, the same table and LoRA weights."""
    ours, stock = layer_pair(V, D, rng, **kwargs)
    ours.enable_lora(rank, lora_alpha=lora_alpha)
    stock.enable_lora(rank, lora_alpha=lora_alpha)
    a = rng.normal(size=(V, rank)).astype("float32")
    b = rng.normal(size=(rank, D)).astype("float32")
    for layer in (ours, stock):
        layer.lora_embeddings_a.assign(a)
        layer.lora_embeddings_b.assign(b)
    return ours, stock


@pytest.mark.cross_kernel
def test_lookup_adds_the_scaled_low_rank_delta(rng):
    ours, stock = lora_pair(rng, lora_alpha=6)
    table = ours._embeddings.numpy()
    a, b = ours.lora_embeddings_a.numpy(), ours.lora_embeddings_b.numpy()
    ids = rng.integers(0, V, size=(4, 5))
    by_hand = table[ids] + (6 / RANK) * (a @ b)[ids]
    # TensorFlow's matmul (oneDNN or Eigen, per CPU) against NumPy's, and ours
    # against stock's (which merge the delta in another order): 3-term sums
    # of N(0, 1) products, values up to about 20. Equal here; a matmul that
    # sums in another order is a few float32 ulps off: rtol=1e-5, and
    # atol=1e-6 for the values near 0.
    np.testing.assert_allclose(ours(ids), by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours(ids), stock(ids), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.embeddings, stock.embeddings, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.embeddings, table + 2 * a @ b, rtol=1e-5, atol=1e-6)


def test_lora_weights_are_float32_trainable_and_the_table_frozen(policy, rng):
    policy("mixed_bfloat16")
    layer = keras_embed.Embedding(V, D)
    layer.build()
    layer.enable_lora(RANK)
    assert [w.name for w in layer.trainable_weights] == [
        "lora_embeddings_a",
        "lora_embeddings_b",
    ]
    assert [w.name for w in layer.non_trainable_weights] == ["embeddings"]
    assert layer.lora_embeddings_a.dtype == layer.lora_embeddings_b.dtype == "float32"
    assert layer.lora_embeddings_a.shape == (V, RANK)
    assert layer.lora_embeddings_b.shape == (RANK, D)
    assert layer(np.array([[1, 2]])).dtype == "bfloat16"


def test_enabling_lora_leaves_outputs_unchanged_until_trained(rng):
    layer, _ = layer_pair(V, D, rng)
    ids = rng.integers(0, V, size=(3, 4))
    before = layer(ids).numpy()
    layer.enable_lora(RANK)  # b starts at zeros
    np.testing.assert_array_equal(layer(ids), before)


@pytest.mark.cross_kernel
def test_constructor_lora_rank_and_alpha(rng):
    layer = keras_embed.Embedding(V, D, lora_rank=2, lora_alpha=8)
    layer.build()
    assert layer.lora_enabled
    # Stock Keras 3.15 re-enables LoRA at build without `lora_alpha`, which
    # falls back to the rank; ours keeps the alpha it was given.
    assert (layer.lora_rank, layer.lora_alpha) == (2, 8)
    layer.lora_embeddings_b.assign(np.ones((2, D)))
    a = layer.lora_embeddings_a.numpy()
    table = layer._embeddings.numpy()
    # TensorFlow's matmul against NumPy's, a 2-term sum of values up to 0.7
    # (he_uniform), times 4, that may cancel near 0: atol=1e-6 (about 4 float32
    # ulps of 4 x 0.7) besides rtol=1e-6.
    np.testing.assert_allclose(
        layer(np.array([5])), table[[5]] + 4 * a[[5]] @ np.ones((2, D)), rtol=1e-6, atol=1e-6
    )
    config = layer.get_config()
    assert (config["lora_rank"], config["lora_alpha"]) == (2, 8)
    restored = keras_embed.Embedding.from_config(config)
    restored.build()
    assert restored.lora_enabled and restored.lora_alpha == 8


def test_one_training_step_moves_lora_as_stocks_does(rng):
    ours, stock = lora_pair(rng)
    ids = rng.integers(0, V, size=(8, 3))
    target = rng.normal(size=(8, 3, D)).astype("float32")
    updated = []
    for layer in (ours, stock):
        model = keras.Sequential([keras.Input((3,), dtype="int32"), layer])
        model.compile(keras.optimizers.SGD(0.1), "mse")
        table = layer._embeddings.numpy()
        model.train_on_batch(ids, target)
        np.testing.assert_array_equal(layer._embeddings.numpy(), table)
        updated.append([layer.lora_embeddings_a.numpy(), layer.lora_embeddings_b.numpy()])
    for ours_weight, stock_weight in zip(*updated):
        np.testing.assert_allclose(ours_weight, stock_weight, rtol=1e-5, atol=1e-6)


def test_gradient_of_a_touches_only_the_looked_up_rows(rng):
    layer, _ = lora_pair(rng)
    ids = np.array([[1, 4], [4, 7]])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(ids))
    grad_a, grad_b = tape.gradient(
        loss, [layer.lora_embeddings_a.value, layer.lora_embeddings_b.value]
    )
    grad_a = tf.convert_to_tensor(grad_a).numpy()
    assert set(np.flatnonzero(np.abs(grad_a).sum(axis=1))) == {1, 4, 7}
    assert np.abs(grad_b.numpy()).sum() > 0


def test_regularizer_applies_to_the_lora_weights_as_stock(rng):
    ours, stock = lora_pair(rng, embeddings_regularizer="l2")
    ours(np.array([1]))
    stock(np.array([1]))
    # Keras regularizes trainable weights only: the frozen table drops out.
    assert len(ours.losses) == len(stock.losses) == 2
    a, b = ours.lora_embeddings_a.numpy(), ours.lora_embeddings_b.numpy()
    by_hand = 0.01 * (np.square(a).sum() + np.square(b).sum())  # "l2": 0.01
    # float32 sums of 54 squares, TensorFlow's and NumPy's, in their own
    # orders: rtol=1e-5; a sum of squares is far from 0 (atol=0).
    np.testing.assert_allclose(sum(ours.losses).numpy(), by_hand, rtol=1e-5, atol=0)
    np.testing.assert_allclose(sum(stock.losses).numpy(), by_hand, rtol=1e-5, atol=0)


def test_enable_lora_errors_quote_stocks_words_and_our_layer():
    layer = keras_embed.Embedding(V, D, embeddings_constraint="non_neg", name="words")
    with pytest.raises(
        ValueError,
        match=r"incompatible with embedding constraints.*Embedding layer 'words'",
    ):
        layer.enable_lora(2)
    layer = keras_embed.Embedding(V, D, name="words")
    with pytest.raises(
        ValueError, match=r"isn't yet built: call Embedding layer 'words'"
    ):
        layer.enable_lora(2)
    layer.build()
    for rank in (0, -1, 2.5, True, "2"):
        with pytest.raises(ValueError, match=f"`rank` must be a positive integer. Received: rank={rank!r}"):
            layer.enable_lora(rank)
    with pytest.raises(ValueError, match=r"^Embedding layer 'words': `lora_alpha` must be a positive "
                       r"number or None\. Received: lora_alpha='x' \(of type str\)\.$"):
        layer.enable_lora(2, lora_alpha="x")
    assert not layer.lora_enabled and [w.name for w in layer.weights] == ["embeddings"]
    layer.enable_lora(2)
    with pytest.raises(
        ValueError,
        match=r"lora is already enabled.*'words' has lora_rank=2",
    ):
        layer.enable_lora(2)


def model_with(layer):
    return keras.Sequential([keras.Input((3,), dtype="int32"), layer])


def test_weights_file_merges_the_delta_for_layers_without_lora(tmp_path, rng):
    ours, _ = lora_pair(rng)
    model = model_with(ours)
    ids = rng.integers(0, V, size=(4, 3))
    expected = model.predict(ids, verbose=0)
    path = str(tmp_path / "lora.weights.h5")
    model.save_weights(path)
    for cls in (keras_embed.Embedding, keras.layers.Embedding):
        plain = model_with(cls(V, D))
        plain.load_weights(path)
        assert len(plain.weights) == 1
        np.testing.assert_allclose(
            plain.predict(ids, verbose=0), expected, rtol=1e-5, atol=1e-6
        )


def test_loading_into_a_lora_layer_zeroes_its_delta(tmp_path, rng):
    ours, _ = lora_pair(rng)
    plain = model_with(keras.layers.Embedding(V, D))
    path = str(tmp_path / "plain.weights.h5")
    plain.save_weights(path)
    model = model_with(ours)
    model.load_weights(path)
    # B zeros: the delta is zero. A fresh from he_uniform (not zeros, so
    # that B's gradient is not zero; see test_lora_reload.py).
    assert not np.any(ours.lora_embeddings_b.numpy())
    a = ours.lora_embeddings_a.numpy()
    assert np.count_nonzero(a) == a.size and np.abs(a).max() <= np.sqrt(6 / V)
    ids = rng.integers(0, V, size=(4, 3))
    np.testing.assert_array_equal(model.predict(ids, verbose=0), plain.predict(ids, verbose=0))


def test_keras_file_round_trip_keeps_lora_on(tmp_path, rng):
    ours, _ = lora_pair(rng, lora_alpha=6)
    model = model_with(ours)
    path = str(tmp_path / "lora.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    layer = loaded.layers[-1]
    assert layer.lora_enabled and (layer.lora_rank, layer.lora_alpha) == (RANK, 6)
    ids = rng.integers(0, V, size=(4, 3))
    np.testing.assert_allclose(
        loaded.predict(ids, verbose=0), model.predict(ids, verbose=0), rtol=1e-5, atol=1e-6
    )


@pytest.mark.cross_kernel
def test_saved_table_keeps_float32_under_mixed_precision(policy, rng):
    # Stock saves the merged table cast to the compute dtype (bfloat16 here),
    # losing 16 bits of every entry; ours saves it in the variable dtype.
    policy("mixed_bfloat16")
    layer, _ = lora_pair(rng)
    store = {}
    layer.save_own_variables(store)
    merged = layer._embeddings.numpy() + layer.lora_embeddings_a.numpy() @ layer.lora_embeddings_b.numpy()
    assert store["0"].dtype == "float32"
    # TensorFlow's matmul against NumPy's: as in test_lookup_adds_the_scaled_low_rank_delta.
    np.testing.assert_allclose(store["0"], merged, rtol=1e-5, atol=1e-6)


@pytest.mark.cross_kernel
@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("lora_first", [True, False])
def test_lora_over_a_quantized_table(rng, mode, lora_first):
    layer, _ = layer_pair(V, D, rng)
    if lora_first:
        layer.enable_lora(RANK)
        layer.quantize(mode)
    else:
        layer.quantize(mode)
        layer.enable_lora(RANK)
    assert [w.name for w in layer.trainable_weights] == [
        "lora_embeddings_a",
        "lora_embeddings_b",
    ]
    ids = np.arange(V)
    quantized = layer(ids).numpy()
    layer.lora_embeddings_b.assign(rng.normal(size=(RANK, D)))
    delta = layer.lora_embeddings_a.numpy() @ layer.lora_embeddings_b.numpy()
    # TensorFlow's matmul against NumPy's, and the dequantized rows and the
    # delta added there as here but in their own kernels: values up to about
    # 5, equal here; rtol=1e-5, atol=1e-5 (about 20 ulps of 4) for those near 0.
    np.testing.assert_allclose(layer(ids), quantized + delta, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_saving_requantizes_the_merged_table(tmp_path, rng, mode):
    layer, _ = layer_pair(V, D, rng)
    layer.quantize(mode)
    layer.enable_lora(RANK)
    layer.lora_embeddings_b.assign(0.1 * rng.normal(size=(RANK, D)))
    model = model_with(layer)
    ids = rng.integers(0, V, size=(4, 3))
    path = str(tmp_path / "q.weights.h5")
    model.save_weights(path)
    for cls in (keras_embed.Embedding, keras.layers.Embedding):
        plain = model_with(cls(V, D))
        plain.quantize(mode)
        plain.load_weights(path)
        assert not plain.layers[-1].lora_enabled
        # Equal up to the quantization of the merged table: half a step.
        merged = layer(np.arange(V)).numpy()
        step = np.abs(merged).max(axis=1) / (127 if mode == "int8" else 7)
        error = np.abs(plain.predict(ids, verbose=0) - model.predict(ids, verbose=0))
        assert np.all(error <= step[ids][..., None] * 0.5 * 1.001 + 1e-6)


def test_enable_lora_takes_a_numpy_integer_rank_as_the_constructor_does():
    from_constructor = keras_embed.Embedding(V, D, lora_rank=np.int64(2))
    from_constructor.build()
    layer = keras_embed.Embedding(V, D)
    layer.build()
    layer.enable_lora(np.int64(2))
    assert layer.lora_rank == from_constructor.lora_rank == 2
    assert type(layer.lora_rank) is int and type(layer.lora_alpha) is int
    assert layer.lora_embeddings_a.shape == (V, 2)
    assert json.dumps(layer.get_config())  # a NumPy integer would not serialize
