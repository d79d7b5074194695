"""`tf.SparseTensor` and `tf.RaggedTensor` ids, against stock Keras."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_embed
from conftest import layer_pair

V, D = 9, 4


def random_sparse(rng, dense_shape, count):
    """A sparse tensor of `count` random ids at distinct random positions."""
    positions = rng.choice(np.prod(dense_shape), size=count, replace=False)
    indices = np.stack(np.unravel_index(np.sort(positions), dense_shape), axis=1)
    values = rng.integers(1, V, size=count).astype("int32")
    return tf.SparseTensor(indices, values, dense_shape)


def dense_gradient(layer, ids):
    """d sum(output * weights) / d table, as a dense array."""
    weights = tf.reshape(tf.range(D, dtype="float32") + 1.0, [D])
    with tf.GradientTape() as tape:
        out = layer(ids)
        values = out.flat_values if isinstance(out, tf.RaggedTensor) else out
        loss = tf.reduce_sum(values * weights)
    gradient = tape.gradient(loss, layer.trainable_weights[0].value)
    return tf.convert_to_tensor(gradient).numpy()


# Sparse ids.


@pytest.mark.parametrize("dense_shape", [(3, 5), (2, 3, 4)])
def test_sparse_ids_give_stocks_dense_output(rng, dense_shape):
    ours, stock = layer_pair(V, D, rng)
    ids = random_sparse(rng, dense_shape, count=5)
    out = ours(ids)
    assert not isinstance(out, tf.SparseTensor)
    assert out.shape == (*dense_shape, D)
    np.testing.assert_array_equal(out, stock(ids))


def test_missing_entries_look_up_row_zero_as_stock(rng):
    # Row 0 is random, not zeros: a zero vector would be a different answer.
    ours, stock = layer_pair(V, D, rng)
    table = ours.embeddings.numpy()
    ids = tf.SparseTensor([[0, 0], [1, 2]], [2, 1], (2, 3))
    by_hand = table[np.array([[2, 0, 0], [0, 0, 1]])]
    np.testing.assert_array_equal(ours(ids), by_hand)
    np.testing.assert_array_equal(stock(ids), by_hand)


def test_sparse_gradient_is_stocks(rng):
    ours, stock = layer_pair(V, D, rng)
    ids = random_sparse(rng, (3, 5), count=6)
    np.testing.assert_allclose(dense_gradient(ours, ids), dense_gradient(stock, ids))


def test_sparse_input_in_a_model_predicts_and_trains(rng):
    outputs = []
    for cls in (keras_embed.Embedding, keras.layers.Embedding):
        ids = keras.Input(shape=(5,), sparse=True, dtype="int32")
        model = keras.Model(ids, cls(V, D, name="embedding")(ids))
        outputs.append(model)
    ours, stock = outputs
    stock.set_weights(ours.get_weights())
    ids = random_sparse(rng, (3, 5), count=6)
    np.testing.assert_array_equal(ours.predict(ids, verbose=0), stock.predict(ids, verbose=0))
    ours.compile("sgd", "mse")
    before = ours.get_weights()[0]
    ours.fit(ids, np.ones((3, 5, D)), verbose=0)
    assert not np.array_equal(ours.get_weights()[0], before)


def test_sparse_mask_marks_missing_entries_as_padding():
    # Stock's compute_mask fails on sparse ids (it cannot compare a
    # SparseTensor); ours masks what the lookup gives row 0: explicit zeros
    # and the entries the sparse tensor leaves out.
    layer = keras_embed.Embedding(V, D, mask_zero=True)
    ids = tf.SparseTensor([[0, 0], [0, 1], [1, 2]], [2, 0, 1], (2, 3))
    np.testing.assert_array_equal(
        layer.compute_mask(ids), [[True, False, False], [False, False, True]]
    )


# Ragged ids.


RAGGED = [[3, 1, 4], [1], [5, 8, 2, 6]]


def test_ragged_ids_give_a_ragged_output_of_stocks_values(rng):
    ours, stock = layer_pair(V, D, rng)
    ids = tf.ragged.constant(RAGGED)
    out = ours(ids)
    assert isinstance(out, tf.RaggedTensor)
    assert out.shape.as_list() == [3, None, D]
    np.testing.assert_array_equal(out.row_lengths(), [3, 1, 4])
    table = ours.embeddings.numpy()
    for row, row_ids in zip(out, RAGGED):
        np.testing.assert_array_equal(row, table[row_ids])
    np.testing.assert_array_equal(out.flat_values, stock(ids).flat_values)


def test_doubly_ragged_ids(rng):
    ours, stock = layer_pair(V, D, rng)
    ids = tf.ragged.constant([[[1, 2], [3]], [[4, 5, 6]]])
    out = ours(ids)
    assert out.shape.as_list() == [2, None, None, D]
    assert out.ragged_rank == 2
    np.testing.assert_array_equal(out.flat_values, stock(ids).flat_values)


def test_ragged_gradient_is_stocks(rng):
    ours, stock = layer_pair(V, D, rng)
    ids = tf.ragged.constant(RAGGED)
    np.testing.assert_allclose(dense_gradient(ours, ids), dense_gradient(stock, ids))


def test_symbolic_ragged_input_gives_a_ragged_output():
    ids = keras.Input(shape=(None,), ragged=True, dtype="int32")
    out = keras_embed.Embedding(V, D)(ids)
    assert out.ragged
    assert out.shape == (None, None, D)


def test_ragged_lookup_trains_inside_fit(rng):
    ids = keras.Input(shape=(None,), ragged=True, dtype="int32")
    embedding = keras_embed.Embedding(V, D)
    pooled = keras.layers.Lambda(
        lambda rows: tf.reduce_mean(rows, axis=1), output_shape=(D,)
    )(embedding(ids))
    model = keras.Model(ids, pooled)
    model.compile("sgd", "mse")
    before = embedding.embeddings.numpy()
    data = tf.data.Dataset.from_tensor_slices(
        (tf.ragged.constant(RAGGED), np.ones((3, D), "float32"))
    ).batch(3)
    model.fit(data, verbose=0, shuffle=False)
    changed = np.flatnonzero(np.abs(embedding.embeddings.numpy() - before).sum(axis=1))
    assert set(changed) == {1, 2, 3, 4, 5, 6, 8}  # the ids in RAGGED


def test_ragged_mask_is_ragged_with_the_ids_row_lengths(rng):
    ours, stock = layer_pair(V, D, rng, mask_zero=True)
    ids = tf.ragged.constant([[3, 0, 4], [0], [5, 8]])
    mask = ours.compute_mask(ids)
    assert isinstance(mask, tf.RaggedTensor)
    np.testing.assert_array_equal(mask.row_lengths(), ids.row_lengths())
    assert mask.to_list() == [[True, False, True], [False], [True, True]]
    assert mask.to_list() == stock.compute_mask(ids).to_list()


def test_padded_ragged_ids_mask_the_padding(rng):
    # For layers that need a dense, masked input (LSTM, pooling), pad the
    # ragged ids with 0 first: the padding is then masked like any other.
    layer, _ = layer_pair(V, D, rng, mask_zero=True)
    ids = tf.ragged.constant(RAGGED).to_tensor()
    np.testing.assert_array_equal(
        layer.compute_mask(ids), [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
    )
    model = keras.Sequential([layer, keras.layers.GlobalAveragePooling1D()])
    table = layer.embeddings.numpy()
    by_hand = [table[row].mean(axis=0) for row in RAGGED]
    # Keras's masked mean against NumPy's: sums of up to 4 values about 1 in
    # another order, a few roundings (2.4e-7 each at 2); atol=1e-6 for means
    # near 0, where those are a large relative error.
    np.testing.assert_allclose(model(ids), by_hand, rtol=1e-6, atol=1e-6)
