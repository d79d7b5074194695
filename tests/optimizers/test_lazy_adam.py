"""LazyAdam against keras.optimizers.Adam, a NumPy reference and real training."""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import indexed_slices as indexed_slices_module

import keras_embed
from keras_embed.optimizers import LazyAdam
from keras_embed.layers.table_reads import is_updated_by_rows
from keras_embed.optimizers import mark_updated_by_rows
from keras_embed.optimizers import summed_duplicates

VOCABULARY, WIDTH = 12, 3


def reference_lazy_adam(table, steps, learning_rate=0.001, beta_1=0.9,
                        beta_2=0.999, epsilon=1e-7, amsgrad=False,
                        weight_decay=None):
    """Lazy Adam by hand, in float64: `steps` is a list of (ids, rows).

    Returns the table and the slots (momentum, velocity, velocity_hat).
    `learning_rate` may be a function of the step number (0-based).
    """
    table = np.array(table, dtype="float64")
    momentum, velocity, velocity_hat = (np.zeros_like(table) for _ in range(3))
    for step, (ids, rows) in enumerate(steps):
        lr = learning_rate(step) if callable(learning_rate) else learning_rate
        summed = {}
        for row_id, row in zip(np.asarray(ids).tolist(), np.asarray(rows, "float64")):
            summed[row_id] = summed.get(row_id, 0.0) + row
        t = step + 1
        alpha = lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
        for row_id, grad in summed.items():
            if weight_decay is not None:
                table[row_id] -= table[row_id] * weight_decay * lr
            momentum[row_id] = beta_1 * momentum[row_id] + (1 - beta_1) * grad
            velocity[row_id] = beta_2 * velocity[row_id] + (1 - beta_2) * grad**2
            denominator = velocity[row_id]
            if amsgrad:
                velocity_hat[row_id] = np.maximum(velocity_hat[row_id], velocity[row_id])
                denominator = velocity_hat[row_id]
            table[row_id] -= alpha * momentum[row_id] / (np.sqrt(denominator) + epsilon)
    return table, momentum, velocity, velocity_hat


def random_steps(rng, count, ids_per_step=5, always=(), never=()):
    """Sparse gradients: ids (with repeats) and rows, for `count` steps."""
    allowed = [i for i in range(VOCABULARY) if i not in never]
    steps = []
    for _ in range(count):
        ids = np.concatenate([
            np.asarray(always, "int32"),
            rng.choice(allowed, size=ids_per_step).astype("int32"),
        ])
        steps.append((ids, rng.normal(size=(len(ids), WIDTH)).astype("float32")))
    return steps


def apply_sparse(optimizer, table, steps):
    """Applies each step to `table` as a `tf.IndexedSlices`."""
    for ids, rows in steps:
        gradient = tf.IndexedSlices(
            tf.constant(rows), tf.constant(ids), tf.constant(table.shape)
        )
        optimizer.apply_gradients([(gradient, table)])


def slots(optimizer, index=0):
    """The momentum and velocity of the optimizer's `index`-th variable."""
    return (
        optimizer._momentums[index].numpy(),
        optimizer._velocities[index].numpy(),
    )


def pooled_model(layer, optimizer, **compile_kwargs):
    model = keras.Sequential([
        keras.Input((4,), dtype="int32"),
        layer,
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(1, kernel_initializer="ones"),
    ])
    model.compile(optimizer, "mse", **compile_kwargs)
    return model


class GradientRecorder(LazyAdam):
    """LazyAdam that records the type of each gradient it is given."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.gradient_types = {}

    def gradient_type(self, layer_name):
        """The type of the gradient of layer `layer_name`'s table."""
        (found,) = [
            kind for name, kind in self.gradient_types.items()
            if f"/{layer_name}/embeddings" in f"/{name}"
        ]
        return found

    def update_step(self, gradient, variable, learning_rate):
        self.gradient_types[variable.name] = type(gradient).__name__
        return super().update_step(gradient, variable, learning_rate)


@pytest.fixture
def densify_warnings(monkeypatch):
    """Makes TensorFlow warn on every IndexedSlices -> dense conversion.

    It warns only above 10**8 elements; a table that large would not belong in
    a unit test, so we lower the threshold.
    """
    monkeypatch.setattr(indexed_slices_module, "_LARGE_SPARSE_NUM_ELEMENTS", 1)

    def densified(record):
        return [w for w in record if "Converting sparse IndexedSlices" in str(w.message)]

    return densified


