"""`keras_embed.EmbeddingBag` against bags reduced by hand in NumPy."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_embed
from keras_embed import EmbeddingBag
from keras_embed.optimizers import LazyAdam

V, D = 12, 3
COMBINERS = ("sum", "mean", "sqrtn", "max")
KINDS = ("dense", "ragged", "sparse")

# Five bags over ids 0..11. With mask_zero, id 0 is padding: bag 1 is then
# empty, bag 2 holds a repeated id. Without it, 0 is an id like any other.
BAGS = [[3, 0, 7, 1], [0, 0], [5, 5, 11, 0, 2, 9], [4], [10, 6]]
LENGTH = max(len(bag) for bag in BAGS)


def bag_inputs(kind, bags, values):
    """`values` (one list per bag) as a dense (padded with 0), ragged or
    sparse tensor. The sparse tensor stores each bag's entries at every
    second column, so missing entries sit between stored ones."""
    if kind == "dense":
        return tf.constant([row + [0] * (LENGTH - len(row)) for row in values])
    if kind == "ragged":
        return tf.ragged.constant(values, dtype=tf.constant(values[0]).dtype,
                                  ragged_rank=1)
    indices = [[b, 2 * i] for b, row in enumerate(values) for i in range(len(row))]
    flat = [v for row in values for v in row]
    return tf.SparseTensor(indices, flat, (len(bags), 2 * LENGTH))


def by_hand(table, bags, weights, combiner, mask_zero, upstream):
    """The output and d sum(output * upstream) / d table, in NumPy."""
    out = np.zeros((len(bags), table.shape[1]))
    grad = np.zeros(table.shape)
    for b, (bag, bag_weights) in enumerate(zip(bags, weights)):
        kept = [(i, w) for i, w in zip(bag, bag_weights) if not (mask_zero and i == 0)]
        if not kept:
            continue  # An empty bag: zeros, and no gradient.
        ids = np.array([i for i, _ in kept])
        w = np.array([w for _, w in kept], "float64")
        rows = table[ids].astype("float64")
        if combiner == "max":
            out[b] = rows.max(axis=0)
            for column in range(table.shape[1]):
                grad[ids[rows[:, column].argmax()], column] += upstream[b, column]
            continue
        scale = {"sum": 1.0, "mean": w.sum(), "sqrtn": np.sqrt((w * w).sum())}[combiner]
        out[b] = (w[:, None] * rows).sum(axis=0) / scale
        for i, wi in zip(ids, w):
            grad[i] += wi / scale * upstream[b]
    return out, grad


def bag_layer(combiner, mask_zero=False, **kwargs):
    table = np.random.default_rng(7).normal(size=(V, D)).astype("float32")
    layer = EmbeddingBag(V, D, combiner=combiner, mask_zero=mask_zero, weights=table, **kwargs)
    return layer, table


def output_and_gradient(layer, inputs, weights, upstream, jit_compile=None):
    def run(inputs, weights):
        with tf.GradientTape() as tape:
            out = layer(inputs) if weights is None else layer(inputs, weights)
            loss = tf.reduce_sum(out * upstream)
        return out, tape.gradient(loss, layer.trainable_weights[0].value)

    if jit_compile:
        return tf.function(run, jit_compile=True)(inputs, weights)
    return run(inputs, weights)


@pytest.mark.parametrize("combiner, weighted", [
    (combiner, weighted) for combiner in COMBINERS for weighted in (False, True)
    if not (combiner == "max" and weighted)  # max takes no weights (see below)
], ids=lambda value: {True: "weights", False: ""}.get(value, value))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mask_zero", [False, True], ids=["", "mask_zero"])
def test_output_and_gradient_are_the_bags_reduced_by_hand(
    combiner, kind, mask_zero, weighted, jit_compile=False
):
    layer, table = bag_layer(combiner, mask_zero)
    rng = np.random.default_rng(3)
    weights = [list(rng.uniform(0.5, 2.0, len(bag)).astype("float32")) for bag in BAGS]
    if not weighted:
        weights_in, weights = None, [[1.0] * len(bag) for bag in BAGS]
    else:
        weights_in = bag_inputs(kind, BAGS, weights)
    if kind == "dense" and not mask_zero:
        # Dense bags without padding are the whole rows, zeros included.
        bags = [bag + [0] * (LENGTH - len(bag)) for bag in BAGS]
        weights = [w + [0.0 if weighted else 1.0] * (LENGTH - len(w)) for w in weights]
    else:
        bags = BAGS
    upstream = rng.normal(size=(len(BAGS), D)).astype("float32")
    out, gradient = output_and_gradient(
        layer, bag_inputs(kind, BAGS, BAGS), weights_in, upstream, jit_compile
    )
    expected_out, expected_grad = by_hand(table, bags, weights, combiner, mask_zero, upstream)
    assert out.shape == (len(BAGS), D) and out.dtype == tf.float32
    np.testing.assert_allclose(out, expected_out, rtol=1e-5, atol=1e-6)
    assert isinstance(gradient, tf.IndexedSlices)
    np.testing.assert_allclose(tf.convert_to_tensor(gradient), expected_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind, combiner", [
    *(("dense", combiner) for combiner in COMBINERS), ("ragged", "sqrtn"), ("ragged", "max"),
])
@pytest.mark.cross_kernel
def test_xla_reduces_padded_bags_by_hand_too(kind, combiner):
    # XLA compiles no op of a data-dependent size: padding is masked there,
    # not left out, and bags are summed by unsorted segment sums. XLA's
    # kernels against NumPy's float64: the 1e-5 / 1e-6 of the test it runs.
    test_output_and_gradient_are_the_bags_reduced_by_hand(
        combiner, kind, True, combiner != "max", jit_compile=True
    )


@pytest.mark.parametrize("combiner, weighted", [
    ("sum", False), ("mean", False), ("mean", True), ("sqrtn", True), ("max", False),
])
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_full_bags_with_mask_zero_reduced_by_hand(combiner, weighted, graph):
    # Dense bags with no padding at all are listed whole, without looking
    # for padding: the same numbers as bags with some.
    full = [[3, 7, 1], [5, 5, 11], [4, 2, 9], [10, 6, 8]]
    rng = np.random.default_rng(4)
    weights = rng.uniform(0.5, 2.0, (len(full), 3)).astype("float32")
    upstream = rng.normal(size=(len(full), D)).astype("float32")
    layer, table = bag_layer(combiner, mask_zero=True)

    def run(ids, weights):
        with tf.GradientTape() as tape:
            out = layer(ids, weights) if weighted else layer(ids)
            loss = tf.reduce_sum(out * upstream)
        return out, tape.gradient(loss, layer.embeddings.value)

    run = tf.function(run) if graph else run
    out, gradient = run(tf.constant(full), tf.constant(weights))
    hand_weights = weights if weighted else np.ones_like(weights)
    expected_out, expected_grad = by_hand(table, full, hand_weights, combiner, True, upstream)
    np.testing.assert_allclose(out, expected_out, rtol=1e-5, atol=1e-6)
    assert isinstance(gradient, tf.IndexedSlices)
    np.testing.assert_allclose(tf.convert_to_tensor(gradient), expected_grad, rtol=1e-5, atol=1e-6)
    # One padded bag more makes the batch look for padding: the full bags'
    # vectors are the same.
    padded = [*full, [2, 0, 0]]
    more_weights = np.concatenate([weights, [[1.0, 1.0, 1.0]]]).astype("float32")
    with_padding = layer(tf.constant(padded), more_weights) if weighted else layer(tf.constant(padded))
    np.testing.assert_allclose(with_padding[:-1], out, rtol=1e-6)
    np.testing.assert_allclose(with_padding[-1], table[2], rtol=1e-6)


@pytest.mark.parametrize("combiner", COMBINERS)
def test_sparse_ids_out_of_row_major_order(combiner):
    layer, table = bag_layer(combiner, mask_zero=True)
    ids = bag_inputs("sparse", BAGS, BAGS)
    order = np.random.default_rng(5).permutation(ids.values.shape[0])
    shuffled = tf.SparseTensor(tf.gather(ids.indices, order), tf.gather(ids.values, order),
                               ids.dense_shape)
    expected, _ = by_hand(table, BAGS, [[1.0] * len(b) for b in BAGS], combiner, True,
                          np.zeros((len(BAGS), D)))
    np.testing.assert_allclose(layer(shuffled), expected, rtol=1e-5, atol=1e-6)
    if combiner == "sum":  # in a graph, the order is checked when it runs
        np.testing.assert_allclose(tf.function(layer)(shuffled), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
def test_dense_output_is_embedding_then_masked_reduction(combiner):
    # The long way: keras_embed.Embedding(mask_zero=True)'s rows and mask,
    # reduced in NumPy (mean: as GlobalAveragePooling1D does).
    layer, table = bag_layer(combiner, mask_zero=True)
    embedding = keras_embed.Embedding(V, D, mask_zero=True, weights=table)
    ids = bag_inputs("dense", BAGS, BAGS)
    rows, mask = embedding(ids).numpy(), embedding.compute_mask(ids).numpy()
    total = (rows * mask[..., None]).sum(axis=1)
    count = mask.sum(axis=1, keepdims=True)
    expected = {"sum": total, "mean": total / np.maximum(count, 1),
                "sqrtn": total / np.sqrt(np.maximum(count, 1))}[combiner]
    np.testing.assert_allclose(layer(ids), expected, rtol=1e-6, atol=1e-7)
    if combiner == "mean":
        pooled = keras.layers.GlobalAveragePooling1D()(embedding(ids), mask=embedding.compute_mask(ids))
        kept = [0, 2, 3, 4]
        # Two reductions (a segment sum, a masked mean): a few ulps, and
        # atol for components near 0 (rows about 0.05 in size).
        np.testing.assert_allclose(layer(ids).numpy()[kept], pooled.numpy()[kept], rtol=1e-6,
                                   atol=1e-7)
        # The empty bag (all padding): the long way divides 0 by 0.
        assert np.isnan(pooled.numpy()[1]).all()


def test_higher_rank_dense_ids_reduce_the_last_axis():
    layer, table = bag_layer("sum")
    ids = np.array([[[1, 2], [3, 4]], [[5, 6], [7, 8]]])
    np.testing.assert_allclose(layer(ids), table[ids].sum(axis=2), rtol=1e-6)
    assert layer.compute_output_shape((None, 2, 2)) == (None, 2, D)


@pytest.mark.parametrize("combiner", COMBINERS)
@pytest.mark.parametrize("kind", KINDS)
def test_empty_bags_give_zeros(combiner, kind):
    layer, _ = bag_layer(combiner, mask_zero=True)
    bags = [[0, 0], [4, 0], [0, 0]] if kind == "dense" else [[], [4], []]
    ids = bag_inputs(kind, bags, bags) if kind != "ragged" else tf.ragged.constant(bags, tf.int32)
    out = layer(ids).numpy()
    np.testing.assert_array_equal(out[[0, 2]], np.zeros((2, D)))
    assert np.all(out[1] != 0)
    if combiner != "max":
        weights = tf.ragged.constant([[], [2.0], []]) if kind == "ragged" else (
            bag_inputs(kind, bags, [[1.0] * len(b) for b in bags]))
        np.testing.assert_array_equal(layer(ids, weights).numpy()[[0, 2]], np.zeros((2, D)))


@pytest.mark.parametrize("mask_zero", [False, True])
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_a_batch_of_no_ids_and_bags_of_length_zero(mask_zero, graph):
    # Shape (B, 0), as `ragged.to_tensor()` gives for empty bags: zero vectors,
    # with mask_zero too.
    for combiner in COMBINERS:
        layer, _ = bag_layer(combiner, mask_zero=mask_zero)
        call = tf.function(layer) if graph else layer
        np.testing.assert_array_equal(call(tf.zeros((3, 0), tf.int32)), np.zeros((3, D)))
        if combiner != "max":
            np.testing.assert_array_equal(call(tf.zeros((3, 0), tf.int32), tf.zeros((3, 0))),
                                          np.zeros((3, D)))
        ragged = tf.RaggedTensor.from_row_lengths(tf.zeros([0], tf.int32), [0, 0])
        np.testing.assert_array_equal(layer(ragged), np.zeros((2, D)))


def embedding_error(ids, **kwargs):
    """The message keras_embed.Embedding gives for `ids`."""
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        keras_embed.Embedding(V, D, name="films", **kwargs)(ids)
    return caught.value.message


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [12, -1, 2.5])
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_bad_ids_get_embeddings_message(kind, bad, graph):
    dtype = "float32" if isinstance(bad, float) else "int32"
    bags = [[1, 2], [bad, 3]]
    ids = bag_inputs(kind, bags, [[np.array(v, dtype) for v in row] for row in bags])
    expected = embedding_error(ids)
    assert f"received id {bad}" in expected and "[0, input_dim) = [0, 12)" in expected
    layer = EmbeddingBag(V, D, name="films")
    call = tf.function(layer) if graph else layer
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        call(ids)
    assert expected in caught.value.message


@pytest.mark.parametrize("kind, combiner", [
    *(("dense", combiner) for combiner in COMBINERS), ("ragged", "mean"), ("ragged", "max"),
])
def test_bad_ids_under_xla_give_nan_bags(kind, combiner):
    layer, _ = bag_layer(combiner)
    bags = [[1, 2], [12, 3]]
    out = tf.function(layer, jit_compile=True)(bag_inputs(kind, bags, bags)).numpy()
    assert np.all(np.isfinite(out[0])) and np.all(np.isnan(out[1]))


def test_non_integer_ids_are_refused_as_embedding_does():
    with pytest.raises(TypeError, match="received ids of dtype string"):
        EmbeddingBag(V, D)(tf.constant([["a"]]))


def test_max_refuses_weights():
    layer, _ = bag_layer("max")
    with pytest.raises(ValueError, match="combiner='max' takes no per-id weights"):
        layer(np.array([[1, 2]]), np.array([[1.0, 2.0]]))


@pytest.mark.parametrize("kind", KINDS)
def test_weights_must_match_the_ids(kind):
    layer, _ = bag_layer("sum")
    ids = bag_inputs(kind, BAGS, BAGS)
    count = sum(len(bag) for bag in BAGS)
    # As many weights as ids, at other places (or of another shape).
    if kind == "sparse":
        weights = tf.SparseTensor(ids.indices + [0, 1], tf.ones([count]), ids.dense_shape)
    elif kind == "ragged":
        weights = tf.RaggedTensor.from_row_lengths(tf.ones([count]), [5, 1, 6, 1, 2])
    else:
        weights = tf.ones((len(BAGS), LENGTH - 1))
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError),
                       match="per-id weights must have the ids'"):
        layer(ids, weights)
    with pytest.raises(TypeError, match="must be of the ids' kind"):
        layer(ids, np.ones((len(BAGS), LENGTH)) if kind != "dense"
              else tf.ragged.constant([[1.0]] * len(BAGS)))


def test_ragged_and_sparse_ids_must_be_batches_of_bags():
    layer, _ = bag_layer("mean")
    with pytest.raises(ValueError, match=r"takes a RaggedTensor of shape \(batch, length\)"):
        layer(tf.ragged.constant([[[1, 2]], [[3]]]))
    with pytest.raises(ValueError, match="a bag is the last axis"):
        layer(tf.constant(3))


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_lazy_adam_trains_only_the_rows_in_the_bags(kind):
    sparse = kind == "sparse"
    length = 2 * LENGTH if sparse else LENGTH
    ids = keras.Input((length,), dtype="int32", sparse=sparse)
    weights = keras.Input((length,), sparse=sparse)
    bag = EmbeddingBag(V, D, mask_zero=True, name="genres")
    model = keras.Model([ids, weights], keras.layers.Dense(1)(bag(ids, weights)))
    model.compile(LazyAdam(0.1), "mse")
    batch = bag_inputs(kind, BAGS, BAGS)
    ones = bag_inputs(kind, BAGS, [[1.0] * len(b) for b in BAGS])
    before = bag.embeddings.numpy()
    model.fit([batch, ones], np.ones((len(BAGS), 1)), batch_size=len(BAGS), verbose=0)
    changed = np.flatnonzero(np.any(bag.embeddings.numpy() != before, axis=1))
    np.testing.assert_array_equal(changed, sorted({i for b in BAGS for i in b} - {0}))


# Trains in `fit` with TensorFlow's warnings shown. A `tf.cond` that carried
# the rows to the bags made TensorFlow's type inference of the training step
# fail on our own graph ("Type inference failed. This indicates an invalid
# graph that escaped type checking ... genre_bag/cond_2/output"), some 30 lines
# per `fit`: the warning names our graph, so this test reads it.
TRAIN_IN_FIT = """\
import numpy as np, keras, keras_embed
ids = keras.Input((3,), dtype="int32")
weights = keras.Input((3,))
bags = keras_embed.EmbeddingBag(10, 4, mask_zero=True, name="genre_bag")
model = keras.Model([ids, weights], keras.layers.Dense(1)(bags(ids, weights)))
model.compile("adam", "mse")
batch = np.array([[3, 4, 0], [1, 2, 5], [0, 0, 0], [7, 8, 9]] * 2)
model.fit([batch, np.ones((8, 3))], np.ones((8, 1)), batch_size=4, epochs=2, verbose=0)
print("trained")
"""


def test_fit_builds_a_graph_tensorflow_can_type():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "1"}  # Warnings shown.
    result = subprocess.run([sys.executable, "-c", TRAIN_IN_FIT], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.stdout == "trained\n", result.stderr
    assert "Type inference failed" not in result.stderr


def test_save_and_load_without_custom_objects(tmp_path):
    ids = keras.Input((None,), dtype="int32")
    layer = EmbeddingBag(V, D, combiner="sqrtn", mask_zero=True, name="genres")
    model = keras.Model(ids, layer(ids))
    path = os.path.join(tmp_path, "bags.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    batch = bag_inputs("dense", BAGS, BAGS).numpy()
    assert type(loaded.get_layer("genres")) is EmbeddingBag
    np.testing.assert_array_equal(loaded.predict(batch, verbose=0), model.predict(batch, verbose=0))
    assert keras.saving.serialize_keras_object(layer)["registered_name"] == "keras_embed>EmbeddingBag"


def test_config_round_trip():
    layer = EmbeddingBag(V, D, combiner="max", mask_zero=True, embeddings_initializer="ones",
                         embeddings_regularizer="l2", lora_rank=2, name="genres")
    config = layer.get_config()
    assert config["combiner"] == "max" and config["lora_rank"] == 2
    assert EmbeddingBag.from_config(config).get_config() == config
    assert repr(layer) == "<EmbeddingBag name=genres, 12, 3, combiner='max', mask_zero=True>"


@pytest.mark.parametrize("field, value, message", [
    ("combiner", "median", "`combiner` must be one of 'sum', 'mean', 'sqrtn', 'max'. "
                           "Received: combiner='median'."),
    ("mask_zero", "false", "`mask_zero` must be True or False."),
    ("input_dim", "12", "`input_dim` must be a positive integer."),
])
def test_bad_configs_name_the_layer_and_field(field, value, message):
    config = EmbeddingBag(V, D, name="genres").get_config()
    config[field] = value
    with pytest.raises(ValueError) as caught:
        EmbeddingBag.from_config(config)
    assert "layer 'genres'" in str(caught.value) and message in str(caught.value)


def test_lora_adds_its_delta_to_the_bags_rows():
    layer, table = bag_layer("mean", mask_zero=True, lora_rank=2)
    layer.lora_embeddings_b.assign(np.ones((2, D)))
    ids = bag_inputs("ragged", BAGS, BAGS)
    delta = layer.lora_embeddings_a.numpy() @ np.ones((2, D))
    expected, _ = by_hand(table + delta, BAGS, [[1.0] * len(b) for b in BAGS], "mean", True,
                          np.zeros((len(BAGS), D)))
    np.testing.assert_allclose(layer(ids), expected, rtol=1e-5, atol=1e-6)
    assert [w.name for w in layer.trainable_weights] == ["lora_embeddings_a", "lora_embeddings_b"]


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_bags_reduce_the_quantized_rows(mode):
    layer, table = bag_layer("sum", mask_zero=True)
    embedding = keras_embed.Embedding(V, D, weights=table)
    layer.quantize(mode)
    embedding.quantize(mode)
    ids = bag_inputs("sparse", BAGS, BAGS)
    rows = embedding(np.arange(V)).numpy()  # the dequantized table
    expected, _ = by_hand(rows, BAGS, [[1.0] * len(b) for b in BAGS], "sum", True,
                          np.zeros((len(BAGS), D)))
    np.testing.assert_allclose(layer(ids), expected, rtol=1e-6, atol=1e-6)
    weights = bag_inputs("sparse", BAGS, [[2.0] * len(b) for b in BAGS])
    np.testing.assert_allclose(layer(ids, weights), 2 * expected, rtol=1e-6, atol=1e-6)


def test_mixed_precision_output(policy):
    policy("mixed_float16")
    layer = EmbeddingBag(V, D)
    out = layer(np.array([[1, 2]]))
    assert out.dtype == tf.float16 and layer.embeddings.dtype == "float32"


def test_weights_summing_to_zero_divide_by_zero_as_the_formula_says():
    # A weighted mean over weights that cancel is undefined: not a silent 0.
    layer, _ = bag_layer("mean")
    out = layer(np.array([[1, 2], [3, 4]]), np.array([[1.0, -1.0], [1.0, 1.0]])).numpy()
    assert not np.any(np.isfinite(out[0])) and np.all(np.isfinite(out[1]))
