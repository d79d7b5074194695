"""Bad ids are clear errors: eager, in graphs, in fit/predict/evaluate, in an
exported SavedModel, for dense, sparse and ragged ids; NaN rows under XLA."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_embed
from keras_embed.layers.ids import checked

RANGE = r"\[0, input_dim\) = \[0, 10\)\."


def outside(value, layer="words"):
    return (
        rf"^Embedding layer '{layer}' received id {value}, which is outside "
        rf"the valid range {RANGE}"
    )


def not_whole(value, layer="words"):
    return (
        rf"^Embedding layer '{layer}' received id {value}, which is not a whole "
        rf"number; ids must be integers in {RANGE}"
    )


def first_line(error):
    return str(error.value).splitlines()[0]


@pytest.fixture
def layer():
    layer = keras_embed.Embedding(10, 3, name="words")
    layer.build()
    layer.embeddings.assign(np.arange(30, dtype="float32").reshape(10, 3))
    return layer


# Eager calls, where stock Keras wraps, truncates or raises a long trace.


@pytest.mark.parametrize(
    "ids, message",
    [
        ([[1, 12]], outside(12)),
        ([[1, -3, 4]], outside(-3)),
        ([[-1, 10]], outside(-1)),  # The first bad id in order.
        ([[1.0, 1.7]], not_whole("1.7")),
        ([[np.nan]], not_whole("nan")),
        ([[np.inf]], outside("inf")),
        ([[2.0, 10.0]], outside("10")),
    ],
)
def test_eager_error_names_layer_first_bad_id_and_range(layer, ids, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message) as error:
        layer(np.array(ids))
    assert len(str(error.value).splitlines()) == 1


def test_stock_keras_would_give_a_silent_wrong_row(layer):
    # What we guard against: stock wraps -1 to the last row, 1.7 to row 1.
    stock = keras.layers.Embedding(10, 3)
    stock.build()
    stock.embeddings.assign(layer.embeddings)
    np.testing.assert_array_equal(stock(np.array([-1])), layer.embeddings.numpy()[[9]])
    np.testing.assert_array_equal(stock(np.array([1.7])), layer.embeddings.numpy()[[1]])


@pytest.mark.parametrize(
    "ids, dtype_name, hint",
    [
        (np.array([["the", "cat"]]), "string", "keras.layers.StringLookup` or `keras.layers.TextVectorization"),
        (np.array([[True, False]]), "bool", "Booleans are not ids"),
        (np.array([[1 + 2j]]), "complex128", None),
    ],
)
def test_strings_booleans_and_complex_ids_are_type_errors(layer, ids, dtype_name, hint):
    with pytest.raises(TypeError) as error:
        layer(ids)
    assert first_line(error).startswith(
        f"Embedding layer 'words' received ids of dtype {dtype_name}; ids must be "
        "integers in [0, input_dim) = [0, 10)."
    )
    if hint:
        assert hint in first_line(error)
    # And in a graph, raised as it is (not under "in user code:").
    with pytest.raises(TypeError) as error:
        tf.function(layer)(tf.constant(ids))
    assert first_line(error).startswith(f"Embedding layer 'words' received ids of dtype {dtype_name}")


@pytest.mark.parametrize(
    "dtype", ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
              "uint64", "float16", "bfloat16", "float32", "float64"],
)
def test_every_id_dtype_is_checked_eager_and_in_a_graph(layer, dtype):
    good = tf.constant([[0, 9, 3]], dtype)
    lookup = tf.function(layer)
    expected = layer.embeddings.numpy()[[[0, 9, 3]]]
    np.testing.assert_array_equal(layer(good), expected)
    np.testing.assert_array_equal(lookup(good), expected)
    bad = tf.constant([[3, 120]], dtype)  # 120 fits every dtype here.
    for call in (layer, lookup):
        with pytest.raises(tf.errors.InvalidArgumentError, match=outside(120)):
            call(bad)
    if not tf.as_dtype(dtype).is_unsigned:
        for call in (layer, lookup):
            with pytest.raises(tf.errors.InvalidArgumentError, match=outside(-1)):
                call(tf.constant([[3, -1]], dtype))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_fractional_ids_of_every_float_dtype_are_refused(layer, dtype):
    for call in (layer, tf.function(layer)):
        with pytest.raises(tf.errors.InvalidArgumentError, match=not_whole("2.5")):
            call(tf.constant([[1, 2.5]], dtype))


def test_largest_unsigned_ids_are_caught(layer):
    ids = tf.constant([2**64 - 1], tf.uint64)
    for call in (layer, tf.function(layer)):
        with pytest.raises(tf.errors.InvalidArgumentError, match=outside(2**64 - 1)):
            call(ids)


def test_empty_ids_look_up_nothing(layer):
    for call in (layer, tf.function(layer)):
        assert call(tf.zeros((0, 4), tf.int32)).shape == (0, 4, 3)
        assert call(tf.zeros((2, 0), tf.float32)).shape == (2, 0, 3)


# Graphs: the check is an op, and the error leads with our sentence.


def test_tf_function_error_leads_with_our_sentence(layer):
    lookup = tf.function(layer, input_signature=[tf.TensorSpec((None, None), tf.int32)])
    np.testing.assert_array_equal(lookup(tf.constant([[2]])), [[[6, 7, 8]]])
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        lookup(tf.constant([[2, 12]]))
    assert first_line(error) == (
        "Embedding layer 'words' received id 12, which is outside the valid "
        "range [0, input_dim) = [0, 10)."
    )
    assert "Graph execution error:" in str(error.value)  # TensorFlow's trace follows.


def test_graph_reports_the_negative_id_nearest_zero_else_the_largest(layer):
    lookup = tf.function(layer)
    with pytest.raises(tf.errors.InvalidArgumentError, match=outside(-2)):
        lookup(tf.constant([[-7, 15, -2, 30]]))
    with pytest.raises(tf.errors.InvalidArgumentError, match=outside(30)):
        lookup(tf.constant([[15, 30, 1]], tf.int64))
    with pytest.raises(tf.errors.InvalidArgumentError, match=not_whole("2.5")):
        lookup(tf.constant([[1.0, 2.5, 99.0]]))  # Floats: the first bad one.


def test_negatives_are_caught_when_input_dim_exceeds_int32():
    # As uint32, -1 is 2**32 - 1 < input_dim: int32 ids are widened first.
    for check in (lambda ids: checked(ids, 2**32 + 5, "big", in_xla=False),
                  tf.function(lambda ids: checked(ids, 2**32 + 5, "big", in_xla=False))):
        assert check(tf.constant([2**31 - 1, 0], tf.int32)).numpy().tolist() == [2**31 - 1, 0]
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"received id -1, which is outside"):
            check(tf.constant([3, -1], tf.int32))


def _classifier(**compile_args):
    model = keras.Sequential(
        [keras_embed.Embedding(10, 3, name="words"), keras.layers.GlobalAveragePooling1D(),
         keras.layers.Dense(1)]
    )
    model.compile("sgd", "mse", **compile_args)
    return model


@pytest.mark.parametrize("method", ["predict", "fit", "evaluate"])
def test_fit_predict_evaluate_raise_with_our_first_line(method):
    model = _classifier()
    ids, y = np.array([[1, 2], [3, 11]]), np.zeros((2, 1))
    args = {"predict": (ids,), "fit": (ids, y), "evaluate": (ids, y)}[method]
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        getattr(model, method)(*args, verbose=0)
    assert first_line(error) == (
        "Embedding layer 'words' received id 11, which is outside the valid "
        "range [0, input_dim) = [0, 10)."
    )


def test_fit_with_bad_ids_leaves_the_weights_untouched():
    model = _classifier()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(tf.errors.InvalidArgumentError):
        model.fit(np.array([[1, -1]]), np.ones((1, 1)), verbose=0)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_exported_saved_model_checks_ids(tmp_path):
    model = _classifier()
    model.export(str(tmp_path / "served"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "served"))
    good = np.array([[1, 2]], "int32")
    np.testing.assert_allclose(served.serve(good), model.predict(good, verbose=0), rtol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        served.serve(np.array([[1, 10]], "int32"))
    assert first_line(error) == (
        "Embedding layer 'words' received id 10, which is outside the valid "
        "range [0, input_dim) = [0, 10)."
    )


def test_saved_model_checks_ids_in_a_process_without_keras_embed(tmp_path):
    _classifier().export(str(tmp_path / "served"), verbose=False)
    script = textwrap.dedent(
        f"""
        import sys, tensorflow as tf
        served = tf.saved_model.load({str(tmp_path / "served")!r})
        try:
            served.serve(tf.constant([[1, 10]]))
        except tf.errors.InvalidArgumentError as error:
            print("keras_embed" in sys.modules, str(error).splitlines()[0], "|", str(error).splitlines()[-2])
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr
    # TensorFlow's own layout: our sentence on the last lines, quotes escaped.
    assert result.stdout.strip() == (
        "False Graph execution error: | assertion failed: [Embedding layer "
        "\\'words\\' received id 10, which is outside the valid range "
        "[0, input_dim) = [0, 10).]"
    )


