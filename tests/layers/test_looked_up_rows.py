"""LookedUpRowsRegularizer: a regularizer of the rows a batch looks up."""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import indexed_slices as indexed_slices_module

import keras_embed
from keras_embed import LookedUpRowsRegularizer
from keras_embed.optimizers import LazyAdam

VOCABULARY, WIDTH = 10, 2


def table_layer(regularizer, rng, **kwargs):
    layer = keras_embed.Embedding(VOCABULARY, WIDTH, embeddings_regularizer=regularizer, **kwargs)
    layer.build()
    table = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    layer.embeddings.assign(table)
    return layer, table


def test_penalty_is_the_wrapped_regularizer_of_the_distinct_looked_up_rows(rng):
    layer, table = table_layer(LookedUpRowsRegularizer(keras.regularizers.l2(0.01)), rng)
    layer(np.array([[3, 3, 7], [7, 1, 3]]))
    # Rows 1, 3 and 7, each once: 0.01 * sum of their squares.
    expected = 0.01 * np.sum(table[[1, 3, 7]].astype("float64") ** 2)
    (loss,) = layer.losses
    # A float32 sum of 6 squares against float64: 6 roundings, 3.6e-7 relative
    # at worst (rtol=1e-6); a sum of squares, not near 0 (atol=0). The same below.
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6, atol=0)
    # No weight regularizer on the table: stock's whole-table penalty is gone.
    assert layer.embeddings.regularizer is None


def test_the_gradient_is_stocks_on_looked_up_rows_zero_elsewhere_and_sparse(rng):
    l2 = keras.regularizers.l2(0.05)
    ours, table = table_layer(LookedUpRowsRegularizer(l2), rng)
    stock = keras.layers.Embedding(VOCABULARY, WIDTH, embeddings_regularizer=l2)
    stock.build()
    stock.embeddings.assign(table)
    ids = np.array([[2, 5, 5], [9, 2, 0]])
    gradients = []
    for layer in (ours, stock):
        with tf.GradientTape() as tape:
            outputs = layer(ids)
            loss = tf.reduce_sum(outputs * 0.5) + tf.add_n(layer.losses)
        gradients.append(tape.gradient(loss, layer.embeddings.value))
    ours_gradient, stock_gradient = gradients
    assert isinstance(ours_gradient, tf.IndexedSlices)
    ours_dense = tf.convert_to_tensor(ours_gradient).numpy()
    used = [0, 2, 5, 9]
    np.testing.assert_allclose(ours_dense[used], stock_gradient.numpy()[used], rtol=1e-6)
    # By hand: 0.5 per occurrence plus 2 * 0.05 * w.
    counts = np.bincount(ids.reshape(-1), minlength=VOCABULARY)[:, None]
    # float32 against float64: a rounding or two of values of 0.5 or more (atol=0).
    np.testing.assert_allclose(ours_dense[used], (0.5 * counts + 0.1 * table)[used], rtol=1e-6, atol=0)
    unused = [i for i in range(VOCABULARY) if i not in used]
    np.testing.assert_array_equal(ours_dense[unused], 0.0)
    assert np.all(stock_gradient.numpy()[unused] != 0.0)  # stock's is dense


