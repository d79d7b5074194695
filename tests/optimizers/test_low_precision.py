"""The row-sparse optimizers on float16 and bfloat16 tables (a layer with
`dtype="float16"`), and under the mixed policies (float32 tables, 16-bit
compute): no NaN from a zero gradient, and each step is the rule's, computed
in float32 from the stored values and rounded once."""

import keras
import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

import keras_embed
from keras_embed.optimizers import SGD, Adagrad, Ftrl, LazyAdam, RowWiseAdagrad

V, D = 6, 3
LR = 0.1


def _row_wise_adagrad_rule(state, gradient):
    """RowWiseAdagrad's rule in NumPy float32 (Keras has none to compare with)."""
    accumulated = state["accumulator"] + np.mean(gradient ** 2, axis=1)
    step = LR * gradient / (np.sqrt(accumulated) + np.float32(1e-8))[:, None]
    return {"table": state["table"] - step, "accumulator": accumulated}


# Ours, and the stock Keras optimizer whose float32 rule ours follows.
PAIRS = {
    "LazyAdam": (lambda: LazyAdam(LR), lambda: keras.optimizers.Adam(LR)),
    "Adagrad": (lambda: Adagrad(LR, initial_accumulator_value=0.0),
                lambda: keras.optimizers.Adagrad(LR, initial_accumulator_value=0.0)),
    "RowWiseAdagrad": (lambda: RowWiseAdagrad(LR), None),
    "Ftrl": (lambda: Ftrl(LR), lambda: keras.optimizers.Ftrl(LR)),
    "SGD": (lambda: SGD(LR), lambda: keras.optimizers.SGD(LR)),
    "SGD+momentum": (lambda: SGD(LR, momentum=0.9), lambda: keras.optimizers.SGD(LR, momentum=0.9)),
}
# A 16-bit ulp relative (the float32 rule's result rounded once; a float32
# rounding elsewhere can flip that rounding), and the smallest 16-bit
# subnormal for values near 0.
TOLERANCES = {"float16": (2.0 ** -10, 2.0 ** -24), "bfloat16": (2.0 ** -7, 2.0 ** -133)}
NUMPY_DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


def _gradients(rng, dtype):
    """Two steps' gradients, in the table's dtype: rows of about 1, rows of
    about 1e-3 (whose squares are subnormal or 0 in float16) and zero rows;
    the second step gives zeros to rows the first moved."""
    first = rng.normal(size=(V, D)).astype("float32")
    first[2:4] *= 1e-3
    first[4:] = 0.0
    second = rng.normal(size=(V, D)).astype("float32")
    second[[0, 2, 4]] = 0.0
    return [np.asarray(g, NUMPY_DTYPES[dtype]) for g in (first, second)]


def _slots(optimizer):
    """{slot name: variable} of a one-table optimizer ("accumulator", ...)."""
    return {v.name.rsplit("_", 1)[-1] if not v.name.startswith("embeddings_")
            else v.name[len("embeddings_"):]: v
            for v in optimizer.variables[2:]}


def _reference_step(name, table, slots, iterations, gradient):
    """The rule's step in float32 from the 16-bit state (upcast exactly)."""
    state = {"table": np.asarray(table, "float32"),
             **{k: np.asarray(v, "float32") for k, v in slots.items()}}
    gradient = np.asarray(gradient, "float32")
    if PAIRS[name][1] is None:
        return _row_wise_adagrad_rule(state, gradient)
    variable = keras.Variable(state["table"], name="embeddings")
    stock = PAIRS[name][1]()
    stock.build([variable])
    stock.iterations.assign(iterations)
    for key, slot in _slots(stock).items():
        slot.assign(state[key])
    stock.apply_gradients([(tf.constant(gradient), variable)])
    return {"table": variable.numpy(), **{k: v.numpy() for k, v in _slots(stock).items()}}


@pytest.mark.parametrize("kind", ["sparse", "dense"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", list(PAIRS))
def test_a_16_bit_table_steps_by_the_rule_without_nan(rng, name, dtype, kind):
    layer = keras_embed.Embedding(V, D, dtype=dtype, name="table")
    layer.build()
    layer.embeddings.assign(rng.normal(size=(V, D)).astype("float32"))
    optimizer = PAIRS[name][0]()
    optimizer.build([layer.embeddings])
    rtol, atol = TOLERANCES[dtype]
    for step, gradient in enumerate(_gradients(rng, dtype)):
        table = layer.embeddings.numpy()
        slots = {k: v.numpy() for k, v in _slots(optimizer).items()}
        expected = _reference_step(name, table, slots, step, gradient)
        if kind == "sparse":  # Every row listed, the zero ones too.
            given = tf.IndexedSlices(tf.constant(gradient), tf.range(V), tf.constant([V, D]))
        else:
            given = tf.constant(gradient)
        optimizer.apply_gradients([(given, layer.embeddings)])
        assert layer.embeddings.dtype == dtype
        got = {"table": layer.embeddings.numpy(),
               **{k: v.numpy() for k, v in _slots(optimizer).items()}}
        assert set(got) == set(expected)
        for key, value in got.items():
            assert value.dtype == NUMPY_DTYPES[dtype], key
            assert not np.any(np.isnan(value.astype("float32"))), (key, step, value)
            np.testing.assert_allclose(
                value.astype("float32"),
                expected[key].astype(NUMPY_DTYPES[dtype]).astype("float32"),
                rtol=rtol, atol=atol, err_msg=f"{key} after step {step + 1}")


@pytest.mark.parametrize("policy_name", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", list(PAIRS))
def test_mixed_policy_fit_with_zero_gradients_stays_finite(rng, name, policy_name, policy):
    # Padding (mask_zero) gives row 0 a zero gradient each step; rows 4 and
    # 5 are never looked up.
    policy(policy_name)
    layer = keras_embed.Embedding(V, D, mask_zero=True, name="table")
    model = keras.Sequential([keras.Input((4,), dtype="int32"), layer,
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
    model.compile(PAIRS[name][0](), "mse")
    start = layer.embeddings.numpy()
    ids = np.array([[1, 2, 0, 0], [3, 1, 2, 0]])
    model.fit(ids, np.array([[1.0], [-1.0]]), epochs=3, verbose=0)
    table = layer.embeddings.numpy()
    assert table.dtype == np.float32
    assert np.all(np.isfinite(table))
    np.testing.assert_array_equal(table[[4, 5]], start[[4, 5]])
    if name == "Ftrl":  # A looked-up row with linear 0 is FTRL's closed form, 0.
        np.testing.assert_array_equal(table[0], np.zeros(D, "float32"))
    else:
        np.testing.assert_array_equal(table[0], start[0])
    assert np.all(np.any(table[1:4] != start[1:4], axis=1))