# Sparse and ragged ids.


def test_sparse_ids_are_checked(layer):
    bad = tf.SparseTensor(indices=[[0, 0], [1, 2]], values=[4, 13], dense_shape=[2, 3])
    for call in (layer, tf.function(layer)):
        with pytest.raises(tf.errors.InvalidArgumentError, match=outside(13)):
            call(bad)
    good = tf.SparseTensor(indices=[[0, 0], [1, 2]], values=[4, 7], dense_shape=[2, 3])
    table = layer.embeddings.numpy()
    # Positions the sparse tensor leaves out look up row 0, as stock.
    np.testing.assert_array_equal(layer(good), table[[[4, 0, 0], [0, 0, 7]]])


def test_ragged_ids_are_checked_at_every_ragged_rank(layer):
    table = layer.embeddings.numpy()
    for ids in (
        tf.ragged.constant([[1, 2], [3]]),
        tf.ragged.constant([[[1], [2, 3]], [[4, 5, 6]]]),  # ragged_rank 2
    ):
        out = layer(ids)
        np.testing.assert_array_equal(out.flat_values, table[ids.flat_values.numpy()])
        bad = ids.with_flat_values(tf.concat([ids.flat_values[:-1], [-4]], 0))
        for call in (layer, tf.function(layer)):
            with pytest.raises(tf.errors.InvalidArgumentError, match=outside(-4)):
                call(bad)