# Dense gradients: Adam's numbers exactly.


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"amsgrad": True},
        {"weight_decay": 0.05},
        {"learning_rate": keras.optimizers.schedules.ExponentialDecay(0.01, 2, 0.5)},
        {"clipnorm": 0.5},
        {"global_clipnorm": 0.5},
        {"clipvalue": 0.1},
        {"use_ema": True, "ema_overwrite_frequency": 2},
        {"gradient_accumulation_steps": 2},
        {"beta_1": 0.5, "beta_2": 0.9, "epsilon": 1e-3},
    ],
    ids=lambda options: ",".join(options) or "defaults",
)
def test_dense_gradients_give_adams_numbers_exactly(rng, options):
    # The dense path runs Adam's operations in Adam's order, so the float
    # rounding is the same and every bit agrees (no tolerance).
    start = [rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=3).astype("float32")]
    ours = [tf.Variable(v) for v in start]
    theirs = [tf.Variable(v) for v in start]
    lazy, adam = LazyAdam(**options), keras.optimizers.Adam(**options)
    for _ in range(5):
        grads = [tf.constant(rng.normal(size=v.shape).astype("float32")) for v in start]
        lazy.apply_gradients(zip(grads, ours))
        adam.apply_gradients(zip(grads, theirs))
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert len(lazy.variables) == len(adam.variables)
    for a, b in zip(lazy.variables, adam.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_dense_model_fit_gives_adams_weights_exactly(rng):
    x = rng.normal(size=(32, 5)).astype("float32")
    y = rng.normal(size=(32, 1)).astype("float32")
    weights = []
    for optimizer in (LazyAdam(0.01), keras.optimizers.Adam(0.01)):
        keras.utils.set_random_seed(7)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4), keras.layers.Dense(1)])
        model.compile(optimizer, "mse")
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


# Sparse gradients: the lazy update.


