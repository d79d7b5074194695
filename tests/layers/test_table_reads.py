"""How our layers read their table: by rows once the optimizer that trains it
writes rows, Keras's own optimizers (`keras.optimizers.SGD()` writes a
`scatter_sub` of the gradient's rows) as well as ours, with no call from the
user."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_embed
from keras_embed.layers.table_reads import is_updated_by_rows

VOCABULARY, WIDTH = 20, 3


class TraceRecorder(keras_embed.Embedding):
    """Records, at each trace, whether the table is marked as row-updated."""

    traces = []

    def call(self, inputs):
        type(self).traces.append(is_updated_by_rows(self.embeddings))
        return super().call(inputs)


def _model(layer, optimizer, **compile_kwargs):
    model = keras.Sequential([keras.Input((4,), dtype="int32"), layer,
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    model.compile(optimizer, "mse", **compile_kwargs)
    return model


def _lookup_reads(layer):
    """(row reads, whole reads) of the table in a graph of the lookup."""
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec((None, 4), tf.int32)).graph
    types = [op.type for op in graph.get_operations()]
    return types.count("ResourceGather"), types.count("ReadVariableOp")


@pytest.mark.parametrize("train", ["fit", "train_on_batch"])
def test_keras_sgd_marks_the_table_and_the_step_reads_rows(rng, train):
    TraceRecorder.traces = []
    layer = TraceRecorder(VOCABULARY, WIDTH, name="words")
    model = _model(layer, keras.optimizers.SGD(0.1))
    assert not is_updated_by_rows(layer.embeddings)  # Nothing known before training.
    ids, targets = rng.integers(VOCABULARY, size=(8, 4)), rng.normal(size=(8, 1))
    start = layer.embeddings.numpy()
    if train == "fit":
        model.fit(ids, targets, batch_size=8, epochs=2, verbose=0)
    else:
        model.train_on_batch(ids, targets)
    assert is_updated_by_rows(layer.embeddings)
    # The step in use was traced with the row read (the first trace, before
    # the optimizer's first row write, read densely and was traced again).
    assert TraceRecorder.traces[-1] is True
    assert _lookup_reads(layer)[0] == 1
    assert not np.array_equal(layer.embeddings.numpy(), start)
    # Nothing added to the optimizer's variables (nor to saved files).
    assert [v.name for v in model.optimizer.variables] == ["iteration", "learning_rate"]


def test_keras_sgd_in_a_custom_loop_marks_the_table(rng):
    layer = keras_embed.Embedding(VOCABULARY, WIDTH)
    layer.build()
    optimizer = keras.optimizers.SGD(0.1)
    ids = tf.constant(rng.integers(VOCABULARY, size=(2, 4)))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(ids))
        optimizer.apply_gradients([(tape.gradient(loss, layer.embeddings.value), layer.embeddings)])

    step()
    assert is_updated_by_rows(layer.embeddings)
    assert _lookup_reads(layer)[0] == 1


@pytest.mark.parametrize("make", [
    lambda: keras.optimizers.SGD(0.1, momentum=0.9),  # a dense velocity, written whole
    lambda: keras.optimizers.Adam(0.01),
])
def test_keras_optimizers_that_write_the_whole_table_leave_it_read_densely(rng, make):
    layer = keras_embed.Embedding(VOCABULARY, WIDTH)
    model = _model(layer, make())
    model.fit(rng.integers(VOCABULARY, size=(8, 4)), rng.normal(size=(8, 1)), verbose=0)
    assert not is_updated_by_rows(layer.embeddings)
    assert _lookup_reads(layer)[0] == 0


def test_keras_sgd_marks_an_embedding_bag_table(rng):
    bag = keras_embed.EmbeddingBag(VOCABULARY, WIDTH, name="bag")
    model = keras.Sequential([keras.Input((4,), dtype="int32"), bag, keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(rng.integers(VOCABULARY, size=(8, 4)), rng.normal(size=(8, 1)), verbose=0)
    assert is_updated_by_rows(bag.embeddings)


def test_the_stock_layers_table_is_not_marked(rng):
    # Marking would change nothing there: stock Embedding reads densely.
    layer = keras.layers.Embedding(VOCABULARY, WIDTH)
    model = _model(layer, keras.optimizers.SGD(0.1))
    model.fit(rng.integers(VOCABULARY, size=(8, 4)), rng.normal(size=(8, 1)), verbose=0)
    assert not is_updated_by_rows(layer.embeddings)


@pytest.mark.parametrize("setting", ["mixed_float16", "gradient_accumulation", "jit_compile"])
def test_keras_sgd_marks_the_table_in_other_settings(rng, setting, policy):
    TraceRecorder.traces = []
    kwargs, optimizer = {}, keras.optimizers.SGD(0.1)
    if setting == "mixed_float16":  # A LossScaleOptimizer applies SGD in a tf.cond.
        policy("mixed_float16")
    elif setting == "gradient_accumulation":
        optimizer = keras.optimizers.SGD(0.1, gradient_accumulation_steps=2)
    else:
        kwargs["jit_compile"] = True
    layer = TraceRecorder(VOCABULARY, WIDTH)
    model = _model(layer, optimizer, **kwargs)
    ids, targets = rng.integers(1, VOCABULARY, size=(8, 4)), rng.normal(size=(8, 1))
    start = layer.embeddings.numpy()
    model.fit(ids, targets, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(layer.embeddings.numpy()))
    assert not np.array_equal(layer.embeddings.numpy(), start)
    if setting != "gradient_accumulation":
        # (Keras accumulates into dense buffers: its update is dense.)
        assert is_updated_by_rows(layer.embeddings)
        assert TraceRecorder.traces[-1] is True