# XLA (jit_compile=True): no error can be raised; bad ids get NaN rows.


def test_xla_gather_alone_would_clamp_bad_ids_to_real_rows():
    table = tf.constant(np.arange(10, dtype="float32")[:, None])
    gather = tf.function(lambda ids: tf.gather(table, ids), jit_compile=True)
    np.testing.assert_array_equal(gather(tf.constant([12, -3, 4]))[:, 0], [9, 0, 4])


def test_xla_turns_rows_of_bad_ids_into_nan(layer):
    lookup = tf.function(layer, jit_compile=True)
    table = layer.embeddings.numpy()
    out = lookup(tf.constant([[1, 12, -3, 9]])).numpy()
    np.testing.assert_array_equal(out[0, [0, 3]], table[[1, 9]])
    assert np.isnan(out[0, [1, 2]]).all()
    out = lookup(tf.constant([[1.5, 2.0]])).numpy()
    assert np.isnan(out[0, 0]).all()
    np.testing.assert_array_equal(out[0, 1], table[2])
    ragged = lookup(tf.ragged.constant([[1, 10], [2]]))
    assert np.isnan(ragged.flat_values[1]).all()
    np.testing.assert_array_equal(ragged.flat_values.numpy()[[0, 2]], table[[1, 2]])
    sparse = lookup(tf.SparseTensor([[0, 0], [1, 2]], [4, 13], dense_shape=[2, 3])).numpy()
    assert np.isnan(sparse[1, 2]).all()
    np.testing.assert_array_equal(sparse[0], table[[4, 0, 0]])  # Missing entries: row 0.


def test_xla_model_shows_bad_ids_as_nan_outputs_and_loss():
    model = _classifier(jit_compile=True)
    assert model.jit_compile
    out = model.predict(np.array([[1, 2], [3, 11]]), verbose=0)
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()
    history = model.fit(np.array([[1, -1]]), np.zeros((1, 1)), verbose=0)
    assert np.isnan(history.history["loss"][0])
    # Good ids still compile and train.
    model = _classifier(jit_compile=True)
    history = model.fit(np.array([[1, 2]]), np.zeros((1, 1)), verbose=0)
    assert np.isfinite(history.history["loss"][0])
