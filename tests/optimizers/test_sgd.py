"""SGD (with and without momentum) against keras.optimizers.SGD and by hand."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_embed
from keras_embed.optimizers import SGD
from keras_embed.optimizers import is_updated_by_rows
from row_cases import VOCABULARY, WIDTH, apply_dense, apply_sparse, random_steps, with_repeats

MOMENTA = [{}, {"momentum": 0.9}, {"momentum": 0.5, "nesterov": True}]


def _name(options):
    return ",".join(f"{k}={v}" for k, v in options.items()) or "plain"


@pytest.mark.parametrize("options", MOMENTA + [{"momentum": 0.9, "weight_decay": 0.1},
                                               {"clipvalue": 0.1}], ids=_name)
def test_dense_gradients_give_keras_sgds_numbers_exactly(rng, options):
    start = [rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=3).astype("float32")]
    ours = [tf.Variable(v) for v in start]
    theirs = [tf.Variable(v) for v in start]
    mine, keras_sgd = SGD(0.1, **options), keras.optimizers.SGD(0.1, **options)
    for _ in range(4):
        grads = [rng.normal(size=v.shape).astype("float32") for v in start]
        mine.apply_gradients(zip([tf.constant(g) for g in grads], ours))
        keras_sgd.apply_gradients(zip([tf.constant(g) for g in grads], theirs))
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(mine.variables, keras_sgd.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_plain_sgd_sparse_gives_the_dense_updates_numbers(rng):
    # Without momentum a row with no gradient does not move: bit for bit.
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    steps = with_repeats(random_steps(rng, 5))
    sparse_table, dense_table = tf.Variable(start), tf.Variable(start)
    apply_sparse(SGD(0.1), sparse_table, steps)
    apply_dense(keras.optimizers.SGD(0.1), dense_table, steps)
    np.testing.assert_array_equal(sparse_table.numpy(), dense_table.numpy())


@pytest.mark.parametrize("options", MOMENTA[1:], ids=_name)
def test_momentum_row_seen_every_step_matches_keras(rng, options):
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    steps = with_repeats(random_steps(rng, 5, always=(3,), never=(0,)))
    sparse_table, dense_table = tf.Variable(start), tf.Variable(start)
    sparse, reference = SGD(0.1, **options), keras.optimizers.SGD(0.1, **options)
    apply_sparse(sparse, sparse_table, steps)
    apply_dense(reference, dense_table, steps)
    np.testing.assert_array_equal(sparse_table.numpy()[3], dense_table.numpy()[3])
    np.testing.assert_array_equal(sparse.variables[2].numpy()[3], reference.variables[2].numpy()[3])
    # Lazy: row 0, never looked up, has no velocity and does not move.
    np.testing.assert_array_equal(sparse_table.numpy()[0], start[0])
    np.testing.assert_array_equal(sparse.variables[2].numpy()[0], np.zeros(WIDTH))


def test_momentum_by_hand_a_row_absent_keeps_value_and_velocity():
    # lr 0.1, momentum 0.9. Step 1: id 0 gets g = 1: v = -0.1, w = 1 - 0.1 = 0.9.
    # Step 2: only id 1 (g = 2): row 0 keeps w = 0.9, v = -0.1 (Keras's dense
    # SGD would move it to 0.9 - 0.09); row 1: v = -0.2, w = -0.2.
    table = tf.Variable([[1.0], [0.0]])
    optimizer = SGD(0.1, momentum=0.9)
    apply_sparse(optimizer, table, [(np.array([0], "int32"), np.array([[1.0]], "float32")),
                                    (np.array([1], "int32"), np.array([[2.0]], "float32"))])
    # float32 against decimal values by hand: one or two roundings, no value
    # near 0 (atol=0).
    np.testing.assert_allclose(table.numpy()[:, 0], [0.9, -0.2], rtol=1e-6, atol=0)
    np.testing.assert_allclose(optimizer.variables[2].numpy()[:, 0], [-0.1, -0.2], rtol=1e-6, atol=0)
    # Step 3: id 0 again, g = 1: v = 0.9 * -0.1 - 0.1 = -0.19; w = 0.9 - 0.19.
    apply_sparse(optimizer, table, [(np.array([0], "int32"), np.array([[1.0]], "float32"))])
    np.testing.assert_allclose(table.numpy()[0, 0], 0.71, rtol=1e-6, atol=0)


def test_without_momentum_no_slot_and_the_table_is_read_by_rows():
    # keras.optimizers.SGD needs `mark_updated_by_rows` by hand; ours marks
    # the table when built, so the lookup reads rows (a ResourceGather).
    optimizer = SGD(0.1)
    layer = keras_embed.Embedding(VOCABULARY, WIDTH)
    layer.build()
    optimizer.build([layer.embeddings])
    assert optimizer.momentums == []
    assert [v.name for v in optimizer.variables] == ["iteration", "learning_rate"]
    assert is_updated_by_rows(layer.embeddings)
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec((None, 4), tf.int32)).graph
    assert "ResourceGather" in [op.type for op in graph.get_operations()]
    stock_sgd_layer = keras_embed.Embedding(VOCABULARY, WIDTH)
    stock_sgd_layer.build()
    keras.optimizers.SGD(0.1).build([stock_sgd_layer.embeddings])
    assert not is_updated_by_rows(stock_sgd_layer.embeddings)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, "0.9", True])
def test_bad_momentum_is_refused_with_a_clear_message(momentum):
    with pytest.raises(ValueError) as error:
        SGD(momentum=momentum)
    assert str(error.value) == (
        f"SGD: `momentum` must be a number in [0, 1]. Received: momentum={momentum!r}."
    )


class TraceRecorder(keras_embed.Embedding):
    """Records, at each trace, whether the table is marked as row-updated."""

    traces = []

    def call(self, inputs):
        self.traces.append(is_updated_by_rows(self.embeddings))
        return super().call(inputs)


@pytest.mark.parametrize("train", ["fit", "train_on_batch"])
def test_fit_traces_the_lookup_again_after_plain_sgd_is_built(rng, train):
    # Keras builds the optimizer inside the first trace of the step, after the
    # lookup was traced with a dense read. Plain SGD creates no slot, which
    # would have made tf.function trace again: it must still end up traced
    # with the row read (else every step copies the whole table).
    TraceRecorder.traces = []
    model = keras.Sequential([keras.Input((4,), dtype="int32"), TraceRecorder(VOCABULARY, WIDTH),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    model.compile(SGD(0.1), "mse")
    ids, targets = rng.integers(VOCABULARY, size=(8, 4)), rng.normal(size=(8, 1))
    if train == "fit":
        model.fit(ids, targets, verbose=0)
    else:
        model.train_on_batch(ids, targets)
    assert TraceRecorder.traces[-1] is True
    # Nothing extra among the optimizer's variables (nor in saved files).
    assert [v.name for v in model.optimizer.variables] == ["iteration", "learning_rate"]