def test_sparse_update_matches_hand_computed_reference(rng):
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    steps = random_steps(rng, 6)
    table = tf.Variable(start)
    optimizer = LazyAdam(0.05)
    apply_sparse(optimizer, table, steps)
    expected, momentum, velocity, _ = reference_lazy_adam(start, steps, 0.05)
    # float32 against float64 over 6 steps, a few roundings each; atol for
    # values near 0, scaled to each array (table ~1, momentum ~0.1, velocity
    # ~1e-3).
    np.testing.assert_allclose(table.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(slots(optimizer)[0], momentum, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(slots(optimizer)[1], velocity, rtol=1e-5, atol=1e-9)


def test_first_step_by_hand():
    # Step 1 from zero moments: m = 0.1 g, v = 0.001 g**2, and the bias
    # correction makes the step lr * g / |g| (with epsilon=0), up to float32's
    # rounding of 1 - 0.999 (a relative 1.3e-5).
    table = tf.Variable(np.zeros((3, 2), "float32"))
    optimizer = LazyAdam(learning_rate=0.5, epsilon=0.0)
    gradient = tf.IndexedSlices(tf.constant([[2.0, -4.0]]), tf.constant([1]), tf.constant([3, 2]))
    optimizer.apply_gradients([(gradient, table)])
    # Rows 0 and 2, not looked up, stay exactly 0 (atol=0).
    np.testing.assert_allclose(table.numpy(), [[0, 0], [-0.5, 0.5], [0, 0]], rtol=2e-5, atol=0)
    np.testing.assert_allclose(slots(optimizer)[0], [[0, 0], [0.2, -0.4], [0, 0]], rtol=1e-6, atol=0)
    np.testing.assert_allclose(slots(optimizer)[1], [[0, 0], [0.004, 0.016], [0, 0]], rtol=2e-5, atol=0)


def test_row_seen_every_step_matches_adam(rng):
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    steps = random_steps(rng, 8, always=[3])
    lazy_table, adam_table = tf.Variable(start), tf.Variable(start)
    lazy, adam = LazyAdam(0.01), keras.optimizers.Adam(0.01)
    apply_sparse(lazy, lazy_table, steps)
    for ids, rows in steps:
        dense = tf.math.unsorted_segment_sum(rows, ids, VOCABULARY)
        adam.apply_gradients([(dense, adam_table)])
    np.testing.assert_allclose(lazy_table.numpy()[3], adam_table.numpy()[3], rtol=1e-6)
    np.testing.assert_allclose(slots(lazy)[0][3], adam._momentums[0].numpy()[3], rtol=1e-6)
    np.testing.assert_allclose(slots(lazy)[1][3], adam._velocities[0].numpy()[3], rtol=1e-6)
    # Rows that skipped a step differ from dense Adam: that is the trade.
    skipped = [i for i in range(VOCABULARY) if not all(i in ids for ids, _ in steps)]
    seen_sometimes = [i for i in skipped if any(i in ids for ids, _ in steps)]
    assert seen_sometimes
    assert not np.allclose(
        lazy_table.numpy()[seen_sometimes], adam_table.numpy()[seen_sometimes], rtol=1e-6
    )


def test_row_never_seen_does_not_move_and_its_slots_stay_zero(rng):
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    steps = random_steps(rng, 6, never=[0, 7])
    table = tf.Variable(start)
    optimizer = LazyAdam(0.1, amsgrad=True, weight_decay=0.1)
    apply_sparse(optimizer, table, steps)
    np.testing.assert_array_equal(table.numpy()[[0, 7]], start[[0, 7]])
    for slot in optimizer.variables[2:]:
        np.testing.assert_array_equal(slot.numpy()[[0, 7]], 0.0)
    moved = np.flatnonzero(np.any(table.numpy() != start, axis=1))
    assert set(moved) == set(np.concatenate([ids for ids, _ in steps]))


def test_row_absent_from_a_step_keeps_value_and_moments(rng):
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    table = tf.Variable(start)
    optimizer = LazyAdam(0.1)
    apply_sparse(optimizer, table, [(np.array([2, 5], "int32"), np.ones((2, WIDTH), "float32"))])
    before = table.numpy()[2], *(s[2] for s in slots(optimizer))
    apply_sparse(optimizer, table, [(np.array([5], "int32"), np.ones((1, WIDTH), "float32"))])
    after = table.numpy()[2], *(s[2] for s in slots(optimizer))
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_duplicate_ids_equal_the_summed_gradient(rng):
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    rows = rng.normal(size=(3, WIDTH)).astype("float32")
    duplicated = [(np.array([4, 9, 4], "int32"), rows)]
    summed = [(np.array([4, 9], "int32"), np.stack([rows[0] + rows[2], rows[1]]))]
    results = []
    for steps in (duplicated, summed):
        table = tf.Variable(start)
        optimizer = LazyAdam(0.1)
        apply_sparse(optimizer, table, steps * 3)
        results.append((table.numpy(), *slots(optimizer)))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_summed_duplicates_keeps_first_appearance_order():
    slices = tf.IndexedSlices(
        tf.constant([[1.0], [2.0], [4.0], [8.0]]), tf.constant([3, 0, 3, 5]), tf.constant([6, 1])
    )
    summed = summed_duplicates(slices)
    assert summed.indices.numpy().tolist() == [3, 0, 5]
    assert summed.values.numpy().tolist() == [[5.0], [2.0], [8.0]]
    assert summed.dense_shape.numpy().tolist() == [6, 1]


def test_schedule_and_amsgrad_match_reference(rng):
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    steps = random_steps(rng, 6)
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    table = tf.Variable(start)
    optimizer = LazyAdam(schedule, amsgrad=True, beta_2=0.5)
    apply_sparse(optimizer, table, steps)
    expected, _, _, velocity_hat = reference_lazy_adam(
        start, steps, lambda step: 0.1 * 0.5**step, beta_2=0.5, amsgrad=True
    )
    # float32 against float64 by hand, as in test_sparse_update_matches_hand_computed_reference.
    np.testing.assert_allclose(table.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(optimizer._velocity_hats[0].numpy(), velocity_hat, rtol=1e-5, atol=1e-7)


def test_weight_decay_decays_only_looked_up_rows(rng):
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    steps = random_steps(rng, 4, never=[1])
    table = tf.Variable(start)
    optimizer = LazyAdam(0.1, weight_decay=0.2)
    apply_sparse(optimizer, table, steps)
    expected, *_ = reference_lazy_adam(start, steps, 0.1, weight_decay=0.2)
    # float32 against float64 by hand (table values ~1): a few roundings a step.
    np.testing.assert_allclose(table.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(table.numpy()[1], start[1])


def test_exclude_from_weight_decay_is_respected(rng):
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    steps = random_steps(rng, 3)
    table = tf.Variable(start, name="excluded_table")
    optimizer = LazyAdam(0.1, weight_decay=0.2)
    optimizer.exclude_from_weight_decay(var_names=["excluded"])
    apply_sparse(optimizer, table, steps)
    expected, *_ = reference_lazy_adam(start, steps, 0.1)
    # float32 against float64 by hand (table values ~1): a few roundings a step.
    np.testing.assert_allclose(table.numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "clipping", [{"clipnorm": 0.5}, {"global_clipnorm": 0.5}, {"clipvalue": 0.3}], ids=str
)
def test_clipping_sees_the_dense_gradients_norm(rng, clipping):
    # Rows 2 and 6 are seen on both steps and the others never, so dense
    # Adam and LazyAdam must agree everywhere. Duplicate ids make the norms
    # and values of raw and summed slices differ, which catches clipping
    # before summing; step 2 is too small to clip, so a wrong clip on step 1
    # shows (Adam would not notice a wrong scale applied on every step).
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    bias_start = rng.normal(size=2).astype("float32")
    steps = [
        (np.array([2, 2, 2, 6], "int32"), np.ones((4, WIDTH), "float32"), [0.4, -0.3]),
        (np.array([6, 2], "int32"), np.full((2, WIDTH), 0.01, "float32"), [0.01, 0.01]),
    ]
    lazy_vars = [tf.Variable(start), tf.Variable(bias_start)]
    adam_vars = [tf.Variable(start), tf.Variable(bias_start)]
    lazy, adam = LazyAdam(0.1, **clipping), keras.optimizers.Adam(0.1, **clipping)
    for ids, rows, bias_gradient in steps:
        sparse = tf.IndexedSlices(tf.constant(rows), tf.constant(ids), tf.constant([VOCABULARY, WIDTH]))
        lazy.apply_gradients(zip([sparse, tf.constant(bias_gradient)], lazy_vars))
        dense = tf.math.unsorted_segment_sum(rows, ids, VOCABULARY)
        adam.apply_gradients(zip([dense, tf.constant(bias_gradient)], adam_vars))
    for a, b in zip(lazy_vars, adam_vars):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_loss_scale_factor_unscales_sparse_gradients(rng):
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    steps = random_steps(rng, 4)
    scaled_steps = [(ids, rows * 1024) for ids, rows in steps]
    plain, scaled = tf.Variable(start), tf.Variable(start)
    apply_sparse(LazyAdam(0.1), plain, steps)
    optimizer = LazyAdam(0.1, loss_scale_factor=1024.0)
    apply_sparse(optimizer, scaled, scaled_steps)
    # Scaling by a power of two and back is exact.
    np.testing.assert_array_equal(scaled.numpy(), plain.numpy())
    assert optimizer.loss_scale_factor == 1024.0


def test_gradient_accumulation_works_with_sparse_gradients(rng):
    # Keras accumulates into dense buffers: the update is then dense Adam's.
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    steps = random_steps(rng, 4)
    lazy_table, adam_table = tf.Variable(start), tf.Variable(start)
    apply_sparse(LazyAdam(0.1, gradient_accumulation_steps=2), lazy_table, steps)
    apply_sparse(keras.optimizers.Adam(0.1, gradient_accumulation_steps=2), adam_table, steps)
    np.testing.assert_allclose(lazy_table.numpy(), adam_table.numpy(), rtol=1e-6)
    assert not np.array_equal(lazy_table.numpy(), start)


# Training with the layer.


def test_fit_keeps_the_tables_gradient_sparse(rng, densify_warnings):
    ids = rng.integers(VOCABULARY, size=(16, 4))
    targets = rng.normal(size=(16, 1))
    recorder = GradientRecorder(learning_rate=0.1)
    model = pooled_model(keras_embed.Embedding(VOCABULARY, WIDTH, name="table"), recorder)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(ids, targets, batch_size=8, epochs=2, verbose=0)
    assert densify_warnings(record) == []
    assert recorder.gradient_type("table") == "IndexedSlices"
    # The control: stock Adam turns the same gradient dense, and we see it.
    model = pooled_model(keras_embed.Embedding(VOCABULARY, WIDTH), keras.optimizers.Adam())
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(ids, targets, batch_size=8, epochs=1, verbose=0)
    assert densify_warnings(record) != []


def test_fit_moves_only_the_rows_looked_up(rng):
    layer = keras_embed.Embedding(VOCABULARY, WIDTH)
    model = pooled_model(layer, LazyAdam(0.1))
    start = layer.embeddings.numpy()
    ids = rng.integers(1, VOCABULARY - 1, size=(16, 4))  # never 0 nor the last id
    model.fit(ids, rng.normal(size=(16, 1)), batch_size=8, epochs=2, verbose=0)
    table = layer.embeddings.numpy()
    used = np.unique(ids)
    assert np.all(np.any(table[used] != start[used], axis=1))
    np.testing.assert_array_equal(table[[0, VOCABULARY - 1]], start[[0, VOCABULARY - 1]])


def test_fit_matches_a_custom_gradient_tape_loop(rng):
    ids = rng.integers(VOCABULARY, size=(8, 4)).astype("int32")
    targets = rng.normal(size=(8, 1)).astype("float32")
    tables = []
    for loop in ("fit", "tape"):
        keras.utils.set_random_seed(3)
        layer = keras_embed.Embedding(VOCABULARY, WIDTH)
        optimizer = LazyAdam(0.1)
        model = pooled_model(layer, optimizer)
        if loop == "fit":
            model.fit(ids, targets, batch_size=8, epochs=3, shuffle=False, verbose=0)
        else:
            @tf.function
            def train_step():
                with tf.GradientTape() as tape:
                    loss = keras.losses.mean_squared_error(targets, model(ids))
                    loss = tf.reduce_mean(loss)
                grads = tape.gradient(loss, model.trainable_variables)
                assert isinstance(grads[0], tf.IndexedSlices)
                optimizer.apply_gradients(zip(grads, model.trainable_variables))

            for _ in range(3):
                train_step()
        tables.append(layer.embeddings.numpy())
    np.testing.assert_allclose(tables[0], tables[1], rtol=1e-6, atol=1e-7)


def test_eager_gradient_tape_loop_matches_reference(rng):
    layer = keras_embed.Embedding(VOCABULARY, WIDTH)
    layer.build()
    start = layer.embeddings.numpy()
    optimizer = LazyAdam(0.05)
    steps = []
    for _ in range(3):
        ids = rng.integers(VOCABULARY, size=(2, 3)).astype("int32")
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(ids) * 2.0)
        (grad,) = tape.gradient(loss, [layer.embeddings])
        assert isinstance(grad, tf.IndexedSlices)
        optimizer.apply_gradients([(grad, layer.embeddings)])
        steps.append((ids.reshape(-1), np.full((6, WIDTH), 2.0, "float32")))
    expected, *_ = reference_lazy_adam(start, steps, 0.05)
    # float32 against float64 by hand (table values ~0.05 to 0.2): a few
    # roundings a step.
    np.testing.assert_allclose(layer.embeddings.numpy(), expected, rtol=1e-5, atol=1e-6)


def lookup_reads(layer):
    """The table reads in the graph of a lookup: (row reads, whole reads)."""
    graph = tf.function(layer).get_concrete_function(
        tf.TensorSpec((None, 4), tf.int32)
    ).graph
    operations = graph.get_operations()
    row_reads = [op for op in operations if op.type == "ResourceGather"]
    whole_reads = [
        op for op in operations
        if op.type == "ReadVariableOp" and op.outputs[0].shape == (VOCABULARY, WIDTH)
    ]
    return len(row_reads), len(whole_reads)


def test_lookup_reads_rows_of_a_table_that_lazy_adam_updates():
    # After a scatter TensorFlow copies the whole table on each dense read;
    # after a row read, on each dense update. So the lookup reads the table as
    # its optimizer writes it: densely, as stock does, unless LazyAdam does.
    layer = keras_embed.Embedding(VOCABULARY, WIDTH)
    layer.build()
    assert lookup_reads(layer) == (0, 1)
    assert not is_updated_by_rows(layer.embeddings)
    LazyAdam().build([layer.embeddings])
    assert is_updated_by_rows(layer.embeddings)
    assert lookup_reads(layer) == (1, 0)
    # For another optimizer that writes rows (SGD without momentum), by hand.
    other = keras_embed.Embedding(VOCABULARY, WIDTH)
    other.build()
    mark_updated_by_rows(other.embeddings)
    assert lookup_reads(other) == (1, 0)


class TraceRecorder(keras_embed.Embedding):
    """Records, at each trace, whether the table is marked as row-updated."""

    traces = []

    def build(self, input_shape=None):
        super().build(input_shape)
        # ran[k]: how many times the graph of trace k ran.
        self.ran = self.add_weight(shape=(32,), dtype="int32", initializer="zeros",
                                   trainable=False, name="ran")

    def call(self, inputs):
        self.traces.append(is_updated_by_rows(self.embeddings))
        self.ran.assign_add(tf.one_hot(len(self.traces) - 1, 32, dtype="int32"))
        return super().call(inputs)


@pytest.mark.parametrize("wrap", [False, True], ids=["LazyAdam", "LossScaleOptimizer"])
def test_fit_traces_the_lookup_after_lazy_adam_is_built(rng, wrap):
    TraceRecorder.traces = []
    optimizer = LazyAdam()
    if wrap:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model = pooled_model(TraceRecorder(VOCABULARY, WIDTH), optimizer)
    model.fit(rng.integers(VOCABULARY, size=(8, 4)), rng.normal(size=(8, 1)), verbose=0)
    # Every trace whose graph ran read the table as marked. (TensorFlow traces
    # the step twice: the first trace, which builds LazyAdam, reads the table
    # unmarked and never runs.)
    ran = model.layers[0].ran.numpy()[: len(TraceRecorder.traces)]
    ran_marked = [marked for marked, runs in zip(TraceRecorder.traces, ran) if runs]
    assert ran.sum() == 1 and ran_marked == [True], (TraceRecorder.traces, ran)


@pytest.mark.cross_kernel
def test_jit_compiled_fit_matches_graph_fit(rng):
    ids = rng.integers(VOCABULARY, size=(8, 4))
    targets = rng.normal(size=(8, 1))
    tables = []
    for jit_compile in (False, True):
        keras.utils.set_random_seed(5)
        layer = keras_embed.Embedding(VOCABULARY, WIDTH)
        model = pooled_model(layer, LazyAdam(0.1), jit_compile=jit_compile)
        model.fit(ids, targets, batch_size=8, epochs=3, verbose=0)
        tables.append(layer.embeddings.numpy())
    # XLA's kernels, not the graph's (pooling, Dense, the loss and Adam's
    # arithmetic fused otherwise): 2.5 float32 ulps apart at most over 5 seeds
    # (7.5e-8 in a table of values up to 0.35). Three Adam steps divide by
    # sqrt(v), which can grow a small gradient's rounding: rtol=1e-5 and
    # atol=1e-6 (about 30 ulps of the largest value) leave room for that.
    np.testing.assert_allclose(tables[0], tables[1], rtol=1e-5, atol=1e-6)


def test_mixed_float16_fit_uses_a_loss_scale_optimizer_with_sparse_gradients(rng, policy, densify_warnings):
    policy("mixed_float16")
    recorder = GradientRecorder(learning_rate=0.1)
    layer = keras_embed.Embedding(VOCABULARY, WIDTH, name="table")
    model = pooled_model(layer, recorder)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    start = layer.embeddings.numpy()
    ids = rng.integers(1, VOCABULARY, size=(16, 4))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model.fit(ids, rng.normal(size=(16, 1)), batch_size=8, epochs=2, verbose=0)
    assert densify_warnings(record) == []
    assert recorder.gradient_type("table") == "IndexedSlices"
    table = layer.embeddings.numpy()
    assert table.dtype == np.float32
    np.testing.assert_array_equal(table[0], start[0])
    assert np.all(np.any(table[np.unique(ids)] != start[np.unique(ids)], axis=1))


def test_loss_scale_optimizer_unscales_exactly_and_skips_nonfinite_steps(rng):
    start = rng.normal(size=(VOCABULARY, WIDTH)).astype("float32")
    steps = random_steps(rng, 3)
    plain, scaled = tf.Variable(start), tf.Variable(start)
    apply_sparse(LazyAdam(0.1), plain, steps)
    wrapped = keras.optimizers.LossScaleOptimizer(LazyAdam(0.1), initial_scale=2.0**10)
    apply_sparse(wrapped, scaled, [(ids, rows * 2.0**10) for ids, rows in steps])
    np.testing.assert_array_equal(scaled.numpy(), plain.numpy())
    # A non-finite gradient: the step is skipped and the scale halved.
    before = scaled.numpy()
    apply_sparse(wrapped, scaled, [(np.array([1], "int32"), np.full((1, WIDTH), np.inf, "float32"))])
    np.testing.assert_array_equal(scaled.numpy(), before)
    assert float(wrapped.dynamic_scale.numpy()) == 2.0**9


# Saving and configuration.


def test_state_saves_and_loads_in_a_keras_file(rng, tmp_path):
    ids = rng.integers(VOCABULARY, size=(16, 4))
    targets = rng.normal(size=(16, 1))
    model = pooled_model(keras_embed.Embedding(VOCABULARY, WIDTH), LazyAdam(0.05, amsgrad=True, beta_1=0.8))
    model.fit(ids, targets, batch_size=8, epochs=2, verbose=0)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.optimizer) is LazyAdam
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert len(loaded.optimizer.variables) == len(model.optimizer.variables)
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Training goes on from the same state.
    model.fit(ids, targets, batch_size=16, epochs=1, shuffle=False, verbose=0)
    loaded.fit(ids, targets, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_config_round_trip_and_registered_name():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([10], [0.1, 0.01])
    optimizer = LazyAdam(schedule, beta_1=0.8, beta_2=0.99, epsilon=1e-6, amsgrad=True,
                         weight_decay=0.01, clipnorm=1.0, name="lazy")
    serialized = keras.optimizers.serialize(optimizer)
    assert serialized["registered_name"] == "keras_embed>LazyAdam"
    restored = keras.optimizers.deserialize(serialized)
    assert type(restored) is LazyAdam
    assert restored.get_config() == optimizer.get_config()
    config = restored.get_config()
    assert (config["beta_1"], config["beta_2"], config["epsilon"], config["amsgrad"]) == (
        0.8, 0.99, 1e-6, True
    )
    assert keras.saving.get_registered_object("keras_embed>LazyAdam") is LazyAdam


def test_reachable_from_the_package():
    """`import keras_embed` alone gives `keras_embed.optimizers.LazyAdam`,
    and Keras finds it by its registered name (a fresh process: here the
    test module's own import would hide a missing re-export)."""
    import subprocess
    import sys

    code = (
        "import keras, keras_embed\n"
        "optimizer = keras_embed.optimizers.LazyAdam(0.5)\n"
        "found = keras.optimizers.get({'class_name': 'keras_embed>LazyAdam', 'config': {}})\n"
        "print(type(optimizer).__name__, type(found).__name__, "
        "isinstance(found, keras.optimizers.Optimizer), 'optimizers' in keras_embed.__all__)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(keras_embed.__file__)))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["LazyAdam", "LazyAdam", "True", "True"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"beta_1": 1.0}, "LazyAdam: `beta_1` must be in [0, 1): it is the decay rate of a moving average. Received: beta_1=1.0."),
        ({"beta_2": -0.1}, "LazyAdam: `beta_2` must be in [0, 1): it is the decay rate of a moving average. Received: beta_2=-0.1."),
        ({"epsilon": -1e-7}, "LazyAdam: `epsilon` must be >= 0. Received: epsilon=-1e-07."),
        ({"momentum": 0.9}, "Argument(s) not recognized: {'momentum': 0.9}"),
    ],
)
def test_bad_arguments_are_refused_with_clear_messages(arguments, message):
    with pytest.raises(ValueError) as error:
        LazyAdam(**arguments)
    assert str(error.value) == message