def test_fit_with_lazy_adam_stays_sparse_and_leaves_other_rows(rng, monkeypatch):
    monkeypatch.setattr(indexed_slices_module, "_LARGE_SPARSE_NUM_ELEMENTS", 1)
    regularizer = LookedUpRowsRegularizer(keras.regularizers.l2(1e-3))
    layer = keras_embed.Embedding(VOCABULARY, WIDTH, embeddings_regularizer=regularizer)
    model = keras.Sequential([keras.Input((3,), dtype="int32"), layer,
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    model.compile(LazyAdam(0.1), "mse")
    start = layer.embeddings.numpy()
    ids = rng.integers(1, VOCABULARY - 1, size=(8, 3))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(ids, rng.normal(size=(8, 1)), epochs=2, verbose=0)
    assert not [w for w in record if "Converting sparse IndexedSlices" in str(w.message)]
    table = layer.embeddings.numpy()
    np.testing.assert_array_equal(table[[0, VOCABULARY - 1]], start[[0, VOCABULARY - 1]])
    # The control: stock's regularizer makes the gradient dense.
    stock_layer = keras_embed.Embedding(VOCABULARY, WIDTH, embeddings_regularizer="l2")
    model = keras.Sequential([keras.Input((3,), dtype="int32"), stock_layer,
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    model.compile(LazyAdam(0.1), "mse")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(ids, rng.normal(size=(8, 1)), epochs=1, verbose=0)
    assert [w for w in record if "Converting sparse IndexedSlices" in str(w.message)]


def test_ragged_ids_are_regularized_by_their_rows(rng):
    layer, table = table_layer(LookedUpRowsRegularizer("l1"), rng)
    layer(tf.ragged.constant([[4], [6, 4, 8]]))
    (loss,) = layer.losses
    np.testing.assert_allclose(float(loss), 0.01 * np.abs(table[[4, 6, 8]]).sum(),
                               rtol=1e-6, atol=0)  # 6 terms, as in the first test


def test_saved_in_the_layer_config_and_in_a_keras_file(rng, tmp_path):
    regularizer = LookedUpRowsRegularizer(keras.regularizers.l2(1e-6))
    layer = keras_embed.Embedding(VOCABULARY, WIDTH, embeddings_regularizer=regularizer)
    config = layer.get_config()["embeddings_regularizer"]
    assert config["registered_name"] == "keras_embed>LookedUpRowsRegularizer"
    assert config["config"]["regularizer"]["config"] == {"l2": 1e-6}
    restored = keras_embed.Embedding.from_config(layer.get_config())
    assert isinstance(restored.embeddings_regularizer, LookedUpRowsRegularizer)
    assert restored.embeddings_regularizer.regularizer.get_config() == {"l2": 1e-6}
    model = keras.Sequential([keras.Input((3,), dtype="int32"), layer])
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    ids = rng.integers(VOCABULARY, size=(2, 3))
    loaded(ids), model(ids)
    np.testing.assert_allclose(float(loaded.losses[0]), float(model.losses[0]), rtol=1e-6)


def test_called_directly_it_is_the_wrapped_regularizer(rng):
    x = rng.normal(size=(3, 2)).astype("float32")
    np.testing.assert_allclose(
        float(LookedUpRowsRegularizer("l2")(x)), float(keras.regularizers.L2()(x)), rtol=1e-6
    )


@pytest.mark.parametrize("bad", [None, "nonsense", 0.5])
def test_bad_regularizer_is_refused_with_a_clear_message(bad):
    with pytest.raises(ValueError) as error:
        LookedUpRowsRegularizer(bad)
    assert str(error.value) == (
        "LookedUpRowsRegularizer: `regularizer` must be a Keras regularizer to apply "
        f"to the looked-up rows, such as keras.regularizers.l2(1e-6). Received: regularizer={bad!r}."
    )


@pytest.mark.parametrize("kind", ["dense", "ragged"])
def test_embedding_bag_regularizes_the_rows_its_bags_look_up(rng, kind):
    # Padding (id 0 with mask_zero) is left out of the bags, so out of the penalty.
    bag = keras_embed.EmbeddingBag(
        VOCABULARY, WIDTH, mask_zero=True,
        embeddings_regularizer=LookedUpRowsRegularizer(keras.regularizers.l2(0.01)))
    bag.build()
    table = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    bag.embeddings.assign(table)
    ids = [[3, 3, 7], [7, 1, 0]]
    ids = tf.ragged.constant([[3, 3, 7], [7, 1]]) if kind == "ragged" else np.array(ids)
    with tf.GradientTape() as tape:
        outputs = bag(ids)
        (loss,) = bag.losses
        total = tf.reduce_sum(outputs) + loss
    np.testing.assert_allclose(float(loss), 0.01 * np.sum(table[[1, 3, 7]].astype("float64") ** 2),
                               rtol=1e-6, atol=0)  # as in the first test
    assert bag.embeddings.regularizer is None
    gradient = tape.gradient(total, bag.embeddings.value)
    assert isinstance(gradient, tf.IndexedSlices)
    assert sorted(set(gradient.indices.numpy().tolist())) == [1, 3, 7]


def test_embedding_bag_regularizes_full_bags_in_a_graph(rng):
    # Bags with no padding take another way (every id looked up, bags summed
    # along their axis); in a tf.function the penalty is the same.
    bag = keras_embed.EmbeddingBag(
        VOCABULARY, WIDTH, mask_zero=True,
        embeddings_regularizer=LookedUpRowsRegularizer(keras.regularizers.l2(0.01)))
    bag.build()
    table = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    bag.embeddings.assign(table)

    @tf.function
    def penalty_and_gradient(ids):
        with tf.GradientTape() as tape:
            outputs = bag(ids)
            (loss,) = bag.losses
            total = tf.reduce_sum(outputs) + loss
        return loss, tape.gradient(total, bag.embeddings.value)

    loss, gradient = penalty_and_gradient(tf.constant([[3, 3, 7], [7, 1, 1]]))
    np.testing.assert_allclose(float(loss), 0.01 * np.sum(table[[1, 3, 7]].astype("float64") ** 2),
                               rtol=1e-6, atol=0)  # as in the first test
    assert isinstance(gradient, tf.IndexedSlices)
    assert sorted(set(gradient.indices.numpy().tolist())) == [1, 3, 7]


@pytest.mark.cross_kernel
@pytest.mark.parametrize("kind", ["dense", "ragged"])
def test_embedding_bag_under_xla_leaves_padding_out_of_the_penalty(rng, kind):
    # Under XLA the bag looks up padding too (no ops of a data-dependent
    # size) and masks it after: the penalty must still leave row 0 out.
    bag = keras_embed.EmbeddingBag(
        VOCABULARY, WIDTH, mask_zero=True,
        embeddings_regularizer=LookedUpRowsRegularizer(keras.regularizers.l2(0.01)))
    bag.build()
    table = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    bag.embeddings.assign(table)

    def penalty_and_gradient(ids):
        with tf.GradientTape() as tape:
            outputs = bag(ids)
            (loss,) = bag.losses
            total = tf.reduce_sum(outputs) + loss
        return loss, tf.convert_to_tensor(tape.gradient(total, bag.embeddings.value))

    ids = ([[3, 3, 7], [7, 1, 0]] if kind == "dense" else [[3, 3, 7], [7, 1, 0], [0]])
    ids = (tf.ragged.constant(ids) if kind == "ragged" else tf.constant(ids))
    graph = tf.function(penalty_and_gradient)(ids)
    xla = tf.function(penalty_and_gradient, jit_compile=True)(ids)
    # XLA against a graph: sums of a few squares of values about 1 (rtol a
    # few ulps of float32); no value is near 0 in the loss (atol=0), the
    # gradient's row 0 and untouched rows are exactly 0 in both.
    np.testing.assert_allclose(float(xla[0]), 0.01 * np.sum(table[[1, 3, 7]].astype("float64") ** 2),
                               rtol=1e-5, atol=0)
    np.testing.assert_allclose(float(xla[0]), float(graph[0]), rtol=1e-5, atol=0)
    np.testing.assert_allclose(xla[1].numpy(), graph[1].numpy(), rtol=1e-5, atol=1e-7)
    assert not np.any(xla[1].numpy()[0])
    padding_only = tf.zeros_like(ids)  # No row looked up: no penalty.
    loss, gradient = tf.function(penalty_and_gradient, jit_compile=True)(padding_only)
    assert float(loss) == 0.0 and not np.any(gradient.numpy())


@pytest.mark.cross_kernel
def test_embedding_bag_fit_under_xla_gives_graphs_penalty_and_keeps_padding(rng):
    losses, tables = [], []
    for jit_compile in (False, True):
        keras.utils.set_random_seed(1)
        model = keras.Sequential([
            keras.Input((3,), dtype="int32"),
            keras_embed.EmbeddingBag(VOCABULARY, WIDTH, mask_zero=True,
                                     embeddings_initializer="ones", name="bag",
                                     embeddings_regularizer=LookedUpRowsRegularizer(
                                         keras.regularizers.l2(0.01)))])
        model.compile(keras.optimizers.SGD(0.1), "mse", jit_compile=jit_compile)
        ids = np.array([[3, 3, 7], [7, 1, 0]])
        # Targets equal to the bags (ones): the loss is the penalty alone,
        # 3 distinct rows x 2 values x 0.01 x 1^2 = 0.06.
        history = model.fit(ids, np.ones((2, WIDTH)), epochs=1, verbose=0)
        losses.append(history.history["loss"][0])
        tables.append(model.get_layer("bag").embeddings.numpy())
    # XLA against a graph, on the terms 0.01 * 1^2: rtol a few ulps, no value near 0.
    np.testing.assert_allclose(losses, [0.06, 0.06], rtol=1e-5, atol=0)
    np.testing.assert_array_equal(tables[1][0], np.ones(WIDTH, "float32"))  # Padding never moves.
    np.testing.assert_array_equal(tables[0][0], np.ones(WIDTH, "float32"))
    np.testing.assert_allclose(tables[1], tables[0], rtol=1e-5, atol=1e-7)
